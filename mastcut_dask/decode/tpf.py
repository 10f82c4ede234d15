"""TESSCut target pixel files (regular and moving-target) → :class:`xarray.Dataset`.

All knowledge of the TPF layout is here (docs/formats.md): the PIXELS table, the
APERTURE image and its WCS, the version-dependent per-column WCS, and the quirks of real
service files. Quirks are decoded, never fatal; each one found is named in
``attrs["quirks"]``:

``sector_empty``          SECTOR is ``''``/undefined; taken from FFI_FILE or the file name
``sector_unknown``        ... and nowhere else to be found (``attrs["sector"] = -1``)
``aperture_float``        APERTURE is a float image (2018 service); decoded as ``!= 0``
``aperture_missing``      no APERTURE HDU (moving targets without FFI WCS); all pixels True
``aperture_not_cutout``   APERTURE has another shape (moving targets: full-FFI); all pixels True
``bjdrefi_missing``       no BJDREFI; TIME taken as BTJD because TUNIT1 says so (or by default)
``column_wcs_malformed``  per-column WCS keywords present but unusable → ``wcs_valid=False``
``aperture_wcs_invalid``  APERTURE WCS unusable or far from RA_OBJ/DEC_OBJ → ``wcs_valid=False``
``ffi_file_truncated``    FFI_FILE values cut at the column width (38 characters)
``undefined_keywords``    header keywords with undefined values (kept as such in the header text)
``unparsable_card``       a header card astropy cannot parse; read as absent, kept raw in the text

Columns are big-endian in every FITS file; all arrays are returned in native byte order.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

import numpy as np
import xarray as xr
from astropy.io import fits

from ..exceptions import DecodeError, InvalidQueryError
from .headers import hdulist_header_texts, header_float, header_int, header_str, header_value, quiet_wcs
from .opened import FileLocation, OpenedSource

__all__ = ["build_tpf_dataset", "find_pixels_hdu", "PixelColumnReader"]

log = logging.getLogger(__name__)

FLUX_UNITS = "electron / s"
BTJD_OFFSET = 2457000
# TPF column → dataset variable, for the pixel columns we keep (RAW_CNTS is all -1 in TESSCut)
PIXEL_VARS = {"FLUX": "flux", "FLUX_ERR": "flux_err", "FLUX_BKG": "flux_bkg", "FLUX_BKG_ERR": "flux_bkg_err"}
MOVING_COLUMNS = {"TGT_X": ("tgt_x", "pixel"), "TGT_Y": ("tgt_y", "pixel"),
                  "TGT_RA": ("tgt_ra", "deg"), "TGT_DEC": ("tgt_dec", "deg")}
_SECTOR_IN_NAME = re.compile(r"-s(\d{4})-(\d)-(\d)")
_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCMPQ])")
# binary-table codes we read straight from the bytes (anything else goes through astropy)
_FITS_DTYPES = {"B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}
# WCS keywords handed to WCSLIB (the rest of a TPF header only slows its parser down)
_WCS_KEY = re.compile(r"^(WCSAXES|CRPIX\d|CRVAL\d|CTYPE\d|CUNIT\d|CDELT\d|PC\d_\d|CD\d_\d|CROTA\d|LONPOLE|"
                      r"LATPOLE|RADESYS|EQUINOX|[AB]P?_ORDER|[AB]P?_\d+_\d+)[A-Z]?$")
# |CCD column/row| beyond this is not a TESS pixel (CCDs are ~2k pixels; cutouts may hang off)
_CCD_PIXEL_LIMIT = 10**6
# a target more than this many pixels outside the cutout means the WCS does not describe it
_WCS_MARGIN_PX = 1.0


def table_columns(header: fits.Header) -> list[tuple[str, int, str]]:
    """``(TTYPE, repeat, TFORM code)`` of every column of a binary-table header.

    Read from the header cards alone: astropy's column objects cost milliseconds per file.
    """
    out = []
    for n in range(1, (header_int(header, "TFIELDS") or 0) + 1):
        name = header_value(header, f"TTYPE{n}")
        match = _TFORM.match(str(header_value(header, f"TFORM{n}") or ""))
        if not isinstance(name, str) or match is None:
            return []
        out.append((name.strip(), int(match.group(1) or 1), match.group(2)))
    return out


def find_pixels_hdu(hdul: fits.HDUList) -> fits.BinTableHDU | None:
    """The PIXELS binary table of a TPF (FLUX and QUALITY columns), or ``None``."""
    return _find_pixels(hdul)[0]


def _find_pixels(hdul: fits.HDUList) -> tuple[fits.BinTableHDU | None, list[tuple[str, int, str]]]:
    """The PIXELS table and its `table_columns` (read once: each card costs astropy a parse)."""
    for hdu in hdul:
        if isinstance(hdu, fits.BinTableHDU):
            columns = table_columns(hdu.header)
            if {"FLUX", "QUALITY"} <= {name.upper() for name, _, _ in columns}:
                return hdu, columns
    return None, []


def _describe(hdul: fits.HDUList) -> str:
    return ", ".join(f"{i}:{hdu.name or '?'}({type(hdu).__name__})" for i, hdu in enumerate(hdul))


def _native(array: np.ndarray, dtype=None) -> np.ndarray:
    """A native-byte-order copy (FITS is big-endian; zarr and numba want native)."""
    array = np.asarray(array)
    return np.array(array, dtype=(dtype or array.dtype).newbyteorder("="), copy=True)


def _cell_shape(header: fits.Header, index: int, repeat: int, aperture_shape) -> tuple[int, int]:
    """(ny, nx) of pixel column ``index`` (1-based), from TDIM; never from names or requests."""
    tdim = header.get(f"TDIM{index}")
    if isinstance(tdim, str):
        dims = [int(v) for v in re.findall(r"\d+", tdim)]
        if len(dims) == 2 and dims[0] * dims[1] == repeat:
            return dims[1], dims[0]  # FITS (nx, ny) → numpy (ny, nx)
    if aperture_shape is not None and int(np.prod(aperture_shape)) == repeat:
        return tuple(int(v) for v in aperture_shape)
    return 1, int(repeat)


class PixelColumnReader:
    """Reads one pixel column of a FITS binary table, row range by row range.

    Presents ``shape``, ``dtype``, ``ndim`` and ``__getitem__`` so
    ``dask.array.from_array`` can wrap it; it pickles as a few numbers and a
    :class:`~mastcut_dask.decode.opened.FileLocation`, and opens the file only inside
    ``__getitem__`` (so nothing is read until a chunk is computed).
    """

    def __init__(self, location: FileLocation, data_offset: int, row_dtype: np.dtype, nrows: int,
                 field: str):
        self.location = location
        self.data_offset = int(data_offset)
        self.row_dtype = row_dtype
        self.nrows = int(nrows)
        self.field = field
        sub = row_dtype.fields[field][0]
        self.cell_shape = sub.shape
        self.dtype = sub.base.newbyteorder("=")
        self.shape = (self.nrows, *self.cell_shape)
        self.ndim = len(self.shape)

    def read_table(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the whole table (every column, file byte order)."""
        start, stop = max(0, start), min(self.nrows, stop)
        if stop <= start:
            return np.empty(0, self.row_dtype)
        size = self.row_dtype.itemsize
        if self.location.is_local:
            return np.memmap(self.location.local_path, dtype=self.row_dtype, mode="r",
                             offset=self.data_offset + start * size, shape=(stop - start,))
        with self.location.open() as fh:
            fh.seek(self.data_offset + start * size)
            raw = fh.read((stop - start) * size)
        if len(raw) != (stop - start) * size:
            raise DecodeError(f"{self.location.url}: file ends inside the PIXELS table")
        return np.frombuffer(raw, dtype=self.row_dtype)

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the column, native byte order."""
        return np.array(self.read_table(start, stop)[self.field], dtype=self.dtype)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        rows = key[0] if key else slice(None)
        if isinstance(rows, slice) and rows.step in (None, 1):
            start, stop, _ = rows.indices(self.nrows)
            block = self.read_rows(start, stop)
            return block[(slice(None), *key[1:])]
        # dask only asks for contiguous slices; anything else goes through a full read
        return self.read_rows(0, self.nrows)[key]


def _table_layout(header: fits.Header, columns, cells: dict) -> np.dtype | None:
    """The on-disk (big-endian) row dtype, when the table is plain enough to read directly.

    ``cells`` maps 1-based column numbers to their (ny, nx) cell shape.
    """
    if not columns or any(key.startswith(("TSCAL", "TZERO")) for key in header):
        return None
    fields = []
    for n, (name, repeat, code) in enumerate(columns, start=1):
        if code == "A":
            fields.append((name, f"S{repeat}"))
        elif code in _FITS_DTYPES:
            if repeat == 1:
                fields.append((name, _FITS_DTYPES[code]))
            else:
                fields.append((name, _FITS_DTYPES[code], cells.get(n, (repeat,))))
        else:  # logical, bit, complex, variable-length: astropy knows best
            return None
    try:
        dtype = np.dtype(fields)
    except (TypeError, ValueError):  # e.g. duplicate column names
        return None
    return dtype if dtype.itemsize == header.get("NAXIS1") else None


def _time_chunk(chunks, row_bytes: int, nrows: int) -> int:
    if isinstance(chunks, dict):
        chunks = chunks.get("time", "auto")
    if isinstance(chunks, (tuple, list)):
        chunks = chunks[0]
    if chunks == -1:
        return max(1, nrows)
    if chunks in ("auto", None):
        # dask's own target size (128 MiB by default): most TPFs are then one chunk, and
        # reading a whole variable needs no concatenation copy
        import dask  # only a chunked decode needs dask (heavy to import)
        from dask.utils import parse_bytes

        target = parse_bytes(dask.config.get("array.chunk-size", "128MiB"))
        return max(1, min(nrows, target // max(1, row_bytes)))
    try:
        chunk = int(chunks)
    except (TypeError, ValueError):
        chunk = 0
    if chunk <= 0:
        raise InvalidQueryError(f"chunks must be a positive number of cadences, 'auto' or "
                                f"{{'time': n}}, got {chunks!r}")
    return min(chunk, max(1, nrows))


def _scalar_columns(opened: OpenedSource, pixels: fits.BinTableHDU, names: list[str], lazy_dtype,
                    offset: int | None, table) -> dict:
    """The small per-cadence columns, native order, read without keeping pixel data."""
    if table is None and lazy_dtype is not None and opened.location is not None:
        nrows = int(pixels.header["NAXIS2"])
        out = {name: [] for name in names}
        step = max(1, (16 * 2**20) // lazy_dtype.itemsize)  # bounded memory: 16 MB of rows at a time
        reader = PixelColumnReader(opened.location, offset, lazy_dtype, nrows, names[0])
        for start in range(0, max(nrows, 1), step):
            # each block is fetched once for all the columns (rows interleave them with the pixels)
            block = reader.read_table(start, start + step)
            for name in names:
                out[name].append(_native(block[name]))
        return {name: (np.concatenate(parts) if parts else np.empty(0)) for name, parts in out.items()}
    data = pixels.data if table is None else table
    return {name: _native(data[name]) for name in names}


def _all_zero(table: np.ndarray, field: str) -> bool:
    """Whether every byte of a float column of a structured numpy table is zero.

    Scans the raw bytes as unsigned words (no byte swap, no copy); -0.0 counts as non-zero,
    so the caller then decodes the column normally.
    """
    dtype, offset = table.dtype.fields[field][:2]
    if table.size == 0 or dtype.itemsize % 4 or not table.flags.c_contiguous:
        return False
    words = np.ndarray(shape=(table.size, dtype.itemsize // 4), dtype=np.uint32, buffer=table,
                       offset=offset, strides=(table.dtype.itemsize, 4))
    return not words[0].any() and not words.any()  # the first row settles real data at once


def _direct_table(opened: OpenedSource, layout: np.dtype | None, offset: int | None, nrows: int):
    """The PIXELS rows as a structured numpy view of the file (memmap) or of its bytes, or None.

    Much cheaper than astropy's ``FITS_rec`` (no column objects, no scaling checks); only
    used when :func:`_table_layout` found a plain table.
    """
    if layout is None or offset is None:
        return None
    if opened.fits_bytes is not None:
        if offset + nrows * layout.itemsize > len(opened.fits_bytes):
            raise DecodeError(f"{opened.name or 'input'}: file ends inside the PIXELS table")
        return np.frombuffer(opened.fits_bytes, dtype=layout, count=nrows, offset=offset)
    if opened.location is not None and opened.location.is_local:
        if offset + nrows * layout.itemsize > os.path.getsize(opened.location.local_path):
            raise DecodeError(f"{opened.name or 'input'}: file ends inside the PIXELS table")
        if nrows == 0:
            return np.empty(0, dtype=layout)
        return np.memmap(opened.location.local_path, dtype=layout, mode="r", offset=offset, shape=(nrows,))
    return None


def build_tpf_dataset(opened: OpenedSource, *, chunks=None) -> xr.Dataset:
    """Build the dataset of one TPF from an opened source (see :func:`~mastcut_dask.decode.tpf_to_xarray`)."""
    hdul = opened.hdul
    pixels, pix_columns = _find_pixels(hdul)
    if pixels is None:
        raise DecodeError(f"{opened.name or 'input'} is not a target pixel file: no binary table with "
                          f"FLUX and QUALITY columns (HDUs: {_describe(hdul)})")
    colnames = {name.upper(): name for name, _, _ in pix_columns}
    if "TIME" not in colnames:
        raise DecodeError(f"{opened.name or 'input'} is not a target pixel file: the PIXELS table "
                          f"has no TIME column (columns: {', '.join(colnames.values())})")
    primary = hdul[0].header
    pix_hdr = pixels.header
    quirks: list[str] = []
    moving = all(name in colnames for name in MOVING_COLUMNS)

    aperture_hdu = _find_aperture(hdul)
    aperture_shape = aperture_hdu.shape if aperture_hdu is not None and aperture_hdu.header.get("NAXIS") == 2 else None
    index_of = {name.upper(): n for n, (name, _, _) in enumerate(pix_columns, start=1)}
    repeat_of = {name.upper(): repeat for name, repeat, _ in pix_columns}
    ny, nx = _cell_shape(pix_hdr, index_of["FLUX"], repeat_of["FLUX"], aperture_shape)
    cells = {index_of[c]: (ny, nx) for c in ("RAW_CNTS", *PIXEL_VARS) if c in index_of and repeat_of[c] == ny * nx}
    nrows = int(pix_hdr.get("NAXIS2", 0))

    # ---- per-cadence columns -------------------------------------------------------------
    layout = _table_layout(pix_hdr, pix_columns, cells)
    offset = None
    if layout is not None and (opened.location is not None or opened.fits_bytes is not None):
        try:
            offset = int(pixels.fileinfo()["datLoc"])
        except Exception as err:  # a malformed header can stop astropy here
            log.info("no byte offset for PIXELS (%s); reading through astropy", err)
    lazy_dtype = layout if chunks is not None and opened.location is not None and offset is not None else None
    # eager decodes (and the small columns of remote lazy ones) read a numpy view of the table
    table = None if lazy_dtype is not None and not opened.location.is_local else \
        _direct_table(opened, layout, offset, nrows)
    wanted = [colnames[n] for n in ("TIME", "TIMECORR", "CADENCENO", "QUALITY", "FFI_FILE") if n in colnames]
    wanted += [colnames[n] for n in MOVING_COLUMNS if moving]
    cols = _scalar_columns(opened, pixels, wanted, lazy_dtype, offset, table)
    get = lambda name: cols.get(colnames.get(name, ""))  # noqa: E731 - tiny local accessor

    time = np.asarray(get("TIME"), dtype=np.float64)
    time_attrs, time_offset = _time_system(pix_hdr, primary, quirks, pixels)
    if time_offset:
        time = time + time_offset
    coords: dict = {"time": ("time", time, time_attrs)}
    timecorr = get("TIMECORR")
    coords["timecorr"] = ("time", np.zeros(nrows, np.float32) if timecorr is None else timecorr.astype(np.float32),
                          {"units": "d", "long_name": "barycentric correction added to TIME"})
    cadenceno = get("CADENCENO")
    coords["cadenceno"] = ("time", np.zeros(nrows, np.int32) if cadenceno is None else cadenceno.astype(np.int32),
                           {"long_name": "CADENCENO as in the file (TESSCut: 0, or a row counter)"})
    quality = get("QUALITY")
    coords["quality"] = ("time", quality.astype(np.int32),
                         {"long_name": "TESS quality flags (bit mask)", "flag_masks_default": 17087})
    ffi = get("FFI_FILE")
    if ffi is None:
        ffi_names = np.full(nrows, "", dtype=np.dtypes.StringDType())
    else:
        ffi = np.strings.strip(np.asarray(ffi))
        try:
            # bytes → StringDType directly is ~20x faster than via str or a Python loop
            ffi_names = ffi.astype(np.dtypes.StringDType())
        except UnicodeDecodeError:  # hostile non-ASCII bytes: decode with replacement
            ffi_names = np.strings.decode(ffi, "ascii", "replace").astype(np.dtypes.StringDType())
    coords["ffi_file"] = ("time", ffi_names, {"long_name": "source FFI file name"})
    suffix = b".fits" if ffi is not None and ffi.dtype.kind == "S" else ".fits"
    if ffi is not None and nrows and not np.strings.endswith(ffi, suffix).any():
        width = repeat_of["FFI_FILE"]
        if width and int(np.strings.str_len(ffi).max()) >= int(width):
            quirks.append("ffi_file_truncated")
    if moving:
        for column, (name, unit) in MOVING_COLUMNS.items():
            coords[name] = ("time", np.asarray(get(column), dtype=np.float64), {"units": unit})

    # ---- pixel arrays ----------------------------------------------------------------------
    data_vars = {}
    present = [(col, var) for col, var in PIXEL_VARS.items() if col in colnames]
    if lazy_dtype is not None:
        import dask.array as da  # only a chunked decode needs dask
        from dask.base import tokenize

        for col, var in present:
            reader = PixelColumnReader(opened.location, offset, lazy_dtype, nrows, colnames[col])
            tchunk = _time_chunk(chunks, reader.dtype.itemsize * ny * nx, nrows)
            name = f"mastcut-{var}-" + tokenize(opened.location, offset, nrows, col)
            arr = da.from_array(reader, chunks=(tchunk, *reader.cell_shape), name=name,
                                asarray=False, fancy=False)
            data_vars[var] = (("time", "y", "x"), arr.reshape(nrows, ny, nx).astype(np.float32, copy=False),
                              {"units": FLUX_UNITS})
    else:
        direct = table is not None
        table = pixels.data if table is None else table
        for col, var in present:
            if direct and _all_zero(table, colnames[col]):
                # TESSCut's FLUX_BKG(_ERR) placeholders: a read-only scan instead of copy + swap,
                # and a calloc'd array that costs nothing until it is touched
                arr = np.zeros((nrows, ny, nx), np.float32)
            else:
                arr = _native(table[colnames[col]]).astype(np.float32, copy=False).reshape(nrows, ny, nx)
            if chunks is not None:
                import dask.array as da  # in-memory source: wrap what is already read

                arr = da.from_array(arr, chunks=(_time_chunk(chunks, 4 * ny * nx, nrows), ny, nx))
            data_vars[var] = (("time", "y", "x"), arr, {"units": FLUX_UNITS})
    if "flux_err" not in data_vars:
        raise DecodeError(f"{opened.name or 'input'}: the PIXELS table has no FLUX_ERR column")

    # ---- aperture, WCS, CCD position -------------------------------------------------------
    aperture = _aperture(aperture_hdu, (ny, nx), quirks)
    data_vars["aperture"] = (("y", "x"), aperture,
                             {"long_name": "pixel collected (on the detector)", "source": "APERTURE HDU"})
    attrs = _identity_attrs(primary, opened, ffi_names, quirks)
    attrs["moving"] = bool(moving)
    column_wcs = _column_wcs_state(pix_hdr, index_of)
    if column_wcs == "malformed":
        quirks.append("column_wcs_malformed")
    attrs["column_wcs"] = column_wcs

    header_texts = hdulist_header_texts(hdul, opened)
    wcs_ok = False
    if not moving and aperture_hdu is not None and aperture_shape == (ny, nx):
        # WCSLIB parses the card text directly: much faster than astropy re-verifying each card
        text = header_texts[hdul.index_of(aperture_hdu)]
        if text:
            text = "".join(card for card in text.split("\n") if _WCS_KEY.match(card[:8].rstrip()))
        wcs_ok, sky = _sky_coords(text or aperture_hdu.header, (ny, nx), attrs)
        if wcs_ok and column_wcs != "malformed":
            coords["ra"] = (("y", "x"), sky[0], {"units": "deg", "long_name": "right ascension (ICRS)"})
            coords["dec"] = (("y", "x"), sky[1], {"units": "deg", "long_name": "declination (ICRS)"})
        elif not wcs_ok:
            quirks.append("aperture_wcs_invalid")
    attrs["wcs_valid"] = bool(wcs_ok and column_wcs != "malformed")
    if not attrs["wcs_valid"]:
        for key in ("target_x", "target_y"):
            attrs.pop(key, None)

    ccd_origin = _ccd_origin(pix_hdr, index_of)
    if ccd_origin is not None:
        col0, row0 = ccd_origin
        jj, ii = np.meshgrid(np.arange(nx, dtype=np.int32), np.arange(ny, dtype=np.int32))
        coords["row"] = (("y", "x"), row0 + ii, {"long_name": "CCD row (1-based, from 2CRVnP)"})
        coords["column"] = (("y", "x"), col0 + jj, {"long_name": "CCD column (1-based, from 1CRVnP)"})

    attrs["fits_headers"] = header_texts
    if _has_undefined(attrs["fits_headers"], quirks):
        quirks.append("undefined_keywords")
    attrs["quirks"] = sorted(set(quirks))
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    return ds


def _find_aperture(hdul: fits.HDUList):
    for hdu in hdul[1:]:
        if isinstance(hdu, fits.ImageHDU) and hdu.name.upper() == "APERTURE":
            return hdu
    return None


def _time_system(pix_hdr: fits.Header, primary: fits.Header, quirks: list[str], pixels) -> tuple[dict, float]:
    """Time attrs and the offset (days) that brings TIME to BTJD."""
    bjdrefi = header_int(pix_hdr, "BJDREFI")
    if bjdrefi is None:
        bjdrefi = header_int(primary, "BJDREFI")
    bjdreff = header_float(pix_hdr, "BJDREFF") or header_float(primary, "BJDREFF") or 0.0
    offset = 0.0
    if bjdrefi is None:
        # 2018 service files: no BJDREFI but TUNIT1 = 'BJD - 2457000, days'
        quirks.append("bjdrefi_missing")
    else:
        offset = (bjdrefi - BTJD_OFFSET) + bjdreff
    scale = (header_str(pix_hdr, "TIMESYS") or header_str(primary, "TIMESYS") or "TDB").lower()
    attrs = {"units": "d", "reference": "BJD - 2457000", "scale": scale,
             "long_name": "barycentric TESS Julian date (BTJD), mid-exposure"}
    return attrs, float(offset)


def _aperture(hdu, shape: tuple[int, int], quirks: list[str]) -> np.ndarray:
    if hdu is None:
        quirks.append("aperture_missing")
        return np.ones(shape, dtype=bool)
    if tuple(hdu.shape) != tuple(shape):
        # moving targets: a full-FFI map of every pixel the path used; not read (17 MB)
        quirks.append("aperture_not_cutout")
        return np.ones(shape, dtype=bool)
    data = hdu.data
    if data.dtype.kind == "f":
        quirks.append("aperture_float")
        return np.nan_to_num(np.asarray(data, dtype=np.float64)) != 0
    return np.asarray(data) != 0


def _identity_attrs(primary: fits.Header, opened: OpenedSource, ffi_names: list[str], quirks: list[str]) -> dict:
    # mission (SPOC) TPFs decode too; say so rather than call them TESSCut products
    origin = header_str(primary, "ORIGIN").upper()
    attrs: dict = {"service": "TESSCut" if "MAST" in origin or not origin else "SPOC",
                   "source_file": opened.name}
    from_names = None
    for text in [*ffi_names[:1], opened.name]:
        match = _SECTOR_IN_NAME.search(text or "")
        if match:
            from_names = tuple(int(g) for g in match.groups())
            break
    sector = header_int(primary, "SECTOR")
    if sector is None:
        quirks.append("sector_empty")
        if from_names is None:
            quirks.append("sector_unknown")
        sector = from_names[0] if from_names else -1
    attrs["sector"] = sector
    for i, key in ((1, "CAMERA"), (2, "CCD")):
        value = header_int(primary, key)
        attrs[key.lower()] = value if value is not None else (from_names[i] if from_names else -1)
    for key in ("RA_OBJ", "DEC_OBJ"):
        value = header_float(primary, key)
        if value is not None:
            attrs[key.lower()] = value
    attrs["object"] = header_str(primary, "OBJECT")
    attrs["procver"] = header_str(primary, "PROCVER")
    attrs["creator"] = header_str(primary, "CREATOR")
    attrs["origin_institution"] = header_str(primary, "ORIGIN")
    return attrs


def _flux_column_index(index_of: dict[str, int]) -> list[int]:
    """1-based numbers of the FLUX and RAW_CNTS columns (``index_of``: upper-case name → number)."""
    return [index_of[c] for c in ("FLUX", "RAW_CNTS") if c in index_of]


def _column_wcs_state(pix_hdr: fits.Header, index_of: dict[str, int]) -> str:
    """``"valid"``, ``"malformed"`` or ``"absent"`` for the per-column celestial WCS."""
    for n in _flux_column_index(index_of):
        keys = [f"1CTYP{n}", f"2CTYP{n}", f"1CRVL{n}", f"1CRVAL{n}", f"11PC{n}", f"WCAX{n}"]
        if not any(k in pix_hdr for k in keys):
            continue
        ctype1, ctype2 = pix_hdr.get(f"1CTYP{n}"), pix_hdr.get(f"2CTYP{n}")
        if not (isinstance(ctype1, str) and ctype1.startswith("RA") and isinstance(ctype2, str)
                and ctype2.startswith("DEC")):
            return "malformed"
        if not all(isinstance(pix_hdr.get(k), (int, float)) for k in
                   (f"1CRVL{n}", f"2CRVL{n}", f"1CRPX{n}", f"2CRPX{n}")):
            return "malformed"
        pc = [pix_hdr.get(f"{a}{b}PC{n}", 1.0 if a == b else 0.0) for a in "12" for b in "12"]
        cdelt = [pix_hdr.get(f"1CDLT{n}", 1.0), pix_hdr.get(f"2CDLT{n}", 1.0)]
        try:
            det = np.linalg.det(np.diag(np.asarray(cdelt, float)) @ np.asarray(pc, float).reshape(2, 2))
        except (TypeError, ValueError):
            return "malformed"
        return "valid" if np.isfinite(det) and det != 0 else "malformed"
    return "absent"


def _ccd_origin(pix_hdr: fits.Header, index_of: dict[str, int]) -> tuple[int, int] | None:
    """(column, row) of cutout pixel [0, 0] on the CCD from 1CRVnP/2CRVnP, when present."""
    for n in [5, 4, *_flux_column_index(index_of)]:
        col, row = header_int(pix_hdr, f"1CRV{n}P"), header_int(pix_hdr, f"2CRV{n}P")
        if col is not None and row is not None:
            crp_c, crp_r = header_int(pix_hdr, f"1CRP{n}P") or 1, header_int(pix_hdr, f"2CRP{n}P") or 1
            col, row = col - (crp_c - 1), row - (crp_r - 1)
            # "present and sane": a position no CCD has would overflow the
            # int32 coords; the CCD position is never required, so drop it instead
            if max(abs(col), abs(row)) > _CCD_PIXEL_LIMIT:
                log.info("CCD position (%d, %d) from 1CRV%dP/2CRV%dP is not sane; not used", col, row, n, n)
                return None
            return col, row
    return None


def _sky_coords(header: fits.Header | str, shape: tuple[int, int], attrs: dict):
    """(valid, (ra, dec)) from the APERTURE WCS; valid only if it places RA_OBJ/DEC_OBJ on the cutout."""
    wcs = quiet_wcs(header)
    if wcs is None or not wcs.has_celestial or wcs.naxis != 2:
        return False, None
    ny, nx = shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yy, xx = np.mgrid[:ny, :nx]
            ra, dec = wcs.all_pix2world(xx.astype(float), yy.astype(float), 0)
            if "ra_obj" in attrs and "dec_obj" in attrs:
                tx, ty = wcs.all_world2pix(attrs["ra_obj"], attrs["dec_obj"], 0)
                tx, ty = float(tx), float(ty)
                if not (np.isfinite(tx) and np.isfinite(ty)
                        and -0.5 - _WCS_MARGIN_PX <= tx <= nx - 0.5 + _WCS_MARGIN_PX
                        and -0.5 - _WCS_MARGIN_PX <= ty <= ny - 0.5 + _WCS_MARGIN_PX):
                    log.info("APERTURE WCS puts the target at (%.1f, %.1f), off a %dx%d cutout", tx, ty, nx, ny)
                    return False, None
                attrs["target_x"], attrs["target_y"] = tx, ty
        except Exception as err:  # WCSLIB errors on singular or exotic headers
            log.info("APERTURE WCS unusable: %s", err)
            return False, None
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        return False, None
    return True, (np.asarray(ra, np.float64), np.asarray(dec, np.float64))


def _has_undefined(texts: list[str], quirks: list[str]) -> bool:
    """Whether any card has an undefined value (``KEY     =`` and nothing before the comment).

    Works on the card text: parsing every card value through astropy costs more than the
    whole pixel read of a small TPF.
    """
    found = False
    for text in texts:
        for card in text.split("\n"):
            if card[8:10] != "= " or card.startswith(("COMMENT", "HISTORY", "CONTINUE")):
                continue
            value = card[10:].lstrip()
            if value.startswith("'"):
                if value.count("'") < 2:
                    if "unparsable_card" not in quirks:
                        quirks.append("unparsable_card")
                continue
            if value == "" or value.startswith("/"):
                found = True
    return found
