"""ZCut and HAPCut image cutouts (FITS, JPG, PNG) → :class:`xarray.Dataset`.

Layouts (docs/formats.md): astrocut ``fits_cut`` files hold a data-less PRIMARY and one
image HDU per input. ZCut names every one ``CUTOUT`` (so band labels come from
FILTER/FILTER1/FILTER2 or the input file name ``ORIG_FLE``, never from EXTNAME); HAPCut holds
``SCI_CUTOUT_*`` and ``WHT_CUTOUT_*`` (``O_EXT_NM`` = SCI/WHT). JPG/PNG cutouts are 8-bit
images without WCS; whether row 0 is the top or the bottom depends on the astrocut version,
so it is stated in ``attrs["origin"]`` (matplotlib's meaning: ``"lower"`` = row 0 is the
bottom, the FITS row order; ``"upper"`` = row 0 is the top, FITS rows reversed).
"""

from __future__ import annotations

import io
import json
import logging
import re
import warnings

import numpy as np
import xarray as xr
from astropy.io import fits
from PIL import Image

from ..exceptions import DecodeError
from .headers import hdulist_header_texts, header_float, header_str, quiet_wcs
from .opened import OpenedSource

__all__ = ["build_image_dataset", "band_label"]

log = logging.getLogger(__name__)

_FILTER_IN_NAME = re.compile(r"(?:^|[_\-.])(f\d{3,4}[a-z]{0,2})(?=[_\-.]|$)", re.IGNORECASE)
_SURVEY_IN_NAME = re.compile(r"^(.*?)_-?\d+\.\d+_-?\d+\.\d+_")


def named_filter(header: fits.Header) -> str:
    """FILTER, else the FILTER1/FILTER2 that is not a clear position; "" when none names one."""
    for key in ("FILTER", "FILTER1", "FILTER2"):
        value = header_str(header, key)
        if value and not value.upper().startswith(("CLEAR", "N/A", "NONE")):
            return value
    return ""


def band_label(header: fits.Header, index: int) -> str:
    """The band of one cutout HDU: FILTER, else the non-CLEAR FILTER1/FILTER2, else ORIG_FLE.

    EXTNAME is never used (ZCut writes ``CUTOUT`` for every band).
    """
    named = named_filter(header)
    if named:
        return named
    orig = header_str(header, "ORIG_FLE")
    if orig:
        match = _FILTER_IN_NAME.search(orig)
        if match:
            return match.group(1).upper()
        return re.sub(r"\.fits(\.gz)?$", "", orig, flags=re.IGNORECASE)
    return f"band{index}"


def build_image_dataset(opened: OpenedSource, *, origin: str | None = None) -> xr.Dataset:
    """Build the dataset of an image cutout (see :func:`~mastcut_dask.decode.image_to_xarray`)."""
    if opened.hdul is None:
        return _raster_dataset(opened, origin)
    hdul = opened.hdul
    images = [(i, hdu) for i, hdu in enumerate(hdul)
              if isinstance(hdu, (fits.ImageHDU, fits.PrimaryHDU)) and hdu.header.get("NAXIS") == 2
              and hdu.name.upper() != "APERTURE"]
    if not images:
        kinds = ", ".join(f"{i}:{hdu.name or '?'}(NAXIS={hdu.header.get('NAXIS')})" for i, hdu in enumerate(hdul))
        raise DecodeError(f"{opened.name or 'input'} is not an image cutout: no 2-D image HDU ({kinds})")
    kinds = [_role(hdu) for _, hdu in images]
    if "WHT" in kinds:
        return _hapcut_dataset(opened, images, kinds)
    return _zcut_dataset(opened, images)


def _role(hdu) -> str:
    """SCI, WHT or '' for one image HDU (from O_EXT_NM, else the EXTNAME prefix)."""
    name = header_str(hdu.header, "O_EXT_NM").upper() or hdu.name.upper()
    for role in ("SCI", "WHT"):
        if name == role or name.startswith(role + "_"):
            return role
    return ""


def _native(data) -> np.ndarray:
    array = np.asarray(data)
    return np.array(array, dtype=array.dtype.newbyteorder("="))


def _sky(header: fits.Header, shape) -> tuple[np.ndarray, np.ndarray] | None:
    """RA/Dec of every pixel centre from the HDU's WCS, or ``None`` if it has no usable one."""
    wcs = quiet_wcs(header)
    if wcs is None or not wcs.has_celestial:
        return None
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ra, dec = wcs.celestial.all_pix2world(xx.astype(float), yy.astype(float), 0)
        except Exception as err:  # WCSLIB raises several kinds for broken headers
            log.info("image WCS unusable: %s", err)
            return None
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        return None
    return np.asarray(ra, np.float64), np.asarray(dec, np.float64)


def _common_attrs(opened: OpenedSource, service: str) -> dict:
    primary = opened.hdul[0].header
    attrs: dict = {"service": service, "source_file": opened.name}
    for key in ("RA_OBJ", "DEC_OBJ"):
        value = header_float(primary, key)
        if value is not None:
            attrs[key.lower()] = value
    attrs["procver"] = header_str(primary, "PROCVER")
    attrs["origin_institution"] = header_str(primary, "ORIGIN")
    return attrs


def _zcut_dataset(opened: OpenedSource, images) -> xr.Dataset:
    shapes = {hdu.data.shape for _, hdu in images}
    if len(shapes) != 1:
        raise DecodeError(f"{opened.name or 'input'}: cutouts of different shapes {sorted(shapes)} "
                          "cannot share (band, y, x)")
    (ny, nx), = shapes
    labels, seen = [], set()
    for index, (_, hdu) in enumerate(images):
        label = band_label(hdu.header, index)
        if label in seen:  # the same filter twice (e.g. two epochs): keep both, distinctly
            label = f"{label}_{index}"
        seen.add(label)
        labels.append(label)
    cube = np.stack([_native(hdu.data).astype(np.float32, copy=False) if hdu.data.dtype.kind == "f"
                     else _native(hdu.data) for _, hdu in images])
    skies = [_sky(hdu.header, (ny, nx)) for _, hdu in images]
    coords: dict = {"band": ("band", np.array(labels, dtype=np.dtypes.StringDType()))}
    coords["orig_file"] = ("band", np.array([header_str(h.header, "ORIG_FLE") for _, h in images],
                                            dtype=np.dtypes.StringDType()))
    wcs_valid = all(s is not None for s in skies)
    if wcs_valid:
        same = all(np.array_equal(s[0], skies[0][0]) and np.array_equal(s[1], skies[0][1]) for s in skies)
        if same:
            coords["ra"] = (("y", "x"), skies[0][0], {"units": "deg"})
            coords["dec"] = (("y", "x"), skies[0][1], {"units": "deg"})
        else:
            coords["ra"] = (("band", "y", "x"), np.stack([s[0] for s in skies]), {"units": "deg"})
            coords["dec"] = (("band", "y", "x"), np.stack([s[1] for s in skies]), {"units": "deg"})
    unit = header_str(images[0][1].header, "BUNIT")
    attrs = _common_attrs(opened, "ZCut")
    match = _SURVEY_IN_NAME.match(opened.name or "")
    attrs["survey"] = match.group(1) if match else ""
    attrs["wcs_valid"] = bool(wcs_valid)
    attrs["fits_headers"] = hdulist_header_texts(opened.hdul, opened)
    var_attrs = {"units": unit} if unit else {}
    return xr.Dataset({"image": (("band", "y", "x"), cube, var_attrs)}, coords=coords, attrs=attrs)


def _hapcut_dataset(opened: OpenedSource, images, kinds) -> xr.Dataset:
    by_role = {}
    for (index, hdu), role in zip(images, kinds):
        by_role.setdefault(role, (index, hdu))
    if "SCI" not in by_role:
        raise DecodeError(f"{opened.name or 'input'}: a WHT cutout without its SCI cutout")
    sci_hdu = by_role["SCI"][1]
    wht_hdu = by_role["WHT"][1]
    sci = _native(sci_hdu.data).astype(np.float32, copy=False)
    wht = _native(wht_hdu.data).astype(np.float32, copy=False)
    if sci.shape != wht.shape:
        raise DecodeError(f"{opened.name or 'input'}: SCI {sci.shape} and WHT {wht.shape} differ in shape")
    coords: dict = {}
    sky = _sky(sci_hdu.header, sci.shape)
    if sky is not None:
        coords["ra"] = (("y", "x"), sky[0], {"units": "deg"})
        coords["dec"] = (("y", "x"), sky[1], {"units": "deg"})
    attrs = _common_attrs(opened, "HAPCut")
    primary = opened.hdul[0].header
    # Not band_label: with only CLEAR wheel positions it falls back to "band0", and the file
    # name (hst_..._f160w...) is the better witness.
    filt = named_filter(primary)
    if not filt:
        match = _FILTER_IN_NAME.search(sci_hdu.name) or _FILTER_IN_NAME.search(opened.name or "")
        filt = match.group(1).upper() if match else ""
    attrs["filter"] = filt
    attrs["instrument"] = header_str(primary, "INSTRUME")
    attrs["detector"] = header_str(primary, "DETECTOR")
    attrs["wcs_valid"] = sky is not None
    attrs["fits_headers"] = hdulist_header_texts(opened.hdul, opened)
    sci_unit = header_str(sci_hdu.header, "BUNIT")
    with np.errstate(invalid="ignore"):
        valid = np.nan_to_num(wht) > 0  # MVM mosaics zero-fill where no exposure landed
    return xr.Dataset(
        {"sci": (("y", "x"), sci, {"units": sci_unit} if sci_unit else {}),
         "wht": (("y", "x"), wht, {"long_name": "drizzle weight"}),
         "valid": (("y", "x"), valid, {"long_name": "pixel has data (WHT > 0)"})},
        coords=coords, attrs=attrs)


def _raster_dataset(opened: OpenedSource, origin: str | None) -> xr.Dataset:
    try:
        with Image.open(io.BytesIO(opened.raw)) as image:
            fmt = image.format or ""
            meta = _raster_metadata(image)
            if image.mode not in ("L", "RGB", "RGBA"):
                image = image.convert("RGB" if image.mode in ("P", "CMYK", "YCbCr") else "L")
            array = np.array(image, dtype=np.uint8)
    except Image.DecompressionBombError as err:  # not an OSError: the caller's guard would miss it
        raise DecodeError(f"{opened.name or 'input'}: {err}") from err
    if origin is None:  # (an explicit origin was checked by image_to_xarray)
        origin = _origin_from_metadata(meta)
    attrs: dict = {"service": "ZCut", "source_file": opened.name, "format": fmt.lower(), "origin": origin,
                   "origin_from": "metadata" if meta else "default (no metadata: astrocut < 1.4 rows are FITS rows)",
                   "wcs_valid": False}
    for key, value in meta.items():
        attrs[f"meta_{key}"] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    if array.ndim == 3:
        channels = ["R", "G", "B", "A"][: array.shape[2]]
        return xr.Dataset({"image": (("y", "x", "channel"), array)},
                          coords={"channel": ("channel", np.array(channels, dtype=np.dtypes.StringDType()))},
                          attrs=attrs)
    return xr.Dataset({"image": (("y", "x"), array)}, attrs=attrs)


def _raster_metadata(image) -> dict:
    """astrocut ≥1.4 metadata: PNG tEXt chunks, or JSON in JPEG EXIF ImageDescription (270)."""
    meta: dict = {}
    text = getattr(image, "text", None)
    if text:
        meta.update({str(k): str(v) for k, v in text.items()})
    try:
        description = image.getexif().get(270)
    except Exception:  # a corrupt EXIF block must not stop pixel decoding
        description = None
    if description:
        try:
            parsed = json.loads(description)
        except (TypeError, ValueError):
            parsed = {"description": str(description)}
        if isinstance(parsed, dict):
            meta.update(parsed)
    clean = {}
    for key, value in meta.items():
        if value is None:
            continue
        if isinstance(value, float) and not np.isfinite(value):
            continue
        clean[str(key)] = value
    return clean


def _origin_from_metadata(meta: dict) -> str:
    declared = str(meta.get("origin", "")).lower()
    if declared in ("upper", "lower"):
        return declared
    flipped = meta.get("flip_orientation", meta.get("flipped"))
    if isinstance(flipped, str):
        flipped = flipped.lower() in ("true", "1", "yes")
    if isinstance(flipped, bool):
        return "upper" if flipped else "lower"
    # astrocut embeds metadata only since 1.4, which flips by default; older files have none
    return "upper" if meta else "lower"
