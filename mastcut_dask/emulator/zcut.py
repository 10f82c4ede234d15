"""The emulator's ZCut sky: a few deep fields, each observed by several surveys.

The sky (deterministic; tests rely on it)
-----------------------------------------
Four fields, each a tangent point shared by all its surveys. A survey is one north-up TAN grid
(one pixel scale for all its filter images) and a convex footprint given as tangent-plane
offsets in degrees; pixels outside the footprint are NaN, inside they are background + noise +
sources. Catalog order (also the order of :func:`zcut_survey_names` and :func:`zcut_surveys_at`):

=============  ======================  ===========================================  ==========
field          tangent point (deg)     surveys (pixel scale)                         anchor star
=============  ======================  ===========================================  ==========
GOODS-N        189.228621, 62.238572   candels_gn_60mas (0.06"), candels_gn_30mas   189.49206,
                                       (0.03"), goods_north (0.03"), 3dhst_goods-n  62.20615
                                       (0.06")
GOODS-S        53.122751, -27.805089   candels_gs_60mas, candels_gs_30mas,          53.16, -27.78
                                       goods_south, 3dhst_goods-s
UDS            34.406040, -5.200430    candels_uds_60mas, 3dhst_uds                 34.47320,
                                                                                    -5.24271
COSMOS         150.116290, 2.200650    candels_cosmos_60mas, 3dhst_cosmos           150.10, 2.25
=============  ======================  ===========================================  ==========

Pinned facts: at (189.49206, 62.20615) the surveys are ``['candels_gn_60mas',
'candels_gn_30mas', 'goods_north', '3dhst_goods-n']``; (189.28065571, 62.17415175) is in
goods_north and 3dhst_goods-n but *not* in candels_gn_30mas (as astroquery's remote tests
expect); (34.47320, -5.24271) is in the UDS surveys; (0, 0) is in none.
candels_gn_30mas has F606W, F814W, F850LP (``hlsp_candels_hst_acs_gn-tot-30mas_<f>_v1.0_drz``);
3dhst_goods-n has the ten images of the astroquery docs (IRAC 1, 3, 4, 2; Mayall U; Subaru
Rc, V, Ic, z', B), in that order.

Every field has a bright (mag 16) star at its *anchor* position, isolated (nothing else
within 4"), so a cutout there shows a point source exactly where the WCS puts the anchor.
The rest are procedurally drawn galaxies and stars (about 0.02 per arcsec², drawn from
``seed``) with a Gaussian PSF per band, on a zero background with Gaussian noise. The noise
is a hash of (seed, image, global pixel index) and sources are cut to zero beyond five
sigma, so a pixel's value never depends on the window that asked: overlapping cutouts agree
pixel for pixel.

Products
--------
FITS: one file per survey, ``{survey}_{ra:.6f}_{dec:.6f}_{x}-x-{y}_astrocut.fits`` with sizes
written ``10.0pix`` (units px) or ``0.001deg`` (units d); a PRIMARY HDU of 11 cards (ORIGIN, DATE,
PROCVER, RA_OBJ, DEC_OBJ, CHECKSUM, DATASUM) and one float32 ``CUTOUT`` image per filter image
carrying the full WCS (CDi_j *and* PCi_j + CDELTi = 1, as astrocut writes), ORIG_FLE, O_EXT_NM
(undefined: the inputs keep their image in the primary HDU), ORIG_EXT (0) and FILTER.
JPG/PNG: one 8-bit greyscale image per filter image named
``{input stem}_{ra:.6f}_{dec:.6f}_{x}-x-{y}_astrocut_0.jpg`` (or ``.png``), normalised as astrocut
does (see :func:`~mastcut_dask.emulator.imagecut.normalise`) and **not flipped**: image row 0 is
FITS row 0 (south at the top when shown naively), as the 2020 service produced.
x is the number of columns and y the number of rows; sizes in degrees use the survey's scale.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .constants import IMAGE_FORMATS
from .errors import BadRequest
from .fitsbytes import card, fits_file
from .imagecut import (parse_position, Band, PixelSources, SourceList, TanGrid, check_area,
                       distance_to_polygon, encode_image, parse_image_params,
                       parse_units, polygon_mask, positive_size, render_window, size_label,
                       size_to_pixels, stable_seed, tan_project)

__all__ = ["zcut_surveys_at", "zcut_survey_names", "zcut_cutout_files", "zcut_survey",
           "survey_grid", "SURVEYS", "FIELDS"]

logger = logging.getLogger(__name__)

#: astrocut version written as PROCVER; DATE is fixed so the same request gives the same bytes.
PROCVER = "1.0.1"
FILE_DATE = "2026-01-01"
_MARGIN_PX = 64


@dataclass(frozen=True)
class ZImage:
    """One filter image of a survey (an input file of astrocut ``fits_cut``)."""

    stem: str
    filter: str
    telescope: str
    instrument: str
    band: Band

    @property
    def filename(self) -> str:
        return f"{self.stem}.fits"


@dataclass(frozen=True)
class Survey:
    """A deep-field survey: one pixel grid, one footprint, several filter images."""

    name: str
    field: str
    scale_arcsec: float
    footprint: tuple[tuple[float, float], ...]   # (xi, eta) vertices in degrees
    images: tuple[ZImage, ...]
    credit: str


@dataclass(frozen=True)
class Field:
    """A deep field: tangent point, source box (half sizes in deg) and anchor star."""

    key: str
    center: tuple[float, float]
    half_size: tuple[float, float]
    anchor: tuple[float, float]


def _hst(stem: str, filt: str, inst: str, um: float, scale: float) -> ZImage:
    # Noise per pixel grows as the pixel shrinks (drizzled counts per pixel area).
    return ZImage(stem, filt.upper(), "HST", inst.upper(),
                  Band(um, 0.09 if um < 1.0 else 0.18, 26.0, 0.0, 0.12 * scale))


def _ground(stem: str, filt: str, tel: str, inst: str, um: float) -> ZImage:
    return ZImage(stem, filt, tel, inst, Band(um, 0.8, 25.0, 0.0, 0.02))


def _irac(stem: str, channel: int) -> ZImage:
    um = {1: 3.6, 2: 4.5, 3: 5.8, 4: 8.0}[channel]
    return ZImage(stem, f"IRAC{channel}", "Spitzer", "IRAC",
                  Band(um, 1.7 + 0.1 * channel, 25.0, 0.0, 0.01))


def _rect(w0: float, w1: float, h0: float, h1: float, tilt: float):
    """A slightly sheared quadrilateral, as a real mosaic outline (deg offsets)."""
    return ((w0, h0 + tilt), (w1, h0 - tilt), (w1 + tilt, h1), (w0 + tilt, h1 + tilt))


def _candels(tag: str, field: str, scale_mas: int, filters: list[tuple[str, str, float]],
             footprint) -> Survey:
    scale = scale_mas / 1000.0
    images = tuple(_hst(f"hlsp_candels_hst_{inst}_{tag}-tot-{scale_mas}mas_{f}_v1.0_drz", f, inst,
                        um, scale) for f, inst, um in filters)
    return Survey(f"candels_{tag}_{scale_mas}mas", field, scale, footprint, images,
                  "CANDELS (Grogin et al. 2011; Koekemoer et al. 2011)")


def _goods(name: str, tag: str, field: str, footprint) -> Survey:
    filters = [("f435w", 0.43), ("f606w", 0.59), ("f775w", 0.77), ("f850lp", 0.90)]
    images = tuple(_hst(f"hlsp_goods_hst_acs_{tag}_{f}_v2.0_drz", f, "acs", um, 0.03)
                   for f, um in filters)
    return Survey(name, field, 0.03, footprint, images, "GOODS (Giavalisco et al. 2004)")


def _3dhst(tag: str, field: str, images: tuple[ZImage, ...], footprint) -> Survey:
    return Survey(f"3dhst_{tag}", field, 0.06, footprint, images,
                  "3D-HST (Brammer et al. 2012; Skelton et al. 2014)")


_WFC3 = [("f105w", "wfc3", 1.05), ("f125w", "wfc3", 1.25), ("f160w", "wfc3", 1.54)]
_ACS = [("f606w", "acs", 0.59), ("f814w", "acs", 0.81), ("f850lp", "acs", 0.90)]


def _3dhst_goods_n() -> tuple[ZImage, ...]:
    p = "hlsp_3dhst"
    sub = ("Subaru", "SuprimeCam")
    return (
        _irac(f"{p}_spitzer_irac_goods-n_irac1_v4.0_sc", 1),
        _irac(f"{p}_spitzer_irac_goods-n-s2_irac3_v4.0_sc", 3),
        _irac(f"{p}_spitzer_irac_goods-n-s1_irac4_v4.0_sc", 4),
        _irac(f"{p}_spitzer_irac_goods-n_irac2_v4.0_sc", 2),
        _ground(f"{p}_mayall_mosaic_goods-n_u_v4.0_sc", "U", "KPNO-4m", "MOSAIC", 0.36),
        _ground(f"{p}_subaru_suprimecam_goods-n_rc_v4.0_sc", "Rc", *sub, 0.65),
        _ground(f"{p}_subaru_suprimecam_goods-n_v_v4.0_sc", "V", *sub, 0.55),
        _ground(f"{p}_subaru_suprimecam_goods-n_ic_v4.0_sc", "Ic", *sub, 0.80),
        _ground(f"{p}_subaru_suprimecam_goods-n_zp_v4.0_sc", "zp", *sub, 0.91),
        _ground(f"{p}_subaru_suprimecam_goods-n_b_v4.0_sc", "B", *sub, 0.44),
    )


def _3dhst_other(tag: str) -> tuple[ZImage, ...]:
    p = "hlsp_3dhst"
    return (
        _irac(f"{p}_spitzer_irac_{tag}_irac1_v4.0_sc", 1),
        _irac(f"{p}_spitzer_irac_{tag}_irac2_v4.0_sc", 2),
        _hst(f"{p}_hst_wfc3_{tag}_f140w_v4.0_sc", "f140w", "wfc3", 1.39, 0.06),
    )


FIELDS: tuple[Field, ...] = (
    Field("goods-n", (189.228621, 62.238572), (0.18, 0.15), (189.49206, 62.20615)),
    Field("goods-s", (53.122751, -27.805089), (0.14, 0.14), (53.16, -27.78)),
    Field("uds", (34.406040, -5.200430), (0.22, 0.12), (34.47320, -5.24271)),
    Field("cosmos", (150.116290, 2.200650), (0.12, 0.20), (150.10, 2.25)),
)

SURVEYS: tuple[Survey, ...] = (
    _candels("gn", "goods-n", 60, _WFC3, _rect(-0.13, 0.16, -0.09, 0.10, 0.01)),
    _candels("gn", "goods-n", 30, _ACS, _rect(-0.07, 0.15, -0.05, 0.09, 0.004)),
    _goods("goods_north", "goods-n", "goods-n", _rect(-0.14, 0.16, -0.12, 0.12, 0.01)),
    _3dhst("goods-n", "goods-n", _3dhst_goods_n(), _rect(-0.12, 0.15, -0.10, 0.10, 0.005)),
    _candels("gs", "goods-s", 60, _WFC3, _rect(-0.10, 0.10, -0.12, 0.12, 0.01)),
    _candels("gs", "goods-s", 30, _ACS, _rect(-0.08, 0.08, -0.10, 0.10, 0.004)),
    _goods("goods_south", "goods-s", "goods-s", _rect(-0.12, 0.12, -0.13, 0.13, 0.01)),
    _3dhst("goods-s", "goods-s", _3dhst_other("goods-s"), _rect(-0.11, 0.11, -0.12, 0.12, 0.0)),
    _candels("uds", "uds", 60, _WFC3, _rect(-0.20, 0.20, -0.10, 0.10, 0.005)),
    _3dhst("uds", "uds", _3dhst_other("uds"), _rect(-0.18, 0.19, -0.09, 0.09, 0.0)),
    _candels("cosmos", "cosmos", 60, _WFC3, _rect(-0.08, 0.08, -0.18, 0.18, 0.005)),
    _3dhst("cosmos", "cosmos", _3dhst_other("cosmos"), _rect(-0.09, 0.09, -0.17, 0.17, 0.0)),
)

_BY_NAME = {s.name: s for s in SURVEYS}
_FIELDS = {f.key: f for f in FIELDS}


def zcut_survey(name: str) -> Survey:
    """The catalog entry of a survey; :class:`BadRequest` for an unknown name."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise BadRequest(f"unknown survey {name!r}; known surveys: "
                         f"{', '.join(_BY_NAME)}") from None


def zcut_survey_names() -> list[str]:
    """Every survey the emulator knows, in catalog order."""
    return [s.name for s in SURVEYS]


def _position(ra, dec) -> tuple[float, float]:
    ra_f, dec_f = parse_position(ra, dec)
    return ra_f % 360.0, dec_f


def _plane(survey: Survey, ra: float, dec: float) -> tuple[float, float] | None:
    field = _FIELDS[survey.field]
    xi, eta, ok = tan_project(*field.center, ra, dec)
    return (float(xi), float(eta)) if bool(ok) else None


def zcut_surveys_at(ra: float, dec: float, radius_deg: float = 0.0, *, seed: int = 0) -> list[str]:
    """Surveys whose footprint lies within ``radius_deg`` of a position, in catalog order.

    Parameters
    ----------
    ra, dec : float
        Position in degrees (ICRS).
    radius_deg : float, optional
        Search radius in degrees (0 = the footprint must contain the position).
    seed : int, optional
        Sky seed; the footprints do not depend on it.

    Returns
    -------
    list of str
        Survey names, possibly empty.
    """
    ra, dec = _position(ra, dec)
    try:
        radius = float(radius_deg)
    except (TypeError, ValueError):
        raise BadRequest(f"radius must be a number, not {radius_deg!r}") from None
    if not math.isfinite(radius) or radius < 0:
        raise BadRequest(f"radius must be a finite number >= 0, not {radius_deg!r}")
    found = []
    for survey in SURVEYS:
        plane = _plane(survey, ra, dec)
        if plane is None:
            continue
        if distance_to_polygon(np.array(survey.footprint), *plane) <= radius:
            found.append(survey.name)
    return found


@lru_cache(maxsize=None)
def survey_grid(name: str) -> TanGrid:
    """The pixel grid of a survey: the footprint's bounding box plus a margin."""
    survey = _BY_NAME[name]
    field = _FIELDS[survey.field]
    v = np.array(survey.footprint)
    s = survey.scale_arcsec / 3600.0
    # RA (xi) grows to the left, so the largest xi sits at the margin on the left.
    crpix1 = 1.0 + _MARGIN_PX + v[:, 0].max() / s
    crpix2 = 1.0 + _MARGIN_PX - v[:, 1].min() / s
    nx = int(math.ceil((v[:, 0].max() - v[:, 0].min()) / s)) + 2 * _MARGIN_PX
    ny = int(math.ceil((v[:, 1].max() - v[:, 1].min()) / s)) + 2 * _MARGIN_PX
    return TanGrid(field.center, (round(crpix1, 1), round(crpix2, 1)), survey.scale_arcsec,
                   (ny, nx))


@lru_cache(maxsize=None)
def _field_sources(key: str, seed: int) -> SourceList:
    field = _FIELDS[key]
    axi, aeta, _ = tan_project(*field.center, *field.anchor)
    return SourceList.generate(key, seed, *field.half_size, per_arcsec2=0.02,
                               anchors=[(float(axi), float(aeta), 16.0)])


@lru_cache(maxsize=64)
def _survey_sources(name: str, seed: int) -> PixelSources:
    return PixelSources.on_grid(_field_sources(_BY_NAME[name].field, seed), survey_grid(name))


@lru_cache(maxsize=None)
def _footprint_px(name: str) -> np.ndarray:
    v = np.array(_BY_NAME[name].footprint)
    x, y = survey_grid(name).plane_to_pixel(v[:, 0], v[:, 1])
    return np.column_stack([x, y])


def survey_cutout(name: str, ra: float, dec: float, ny: int, nx: int, seed: int = 0):
    """Render one survey's cutout: ``(x0, y0, [float32 (ny, nx) array per filter image])``."""
    survey = _BY_NAME[name]
    grid = survey_grid(name)
    origin = grid.window(ra, dec, ny, nx)
    if origin is None:
        return None
    x0, y0 = origin
    xs, ys = np.arange(x0, x0 + nx), np.arange(y0, y0 + ny)
    inside = polygon_mask(_footprint_px(name), xs, ys)
    inside &= (xs[None, :] >= 0) & (xs[None, :] < grid.shape[1])
    inside &= (ys[:, None] >= 0) & (ys[:, None] < grid.shape[0])
    sources = _survey_sources(name, seed)
    planes = []
    for image in survey.images:
        salt = stable_seed("zcut", image.stem, seed)
        data = render_window(grid, image.band, sources, salt, x0, y0, ny, nx)
        data[~inside] = np.nan
        planes.append(data.astype(np.float32))
    return x0, y0, planes


@lru_cache(maxsize=None)
def _image_template(name: str, index: int) -> tuple[str, ...]:
    """The constant cards of a CUTOUT header (instrument keywords and the survey's HISTORY)."""
    survey = _BY_NAME[name]
    image = survey.images[index]
    band = image.band
    cards = [
        card(""),
        card("FILETYPE", "SCI", "type of data found in data file"),
        card("TELESCOP", image.telescope, "telescope used to acquire data"),
        card("INSTRUME", image.instrument, "identifier for instrument used to acquire data"),
        card("EQUINOX", 2000.0, "equinox of celestial coord. system"),
        card("BUNIT", "ELECTRONS/S" if image.telescope == "HST" else "COUNTS",
             "brightness units"),
        card("PHOTZPT", band.zeropoint, "[mag] AB zero point of the image"),
        card("PHOTPLAM", band.wavelength_um * 1e4, "[Angstrom] pivot wavelength"),
        card("PSF_FWHM", band.psf_fwhm_arcsec, "[arcsec] point-spread function FWHM"),
        card("PIXSCALE", survey.scale_arcsec, "[arcsec] pixel scale"),
        card("EXPTIME", 1.0, "[s] normalised exposure time"),
        card("DATAMODL", "emulated", "mastcut_dask emulator: procedural sky"),
    ]
    history = [
        "", " " + "-" * 66, "", f" {survey.name}: {survey.credit}",
        f" Field {survey.field}, filter {image.filter}, input file {image.filename}",
        "", " This image is a procedural stand-in served by the mastcut_dask MAST",
        " emulator: background, hash-based noise and Gaussian sources, not real",
        " data. Pixel values are a pure function of the survey, the filter and",
        " the pixel position, so overlapping cutouts agree pixel for pixel.", "",
    ]
    # Pad with survey boilerplate to the size of a real CANDELS CUTOUT header (177 cards).
    n_fixed = 7 + 26 + len(cards) + 5 + 1 + 2   # + trailing blank + CHECKSUM/DATASUM
    while len(history) < 177 - n_fixed:
        history.append(f" {survey.credit}: mosaic line {len(history):03d}")
    cards += [card("HISTORY", line) for line in history[:177 - n_fixed]]
    cards.append(card(""))
    return tuple(cards)


def _fits_product(survey: Survey, ra: float, dec: float, x0: int, y0: int,
                  planes: list[np.ndarray]) -> bytes:
    primary = [
        card("ORIGIN", "STScI/MAST", "institution responsible for creating this file"),
        card("DATE", FILE_DATE, "file creation date"),
        card("PROCVER", PROCVER, "software version"),
        card("RA_OBJ", ra, "[deg] right ascension"),
        card("DEC_OBJ", dec, "[deg] declination"),
    ]
    grid = survey_grid(survey.name)
    wcs = grid.wcs_cards(x0, y0)
    extensions = []
    for index, (image, data) in enumerate(zip(survey.images, planes)):
        cards = [*wcs, *_image_template(survey.name, index),
                 card("EXTNAME", "CUTOUT", "extension name"),
                 card("ORIG_FLE", image.filename, "Original image"),
                 card("O_EXT_NM", None, "Original extension name"),
                 card("ORIG_EXT", 0, "Original extension number"),
                 card("FILTER", image.filter, "filter of the original image")]
        extensions.append((cards, data))
    return fits_file(primary, extensions, checksum=True)


def zcut_cutout_files(ra, dec, x, y, units, *, survey=None, fmt="fits", stretch=None,
                      minmax_percent=None, minmax_value=None, invert=False,
                      seed=0) -> list[tuple[str, bytes]]:
    """The files of a ZCut ``astrocut`` request, as ``(name, bytes)`` in zip order.

    Parameters
    ----------
    ra, dec : float or str
        Centre in degrees.
    x, y : float or str
        Cutout width (columns) and height (rows), in ``units``.
    units : str
        ``"px"`` or ``"d"`` (degrees, converted with each survey's pixel scale).
    survey : str, optional
        Restrict to one survey; None or "" means every survey covering the position.
    fmt : str, optional
        ``fits`` (one file per survey), ``jpg`` or ``png`` (one image per filter image).
    stretch, minmax_percent, minmax_value, invert
        JPG/PNG options, as values or their wire strings (see
        :func:`~mastcut_dask.emulator.imagecut.parse_image_params`).
    seed : int, optional
        Sky seed.

    Returns
    -------
    list of (str, bytes)
        Empty when no (chosen) survey covers the position.

    Raises
    ------
    BadRequest
        Bad units, size, survey name, format or image options.
    """
    ra_f, dec_f = _position(ra, dec)
    unit = parse_units(units)
    positive_size("x", x)
    positive_size("y", y)
    kind = "fits" if fmt is None or str(fmt).strip() == "" else str(fmt).strip().lower()
    if kind not in IMAGE_FORMATS:
        raise BadRequest(f"format must be one of {', '.join(IMAGE_FORMATS)}, not {fmt!r}")
    params = parse_image_params(stretch, minmax_percent, minmax_value, invert)
    chosen = None if survey is None or str(survey).strip() == "" else str(survey).strip()
    if chosen is not None:
        zcut_survey(chosen)
    present = zcut_surveys_at(ra_f, dec_f)
    names = [n for n in present if chosen is None or n == chosen]
    label = f"{size_label(x, unit)}-x-{size_label(y, unit)}"
    centre = f"{ra_f:.6f}_{dec_f:.6f}"   # RA wrapped into [0, 360), as a SkyCoord holds it
    # Validate every size before rendering anything: a refused request costs nothing.
    shapes = {}
    for name in names:
        scale = _BY_NAME[name].scale_arcsec
        nx = size_to_pixels(x, unit, scale, "x")
        ny = size_to_pixels(y, unit, scale, "y")
        check_area(ny, nx)
        shapes[name] = (ny, nx)
    files: list[tuple[str, bytes]] = []
    for name in names:
        cut = survey_cutout(name, ra_f, dec_f, *shapes[name], seed=seed)
        if cut is None:
            continue
        x0, y0, planes = cut
        entry = _BY_NAME[name]
        if kind == "fits":
            files.append((f"{name}_{centre}_{label}_astrocut.fits",
                          _fits_product(entry, float(ra), float(dec), x0, y0, planes)))
        else:
            for image, data in zip(entry.images, planes):
                files.append((f"{image.stem}_{centre}_{label}_astrocut_0.{kind}",
                              encode_image(data, kind, params)))
    logger.debug("zcut %s %s: %d files", centre, label, len(files))
    return files
