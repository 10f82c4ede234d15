"""The emulator's HAPCut sky: a few HST multi-visit-mosaic (MVM) skycells.

The sky (deterministic; tests rely on it)
-----------------------------------------
A skycell is a 6000 × 6000 block of 0.04" pixels cut from a projection cell's north-up TAN
plane; its CRPIX therefore lies far outside the array, as in real MVM products. Each product
(instrument/detector/filter, plus a 0.12" ``coarse`` WFC3/IR variant on the same tangent plane,
pixel edges aligned 3:1) covers a convex exposure footprint inside the skycell:

===========  =======================  ==================================================
skycell      anchor star (deg)        products, in zip order
===========  =======================  ==================================================
p2007x09y05  351.347812, 28.497808    wfc3_ir_f160w_coarse, wfc3_ir_f160w,
                                      wfc3_uvis_f606w, wfc3_uvis_f814w
p0081x12y15  84.920799, -69.851699    acs_wfc_f555w, acs_wfc_f814w
===========  =======================  ==================================================

A product is returned when its footprint contains the requested position; (102.7, 70.5) is in
no skycell, so it gives ``[]``. Pixels: outside the skycell array, SCI and WHT are NaN; inside
the skycell but outside the product's footprint, and in the UVIS chip gap (a 40-pixel band
well away from the anchor), SCI = 0 and WHT = 0 (no data, as in MVM drizzle products: use
WHT > 0 as the validity mask); elsewhere WHT is a smooth exposure map and SCI is background +
noise (scaled by 1/sqrt(WHT)) + sources, with a mag-16 star at the anchor.

Products
--------
One FITS file per product, named from the request as
``hst_cutout_skycell-<skycell>-ra<deg>d<dddd>-dec<n|s><deg>d<dddd>_<inst>_<det>_<filter>``
plus ``_coarse`` for the 0.12" product and ``.fits``
(four decimals, truncated; ``n`` for Dec >= 0), with a PRIMARY HDU of 754 cards (the input product's
primary header: instrument keywords and HISTORY, plus RA_OBJ, DEC_OBJ, FILENAME and a HISTORY
card with the input name), then float32 ``SCI`` (102 cards) and ``WHT`` (56 cards) images with
the full WCS, O_EXT_NM, ORIG_FLE and ORIG_EXT.

**Size quirk** (the real service's, asserted by astroquery's remote tests): HAPCut uses ``x`` as the
number of *rows* and ``y`` as the number of columns, so ``x=3, y=2`` gives a SCI array of numpy
shape ``(3, 2)``. Sizes in degrees use each product's pixel scale.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .fitsbytes import card, fits_file
from .imagecut import (parse_position, Band, PixelSources, SourceList, TanGrid, check_area,
                       parse_units, pixel_noise, point_in_polygon, polygon_mask, render_window,
                       positive_size, size_to_pixels, stable_seed, tan_project)

__all__ = ["hapcut_cutout_files", "hapcut_products_at", "product_grid", "SKYCELLS"]

logger = logging.getLogger(__name__)

FINE_ARCSEC = 0.04
COARSE_FACTOR = 3
SKYCELL_PX = 6000
_PRIMARY_CARDS = 754
_SCI_CARDS = 102
_WHT_CARDS = 56


@dataclass(frozen=True)
class HapProduct:
    """One MVM filter product of a skycell."""

    instrument: str
    detector: str
    filter: str
    coarse: bool
    band: Band
    footprint: tuple[tuple[float, float], ...]   # (x, y) vertices in fine skycell pixels
    gap: tuple[tuple[float, float], ...] = ()     # zero-weight band (fine pixels), if any
    exposure: float = 1000.0

    @property
    def suffix(self) -> str:
        coarse = "_coarse" if self.coarse else ""
        return f"{self.instrument}_{self.detector}_{self.filter}{coarse}"

    @property
    def scale_arcsec(self) -> float:
        return FINE_ARCSEC * (COARSE_FACTOR if self.coarse else 1)


@dataclass(frozen=True)
class Skycell:
    """A skycell: projection-cell tangent point and where the anchor star falls in it."""

    name: str
    tangent: tuple[float, float]
    anchor: tuple[float, float]
    anchor_px: tuple[float, float]               # 0-based fine skycell pixel of the anchor
    products: tuple[HapProduct, ...]


def _square(cx: float, cy: float, half: float, angle_deg: float):
    """A square footprint (fine pixels) rotated by the exposure's position angle."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    corners = [(-half, -half), (half, -half), (half, half), (-half, half)]
    return tuple((cx + c * u - s * v, cy + s * u + c * v) for u, v in corners)


def _band_strip(cx: float, cy: float, angle_deg: float, offset: float, width: float,
                length: float = 9000.0):
    """A straight strip ``width`` pixels wide, ``offset`` pixels from ``(cx, cy)``."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    pts = [(-length, offset), (length, offset), (length, offset + width), (-length, offset + width)]
    return tuple((cx + c * u - s * v, cy + s * u + c * v) for u, v in pts)


def _ir(filt: str, um: float, coarse: bool, footprint) -> HapProduct:
    scale = FINE_ARCSEC * (COARSE_FACTOR if coarse else 1)
    return HapProduct("wfc3", "ir", filt, coarse, Band(um, 0.15, 25.9, 0.0, 0.05 * scale),
                      footprint, exposure=2400.0)


def _optical(inst: str, det: str, filt: str, um: float, footprint, gap) -> HapProduct:
    return HapProduct(inst, det, filt, False, Band(um, 0.08, 26.0, 0.0, 0.002),
                      footprint, gap, exposure=1200.0)


_P2007_IR = _square(3100.0, 2850.0, 1650.0, 20.0)
# The UVIS mosaic overhangs the skycell edge: cutouts there are part NaN.
_P2007_UVIS = _square(2900.0, 3050.0, 2300.0, 35.0)
_P2007_GAP = _band_strip(2900.0, 3050.0, 35.0, 900.0, 40.0)
_P0081_ACS = _square(3000.0, 3000.0, 2300.0, -10.0)
_P0081_GAP = _band_strip(3000.0, 3000.0, -10.0, -1100.0, 50.0)

SKYCELLS: tuple[Skycell, ...] = (
    Skycell("p2007x09y05", (350.9, 28.1), (351.347812, 28.497808), (3100.0, 2850.0), (
        _ir("f160w", 1.54, True, _P2007_IR),
        _ir("f160w", 1.54, False, _P2007_IR),
        _optical("wfc3", "uvis", "f606w", 0.59, _P2007_UVIS, _P2007_GAP),
        _optical("wfc3", "uvis", "f814w", 0.81, _P2007_UVIS, _P2007_GAP),
    )),
    Skycell("p0081x12y15", (84.3, -70.2), (84.920799, -69.851699), (3000.0, 3000.0), (
        _optical("acs", "wfc", "f555w", 0.54, _P0081_ACS, _P0081_GAP),
        _optical("acs", "wfc", "f814w", 0.81, _P0081_ACS, _P0081_GAP),
    )),
)


@lru_cache(maxsize=None)
def _fine_grid(cell: str) -> TanGrid:
    sky = _cell(cell)
    s = FINE_ARCSEC / 3600.0
    xi, eta, _ = tan_project(*sky.tangent, *sky.anchor)
    # Put the tangent point where the anchor lands on anchor_px (RA grows to the left).
    crpix1 = sky.anchor_px[0] + 1.0 + float(xi) / s
    crpix2 = sky.anchor_px[1] + 1.0 - float(eta) / s
    return TanGrid(sky.tangent, (crpix1, crpix2), FINE_ARCSEC, (SKYCELL_PX, SKYCELL_PX))


@lru_cache(maxsize=None)
def product_grid(cell: str, coarse: bool) -> TanGrid:
    """The pixel grid of a skycell at fine (0.04") or coarse (0.12") scale."""
    fine = _fine_grid(cell)
    if not coarse:
        return fine
    k = COARSE_FACTOR
    # Coarse pixel edges coincide with every third fine pixel edge.
    crpix = tuple((c - 0.5) / k + 0.5 for c in fine.crpix)
    return TanGrid(fine.crval, crpix, FINE_ARCSEC * k, (SKYCELL_PX // k, SKYCELL_PX // k))


def _to_grid(points, coarse: bool) -> np.ndarray:
    """Fine 0-based pixel vertices → vertices on the fine or coarse grid."""
    v = np.asarray(points, dtype=float)
    return (v + 0.5) / COARSE_FACTOR - 0.5 if coarse else v


def _cell(name: str) -> Skycell:
    for sky in SKYCELLS:
        if sky.name == name:
            return sky
    raise KeyError(name)


@lru_cache(maxsize=None)
def _cell_sources(cell: str, seed: int) -> SourceList:
    sky = _cell(cell)
    axi, aeta, _ = tan_project(*sky.tangent, *sky.anchor)
    # Sources over the skycell only (6000 × 0.04" = 240" square), plus the anchor star.
    fine = _fine_grid(cell)
    cx, cy = (SKYCELL_PX - 1) / 2.0, (SKYCELL_PX - 1) / 2.0
    s = FINE_ARCSEC / 3600.0
    xi0 = (fine.crpix[0] - 1.0 - cx) * s
    eta0 = (cy - fine.crpix[1] + 1.0) * s
    half = SKYCELL_PX / 2.0 * s
    base = SourceList.generate(cell, seed, half, half, per_arcsec2=0.03,
                               anchors=[(float(axi) - xi0, float(aeta) - eta0, 16.0)])
    return SourceList(base.xi + xi0, base.eta + eta0, base.mag, base.slope, base.size_x,
                      base.size_y)


@lru_cache(maxsize=64)
def _product_sources(cell: str, coarse: bool, seed: int) -> PixelSources:
    return PixelSources.on_grid(_cell_sources(cell, seed), product_grid(cell, coarse))


def hapcut_products_at(ra: float, dec: float) -> list[tuple[Skycell, HapProduct]]:
    """The ``(skycell, product)`` pairs whose footprint contains a position, in zip order."""
    found = []
    for sky in SKYCELLS:
        x, y, ok = _fine_grid(sky.name).world_to_pixel(ra, dec)
        if not bool(ok):
            continue
        for product in sky.products:
            if point_in_polygon(np.array(product.footprint), float(x), float(y)):
                found.append((sky, product))
    return found


def _weight_map(product: HapProduct, xs: np.ndarray, ys: np.ndarray, coarse: bool) -> np.ndarray:
    """A smooth exposure map: dithered overlaps give gentle ripples across the footprint."""
    k = COARSE_FACTOR if coarse else 1
    fx, fy = xs * k, ys * k
    ripple = 0.15 * np.cos(fx / 700.0)[None, :] + 0.1 * np.sin(fy / 500.0)[:, None]
    return product.exposure * k * k * (1.0 + ripple)


def _product_cutout(sky: Skycell, product: HapProduct, ra: float, dec: float, nrows: int,
                    ncols: int, seed: int):
    grid = product_grid(sky.name, product.coarse)
    origin = grid.window(ra, dec, nrows, ncols)
    if origin is None:
        return None
    x0, y0 = origin
    xs, ys = np.arange(x0, x0 + ncols), np.arange(y0, y0 + nrows)
    on_cell = ((xs[None, :] >= 0) & (xs[None, :] < grid.shape[1])
               & (ys[:, None] >= 0) & (ys[:, None] < grid.shape[0]))
    has_data = polygon_mask(_to_grid(product.footprint, product.coarse), xs, ys)
    if product.gap:
        has_data &= ~polygon_mask(_to_grid(product.gap, product.coarse), xs, ys)
    wht = _weight_map(product, xs, ys, product.coarse)
    salt = stable_seed("hapcut", sky.name, product.suffix, seed)
    band = product.band
    sources = _product_sources(sky.name, product.coarse, seed)
    # Noise scales as 1/sqrt(weight), so render the noiseless sky and add scaled noise.
    quiet = Band(band.wavelength_um, band.psf_fwhm_arcsec, band.zeropoint, band.background, 0.0)
    sci = render_window(grid, quiet, sources, salt, x0, y0, nrows, ncols)
    unit_weight = product.exposure * (grid.scale_arcsec / FINE_ARCSEC) ** 2
    sci += band.noise * pixel_noise(salt, xs, ys) * np.sqrt(unit_weight / wht)
    sci[~has_data] = 0.0
    wht[~has_data] = 0.0
    sci[~on_cell] = np.nan
    wht[~on_cell] = np.nan
    return x0, y0, sci.astype(np.float32), wht.astype(np.float32)



def _coordinate(value: float, signed: bool) -> str:
    """``351d3478`` / ``n28d4978``: whole degrees, 'd', the first four decimals (truncated)."""
    text = f"{abs(value):.10f}"
    whole, frac = text.split(".")
    sign = ("s" if value < 0 else "n") if signed else ""
    return f"{sign}{int(whole)}d{frac[:4]}"


def _input_name(sky: Skycell, product: HapProduct) -> str:
    ending = "drz" if product.detector == "ir" else "drc"
    return f"hst_skycell-{sky.name}_{product.suffix}_all_{ending}.fits"


@lru_cache(maxsize=None)
def _primary_template(cell: str, index: int) -> tuple[str, ...]:
    """The input product's primary header (instrument keywords and HISTORY), 748 cards."""
    sky = _cell(cell)
    product = sky.products[index]
    rng = np.random.default_rng(stable_seed("hap-header", cell, product.suffix))
    cards = [
        card("ORIGIN", "HSTDP 2024_3", "FITS file originator"),
        card("DATE", "2024-06-18", "date this file was written (yyyy-mm-dd)"),
        card("NEXTEND", 3, "Number of standard extensions"),
        card("FILETYPE", "SCI", "type of data found in data file"),
        card("TELESCOP", "HST", "telescope used to acquire data"),
        card("INSTRUME", product.instrument.upper(), "identifier for instrument used"),
        card("DETECTOR", product.detector.upper(), "detector in use"),
        card("FILTER", product.filter.upper(), "element selected from filter wheel"),
        card("SKYCELL", sky.name, "skycell of this multi-visit mosaic"),
        card("PROJCELL", int(sky.name[1:5]), "projection cell number"),
        card("PLATESCL", product.scale_arcsec, "[arcsec] pixel scale"),
        card("EXPTIME", product.exposure, "[s] total exposure time"),
        card("BUNIT", "ELECTRONS/S", "brightness units"),
        card("PHOTPLAM", product.band.wavelength_um * 1e4, "[Angstrom] pivot wavelength"),
        card("PHOTZPT", product.band.zeropoint, "[mag] AB zero point"),
        card("DRIZPARS", "hap_mvm", "drizzle parameter set"),
        card("MVMTYPE", "coarse" if product.coarse else "fine", "MVM plate scale"),
    ]
    n_exp = 24
    for i in range(n_exp):
        visit = f"i{rng.integers(0, 36**4):06x}"[:9]
        cards.append(card(f"EXPNM{i:03d}", visit, "input exposure"))
        cards.append(card(f"EXPTM{i:03d}", float(product.exposure / n_exp), "[s] exposure"))
        cards.append(card(f"EXPST{i:03d}", round(55000.0 + 37.0 * i + float(rng.random()), 6),
                          "[MJD] exposure start"))
    lines = [f"Emulated MVM product {_input_name(sky, product)}",
             "Procedural sky served by the mastcut_dask MAST emulator; not real data."]
    # Leave room for the mandatory cards, the 4 a cutout adds, and CHECKSUM/DATASUM.
    target = _PRIMARY_CARDS - 4 - 4 - 2 - len(cards)
    while len(lines) < target:
        lines.append(f"drizzle step {len(lines):03d}: pixfrac=1.0 kernel=square "
                     f"wht_type=EXP fillval=0")
    cards += [card("HISTORY", line) for line in lines[:target]]
    return tuple(cards)


@lru_cache(maxsize=None)
def _ext_template(cell: str, index: int, extname: str) -> tuple[str, ...]:
    """The constant cards of a SCI or WHT header (after the WCS), padded to the real sizes."""
    product = _cell(cell).products[index]
    target = (_SCI_CARDS if extname == "SCI" else _WHT_CARDS) - 7 - 26 - 4 - 2
    cards = [card("BUNIT", "ELECTRONS/S" if extname == "SCI" else "UNITLESS", "units"),
             card("INHERIT", True, "inherit the primary header")]
    if extname == "SCI":
        cards += [card("PHOTMODE", f"{product.instrument.upper()} {product.detector.upper()} "
                                   f"{product.filter.upper()}", "observation configuration"),
                  card("PHOTFLAM", 1.5e-20, "inverse sensitivity, ergs/cm2/A/e-"),
                  card("PHOTPLAM", product.band.wavelength_um * 1e4, "pivot wavelength (A)"),
                  card("PHOTBW", 650.0, "RMS bandwidth of filter plus detector")]
    i = 0
    while len(cards) < target:
        cards.append(card(f"D{i:03d}VER", "WCS Version 1.0", "drizzle, task version"))
        i += 1
    return tuple(cards[:target])


def _fits_product(sky: Skycell, index: int, name: str, ra: float, dec: float, x0: int, y0: int,
                  sci: np.ndarray, wht: np.ndarray) -> bytes:
    product = sky.products[index]
    input_name = _input_name(sky, product)
    primary = [*_primary_template(sky.name, index),
               card("RA_OBJ", ra, "[deg] right ascension"),
               card("DEC_OBJ", dec, "[deg] declination"),
               card("FILENAME", name, "name of file"),
               card("HISTORY", input_name)]
    wcs = product_grid(sky.name, product.coarse).wcs_cards(x0, y0)
    extensions = []
    for ext, (extname, data) in enumerate((("SCI", sci), ("WHT", wht)), start=1):
        cards = [*wcs, *_ext_template(sky.name, index, extname),
                 card("EXTNAME", extname, "extension name"),
                 card("O_EXT_NM", extname, "Original extension name"),
                 card("ORIG_FLE", input_name, "Original image"),
                 card("ORIG_EXT", ext, "Original extension number")]
        extensions.append((cards, data))
    return fits_file(primary, extensions, checksum=True)


def hapcut_cutout_files(ra, dec, x, y, units, *, seed=0) -> list[tuple[str, bytes]]:
    """The files of a HAPCut ``astrocut`` request, as ``(name, bytes)`` in zip order.

    Parameters
    ----------
    ra, dec : float or str
        Centre in degrees.
    x, y : float or str
        Cutout size in ``units``. HAPCut quirk: ``x`` is the number of **rows** and ``y`` the
        number of columns (``x=3, y=2`` → SCI shape ``(3, 2)``).
    units : str
        ``"px"`` or ``"d"`` (degrees, converted with each product's pixel scale).
    seed : int, optional
        Sky seed.

    Returns
    -------
    list of (str, bytes)
        One FITS file per product covering the position; empty when none does.

    Raises
    ------
    BadRequest
        Bad position, units or size (non-finite, <= 0, more than 10,000 pixels).
    """
    ra_f, dec_f = parse_position(ra, dec)
    unit = parse_units(units)
    positive_size("x", x)
    positive_size("y", y)
    ra_w = ra_f % 360.0
    found = hapcut_products_at(ra_w, dec_f)
    shapes = []
    for _, product in found:
        nrows = size_to_pixels(x, unit, product.scale_arcsec, "x")
        ncols = size_to_pixels(y, unit, product.scale_arcsec, "y")
        check_area(nrows, ncols)
        shapes.append((nrows, ncols))
    # Names use the position as a SkyCoord holds it: RA wrapped into [0, 360).
    position = f"ra{_coordinate(ra_w, False)}-dec{_coordinate(dec_f, True)}"
    files = []
    for (sky, product), (nrows, ncols) in zip(found, shapes):
        cut = _product_cutout(sky, product, ra_w, dec_f, nrows, ncols, seed)
        if cut is None:
            continue
        x0, y0, sci, wht = cut
        name = f"hst_cutout_skycell-{sky.name}-{position}_{product.suffix}.fits"
        files.append((name, _fits_product(sky, sky.products.index(product), name, ra_f, dec_f,
                                          x0, y0, sci, wht)))
    logger.debug("hapcut %s %s x %s %s: %d files", position, x, y, unit, len(files))
    return files
