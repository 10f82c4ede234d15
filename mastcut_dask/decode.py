"""Cutout files → labelled :class:`xarray.Dataset`: the public decoders and the xarray backend.

This module knows where the bytes come from (an open ``HDUList``, bytes, a local path or an
fsspec URL) and which decoder a file needs; the file layouts themselves live in
:mod:`mastcut_dask.decode_tpf` (TESSCut target pixel files) and
:mod:`mastcut_dask.decode_image` (ZCut/HAPCut FITS, JPG/PNG). The shared helpers for header
text and JSON-safe attributes are here so both decoders speak the same dialect.

The returned datasets follow the data model of ``design.md``: named dims, units in attrs,
sky coordinates where the file has a trustworthy WCS, and attrs that survive
``to_zarr``/``open_zarr`` unchanged (plain ``str``/``int``/``float``/``bool`` and lists of
``str`` only; no ``None``, no numpy scalars). Every header of the source file is kept as
FITS card text in ``attrs["fits_headers"]`` so :func:`fits_headers` can rebuild them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from .exceptions import DecodeError, InvalidQueryError, MastcutError

__all__ = [
    "tpf_to_xarray",
    "image_to_xarray",
    "fits_headers",
    "DecodeError",
    "MastcutBackendEntrypoint",
]

log = logging.getLogger(__name__)

#: What ``src`` may be for the decoders.
Source = Any  # fits.HDUList | bytes | str | os.PathLike (annotated loosely: fsspec URLs are str)

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_FITS_MAGIC = b"SIMPLE  ="
_GZIP_MAGIC = b"\x1f\x8b"
#: largest decompressed size accepted for a gzipped FITS file (guards against gzip bombs)
MAX_GUNZIPPED_BYTES = 4 * 2**30


@dataclass(frozen=True)
class FileLocation:
    """Where the bytes of a decoded file can be read again (for lazy, chunked reads).

    Attributes
    ----------
    url : str
        A local path or an fsspec URL.
    storage_options : tuple of (str, object) pairs
        Passed to ``fsspec.open`` (frozen as pairs so the object stays hashable and picklable).
    version : tuple
        What identifies this version of the file (local: size and mtime; remote: size and
        ETag or modification time, where the filesystem says). Part of the lazy arrays' dask
        keys, so a file rewritten under the same name (a refetch) never answers from a
        result computed on the old one.
    """

    url: str
    storage_options: tuple = ()
    version: tuple = ()

    @property
    def is_local(self) -> bool:
        return "://" not in self.url or self.url.startswith("file://")

    @property
    def local_path(self) -> str:
        return self.url[len("file://"):] if self.url.startswith("file://") else self.url

    def open(self):
        """Open the file for binary reading (a plain file for local paths, else fsspec)."""
        if self.is_local:
            return open(self.local_path, "rb")
        import fsspec  # only remote sources need it

        return fsspec.open(self.url, "rb", **dict(self.storage_options)).open()


@dataclass
class OpenedSource:
    """An ``HDUList`` (or raw image bytes) with where it came from."""

    hdul: fits.HDUList | None
    raw: bytes | None  # JPG/PNG bytes (hdul is None then)
    location: FileLocation | None  # None: in memory only
    name: str  # the file name, for attrs["source_file"]
    _closers: tuple = ()
    fits_bytes: bytes | None = None  # the whole FITS file, when it was read into memory

    def close(self) -> None:
        for closer in self._closers:
            closer.close()


def open_source(src: Source, *, lazy: bool = False, storage_options: dict | None = None) -> OpenedSource:
    """Open ``src`` as FITS (or sniff a JPG/PNG) without reading data arrays.

    Parameters
    ----------
    src : HDUList, bytes, str or os.PathLike
        An open ``HDUList``, the file's bytes, a local path or an fsspec URL.
    lazy : bool
        Keep remote files open instead of reading them whole, so headers can be parsed
        without fetching the data (the caller must ``close()``).
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    OpenedSource

    Raises
    ------
    DecodeError
        If ``src`` is none of the accepted kinds, or is not FITS, JPEG or PNG.
    """
    opts = tuple(sorted((storage_options or {}).items()))
    if isinstance(src, fits.HDUList):
        # the caller's HDUList may have been edited in memory: read it through astropy only,
        # never from the file it came from
        filename = src.filename()
        return OpenedSource(src, None, None, os.path.basename(filename) if isinstance(filename, str) else "")
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _open_bytes(bytes(src), None, "")
    if isinstance(src, (str, os.PathLike)):
        text = os.fspath(src)
        loc = FileLocation(text, opts)
        name = os.path.basename(text.rstrip("/").split("?")[0])
        if loc.is_local:
            # absolute, so lazy reads (and the dask keys named after the location) still mean
            # this file after a change of directory or on a worker with another cwd
            path = os.path.abspath(loc.local_path)
            if not os.path.isfile(path):
                raise DecodeError(f"no such file: {path}")
            stat = os.stat(path)
            loc = FileLocation(path, opts, (stat.st_size, stat.st_mtime_ns))
            with open(path, "rb") as fh:
                head = fh.read(16)
            if not head.startswith(_FITS_MAGIC):
                with open(path, "rb") as fh:
                    # gzipped files are decompressed in memory: lazy reads need plain FITS
                    return _open_bytes(fh.read(), None if head.startswith(_GZIP_MAGIC) else loc, name)
            # memmap: column reads touch only the pages they need, nothing is read up front
            hdul = fits.open(path, memmap=True, lazy_load_hdus=True)
            return OpenedSource(hdul, None, loc, name, (hdul,))
        fh = loc.open()
        details = getattr(fh, "details", None) or {}
        loc = dataclasses.replace(loc, version=tuple(
            str(details[k]) for k in ("size", "ETag", "LastModified", "mtime") if k in details))
        head = fh.read(16)
        fh.seek(0)
        if lazy and head.startswith(_FITS_MAGIC):
            hdul = fits.open(fh, lazy_load_hdus=True)
            return OpenedSource(hdul, None, loc, name, (hdul, fh))
        try:
            data = fh.read()
        finally:
            fh.close()
        return _open_bytes(data, loc, name)
    raise DecodeError(f"cannot decode a {type(src).__name__}: pass an HDUList, bytes, a path or an fsspec URL")


def _gunzip(data: bytes, name: str) -> bytes:
    import gzip
    import zlib

    with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
        try:
            out = gz.read(MAX_GUNZIPPED_BYTES + 1)
        except (OSError, EOFError, zlib.error) as err:  # a damaged deflate stream raises zlib.error
            raise DecodeError(f"{name or 'input'}: corrupt gzip data ({err})") from err
    if len(out) > MAX_GUNZIPPED_BYTES:
        raise DecodeError(f"{name or 'input'}: gzip data expands beyond {MAX_GUNZIPPED_BYTES} bytes")
    return out


def _open_bytes(data: bytes, loc: FileLocation | None, name: str) -> OpenedSource:
    if data.startswith(_GZIP_MAGIC):
        data = _gunzip(data, name)
        loc = None  # byte offsets refer to the decompressed stream, not the file
    if data.startswith(_JPEG_MAGIC) or data.startswith(_PNG_MAGIC):
        return OpenedSource(None, data, loc, name)
    if not data.startswith(_FITS_MAGIC):
        raise DecodeError(f"{name or 'input'} is not a FITS, JPEG or PNG file "
                          f"(starts with {data[:16]!r})")
    hdul = fits.open(io.BytesIO(data), lazy_load_hdus=True)
    return OpenedSource(hdul, None, loc, name, (hdul,), fits_bytes=data)


# ---- header text and JSON-safe values ------------------------------------------------------
def header_text(header: fits.Header) -> str:
    """A header as its 80-character cards joined by newlines (no END, no padding)."""
    return header.tostring(sep="\n", endcard=False, padding=False)


def hdulist_header_texts(hdul: fits.HDUList, opened: OpenedSource | None = None) -> list[str]:
    """Every header of ``hdul`` as card text, exactly as the file wrote it where possible.

    For files and bytes the cards are cut from the raw header blocks (fast, and faithful even
    for cards astropy refuses to print, e.g. a broken CONTINUE). An ``HDUList`` given by the
    caller may have been edited in memory, so it is printed by astropy, card by card when a
    malformed card stops the whole-header print.
    """
    texts = []
    raw_ok = opened is not None and (opened.fits_bytes is not None or
                                     (opened.location is not None and opened.location.is_local))
    for index, hdu in enumerate(hdul):
        if raw_ok:
            text = _raw_header_text(hdu, opened)
            if text is not None:
                texts.append(text)
                continue
        try:
            texts.append(header_text(hdu.header))
        except Exception as err:  # astropy's VerifyError and friends, on hostile headers
            log.info("HDU %d header not printable by astropy (%s); keeping raw cards", index, err)
            texts.append("\n".join(_card_text(card) for card in hdu.header.cards))
    return texts


def _raw_header_text(hdu, opened: OpenedSource) -> str | None:
    try:
        info = hdu.fileinfo()
    except Exception:  # astropy may re-verify the header here
        return None
    if not info:
        return None
    start, stop = int(info["hdrLoc"]), int(info["datLoc"])
    if opened.fits_bytes is not None:
        raw = opened.fits_bytes[start:stop]
    else:
        with open(opened.location.local_path, "rb") as fh:
            fh.seek(start)
            raw = fh.read(stop - start)
    if len(raw) != stop - start or len(raw) % 80:
        return None
    text = raw.decode("ascii", "replace")
    cards = [text[i:i + 80] for i in range(0, len(text), 80)]
    for i, card in enumerate(cards):
        if card.rstrip() == "END":
            return "\n".join(cards[:i])
    return None


def _card_text(card: fits.Card) -> str:
    try:
        return str(card)
    except Exception:  # astropy keeps the 80 characters it read in ``_image``
        raw = getattr(card, "_image", None)
        return raw if isinstance(raw, str) else f"{card.keyword:8.8}= 'unparsable card'".ljust(80)


def fits_headers(ds) -> list[fits.Header]:
    """Rebuild the FITS headers of the file a dataset was decoded from.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset made by :func:`tpf_to_xarray` or :func:`image_to_xarray` (or read back
        from zarr).

    Returns
    -------
    list of astropy.io.fits.Header
        One header per HDU, in file order (an empty list for JPG/PNG cutouts).
    """
    return [fits.Header.fromstring(text, sep="\n") for text in ds.attrs.get("fits_headers", [])]


def plain(value: Any) -> str | int | float | bool | None:
    """A header value as a JSON-safe Python scalar; ``None`` for undefined values.

    FITS ``Undefined``, ``None`` and non-finite floats become ``None`` (callers then omit the
    attribute or use ``""``, never store ``None``); numpy scalars become Python ones.
    """
    if value is None or isinstance(value, fits.card.Undefined):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, str):
        return value.strip()
    return str(value)


def header_value(header: fits.Header, key: str):
    """``header.get(key)``, but ``None`` for a card astropy cannot parse (hostile headers)."""
    try:
        return header.get(key)
    except Exception as err:  # VerifyError and ValueError from malformed cards
        log.info("keyword %s unparsable: %s", key, err)
        return None


def header_int(header: fits.Header, key: str) -> int | None:
    """An integer keyword, or ``None`` when absent, undefined, empty or not integral."""
    value = plain(header_value(header, key))
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return value


def header_float(header: fits.Header, key: str) -> float | None:
    """A numeric keyword as float, or ``None`` when absent, undefined or not a number."""
    value = plain(header_value(header, key))
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
        return value if np.isfinite(value) else None
    return float(value)


def header_str(header: fits.Header, key: str) -> str:
    """A keyword as a stripped string; ``""`` when absent or undefined."""
    value = plain(header_value(header, key))
    return "" if value is None else str(value)


def quiet_wcs(header: fits.Header | str, **kwargs):
    """``astropy.wcs.WCS(header)`` with its warnings about non-standard keywords silenced.

    ``header`` may be a Header or the header's 80-character cards as one string.

    Returns ``None`` when astropy cannot build a WCS at all.
    """
    from astropy.wcs import WCS
    from astropy.utils.exceptions import AstropyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            return WCS(header, **kwargs)
        except Exception as err:  # astropy/WCSLIB raise many kinds for bad headers
            log.debug("WCS not usable: %s", err)
            return None


def _name_of(src: Source) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.path.basename(os.fspath(src))
    return ""


@contextlib.contextmanager
def _unreadable_as_decode_error(name: str):
    """Truncated or corrupt files make astropy/numpy/Pillow raise many kinds; report one."""
    try:
        yield
    except MastcutError:  # already one of ours (DecodeError, InvalidQueryError, ...)
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, EOFError, OverflowError,
            fits.VerifyError) as err:  # OverflowError: header sizes beyond a C ssize_t
        raise DecodeError(f"{name or 'input'}: unreadable or truncated file ({type(err).__name__}: {err})") from err


# ---- the public decoders ------------------------------------------------------------------
def tpf_to_xarray(src: Source, *, chunks: int | str | dict | None = None,
                  storage_options: dict | None = None):
    """Decode a TESSCut target pixel file into an :class:`xarray.Dataset`.

    Parameters
    ----------
    src : HDUList, bytes, str or os.PathLike
        An open ``HDUList``, the file's bytes, a local path or an fsspec URL.
    chunks : int, "auto" or dict, optional
        If given, the pixel variables are dask arrays read lazily from the file, chunked
        along ``time`` (an int is a number of cadences; a dict may give ``{"time": n}``).
        Headers and the small per-cadence columns are read at once; pixels only on compute.
    storage_options : dict, optional
        fsspec options when ``src`` is a URL.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, y, x)``: ``flux``, ``flux_err``, ``flux_bkg``, ``flux_bkg_err``
        (float32, e-/s), ``aperture`` (bool, ``(y, x)``); coords ``time`` (BTJD),
        ``timecorr``, ``cadenceno``, ``quality``, ``ffi_file`` (and ``tgt_x``, ``tgt_y``,
        ``tgt_ra``, ``tgt_dec`` for moving targets), ``ra``/``dec`` where the WCS is valid,
        ``row``/``column`` where the file gives the CCD position. ``attrs["quirks"]`` names
        every real-file quirk that was decoded (e.g. ``"sector_empty"``).

    Raises
    ------
    DecodeError
        If the file is not a target pixel file (the message says what is missing).
    """
    from .decode_tpf import build_tpf_dataset

    with _unreadable_as_decode_error(_name_of(src)):
        opened = open_source(src, lazy=chunks is not None, storage_options=storage_options)
    try:
        if opened.hdul is None:
            raise DecodeError(f"{opened.name or 'input'} is an image (JPEG/PNG), not a target pixel file")
        with _unreadable_as_decode_error(opened.name):
            return build_tpf_dataset(opened, chunks=chunks)
    finally:
        if not isinstance(src, fits.HDUList):
            opened.close()


def image_to_xarray(src: Source, *, origin: str | None = None, storage_options: dict | None = None):
    """Decode a ZCut or HAPCut image cutout (FITS, JPG or PNG) into an :class:`xarray.Dataset`.

    Parameters
    ----------
    src : HDUList, bytes, str or os.PathLike
        An open ``HDUList``, the file's bytes, a local path or an fsspec URL.
    origin : {"upper", "lower"}, optional
        JPG/PNG only: override the row order found from the embedded metadata (files
        without metadata, i.e. astrocut < 1.4, are taken as ``"lower"``: row 0 = FITS row 0).
    storage_options : dict, optional
        fsspec options when ``src`` is a URL.

    Returns
    -------
    xarray.Dataset
        ZCut FITS: ``image`` on ``(band, y, x)`` with band labels from FILTER/ORIG_FLE and
        ``ra``/``dec`` coords (``(y, x)`` when all bands share a WCS, else
        ``(band, y, x)``). HAPCut FITS: ``sci``, ``wht`` and ``valid`` (WHT > 0) on
        ``(y, x)`` with ``ra``/``dec``. JPG/PNG: ``image`` on ``(y, x)`` (uint8, or
        ``(y, x, channel)`` for colour) with ``attrs["origin"]`` stating the row order.

    Raises
    ------
    DecodeError
        If the file holds no image cutout (the message says what is missing).
    InvalidQueryError
        If ``origin`` is neither ``"upper"`` nor ``"lower"``.
    """
    from .decode_image import build_image_dataset

    if origin not in (None, "upper", "lower"):
        # the caller's mistake, refused up front (inside the decode it would read as a corrupt file)
        raise InvalidQueryError(f"origin must be 'upper' or 'lower', got {origin!r}")
    with _unreadable_as_decode_error(_name_of(src)):
        opened = open_source(src, storage_options=storage_options)
    try:
        with _unreadable_as_decode_error(opened.name):
            return build_image_dataset(opened, origin=origin)
    finally:
        if not isinstance(src, fits.HDUList):
            opened.close()


def open_cutout(src: Source, *, chunks=None, storage_options: dict | None = None):
    """Decode any cutout file: a target pixel file, else an image cutout.

    Parameters
    ----------
    src : HDUList, bytes, str or os.PathLike
        As for :func:`tpf_to_xarray`.
    chunks : optional
        As for :func:`tpf_to_xarray` (ignored for image cutouts).
    storage_options : dict, optional
        fsspec options when ``src`` is a URL.

    Returns
    -------
    xarray.Dataset
    """
    with _unreadable_as_decode_error(_name_of(src)):
        opened = open_source(src, lazy=chunks is not None, storage_options=storage_options)
    try:
        if opened.hdul is not None:
            from .decode_tpf import find_pixels_hdu, build_tpf_dataset

            with _unreadable_as_decode_error(opened.name):
                if find_pixels_hdu(opened.hdul) is not None:
                    return build_tpf_dataset(opened, chunks=chunks)
        from .decode_image import build_image_dataset

        with _unreadable_as_decode_error(opened.name):
            return build_image_dataset(opened)
    finally:
        if not isinstance(src, fits.HDUList):
            opened.close()


# ---- xarray backend -----------------------------------------------------------------------
try:
    from xarray.backends import BackendEntrypoint as _BackendBase
except ImportError:  # pragma: no cover - xarray always has it in the versions we support
    _BackendBase = object


class MastcutBackendEntrypoint(_BackendBase):
    """xarray backend: ``xr.open_dataset("..._astrocut.fits", engine="mastcut")``.

    Target pixel files decode as :func:`tpf_to_xarray`, image cutouts as
    :func:`image_to_xarray`. ``drop_variables`` is honoured; xarray's own ``chunks=``
    argument chunks the result afterwards.
    """

    description = "TESSCut target pixel files and ZCut/HAPCut image cutouts (mastcut_dask)"
    url = "https://github.com/mastcut_dask"
    open_dataset_parameters = ("filename_or_obj", "drop_variables")

    def open_dataset(self, filename_or_obj, *, drop_variables=None):
        ds = open_cutout(filename_or_obj)
        if drop_variables:
            ds = ds.drop_vars(list(drop_variables), errors="ignore")
        return ds

    def guess_can_open(self, filename_or_obj) -> bool:
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            return False
        name = os.fspath(filename_or_obj).lower()
        return name.endswith("_astrocut.fits") or (
            name.endswith(".fits") and ("hst_cutout" in name or "astrocut" in name))


# registers the ``ds.mastcut`` accessor for every dataset once the decoders are in use
from . import accessor as _accessor  # noqa: E402,F401
