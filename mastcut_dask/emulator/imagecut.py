"""Shared machinery for the emulator's image cutouts (ZCut and HAPCut).

Everything here is deterministic and a pure function of its arguments:

* :class:`TanGrid` is a north-up gnomonic (``RA---TAN``/``DEC--TAN``) pixel grid: the full
  mosaic a survey image or HAP product would be drizzled onto. It is never materialised; a
  cutout renders only the pixels it covers.
* :class:`SourceList` holds the sources of one field as offsets ``(xi, eta)`` in degrees on the
  field's tangent plane, so every grid sharing that tangent point sees the same sky.
* :func:`render_window` paints a window of a grid: background, hash-based Gaussian noise (a
  function of the *global* pixel index, so overlapping cutouts agree), and Gaussian sources
  truncated at a fixed radius (so a pixel's value does not depend on which window asked).
* :meth:`TanGrid.wcs_cards` gives a cutout's WCS as card images for
  :func:`.fitsbytes.fits_file`, which writes the FITS bytes (building astropy ``Header``
  objects of hundreds of cards per request costs tens of milliseconds).
* :func:`encode_image` turns a cutout into an 8-bit JPG/PNG with astrocut's normalisation.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .constants import (DEFAULT_MINMAX_PERCENT, FALSE_WORDS, MAX_CUTOUT_PIXELS, SIZE_UNITS, STRETCHES,
                        TRUE_WORDS)
from .errors import BadRequest
from .fitsbytes import card
from .splitmix import splitmix64

__all__ = [
    "TanGrid",
    "SourceList",
    "ImageParams",
    "parse_image_params",
    "size_to_pixels",
    "parse_units",
    "positive_size",
    "tan_project",
    "render_window",
    "polygon_mask",
    "encode_image",
]

_U64 = np.uint64


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------

def tan_project(ra0: float, dec0: float, ra, dec):
    """Gnomonic projection of ``(ra, dec)`` (deg) about ``(ra0, dec0)``.

    Returns ``(xi, eta)`` in degrees on the tangent plane (xi grows to the east) and a boolean
    that is False for points on the far hemisphere, where the projection is undefined.
    """
    a0, d0 = math.radians(ra0), math.radians(dec0)
    a, d = np.radians(np.asarray(ra, dtype=float)), np.radians(np.asarray(dec, dtype=float))
    cos_c = math.sin(d0) * np.sin(d) + math.cos(d0) * np.cos(d) * np.cos(a - a0)
    ok = cos_c > 1e-6
    safe = np.where(ok, cos_c, 1.0)
    xi = np.cos(d) * np.sin(a - a0) / safe
    eta = (math.cos(d0) * np.sin(d) - math.sin(d0) * np.cos(d) * np.cos(a - a0)) / safe
    return np.degrees(xi), np.degrees(eta), ok


def tan_deproject(ra0: float, dec0: float, xi, eta):
    """Inverse of :func:`tan_project`: tangent-plane offsets (deg) → ``(ra, dec)`` (deg)."""
    a0, d0 = math.radians(ra0), math.radians(dec0)
    x, y = np.radians(np.asarray(xi, dtype=float)), np.radians(np.asarray(eta, dtype=float))
    denom = math.cos(d0) - y * math.sin(d0)
    ra = a0 + np.arctan2(x, denom)
    dec = np.arctan2(math.sin(d0) + y * math.cos(d0), np.hypot(x, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


@dataclass(frozen=True)
class TanGrid:
    """A north-up TAN pixel grid: ``CD = diag(-scale, +scale)``.

    Parameters
    ----------
    crval : tuple of float
        Tangent point (RA, Dec) in degrees.
    crpix : tuple of float
        FITS (1-based) pixel of the tangent point; may lie far outside the array.
    scale_arcsec : float
        Pixel size in arcseconds.
    shape : tuple of int
        ``(ny, nx)`` of the full (virtual) image; pixels outside it are off the image (NaN).
    """

    crval: tuple[float, float]
    crpix: tuple[float, float]
    scale_arcsec: float
    shape: tuple[int, int]

    @property
    def scale_deg(self) -> float:
        return self.scale_arcsec / 3600.0

    def plane_to_pixel(self, xi, eta):
        """Tangent-plane offsets (deg) → 0-based pixel ``(x, y)``; RA grows to the left."""
        s = self.scale_deg
        return self.crpix[0] - 1.0 - np.asarray(xi) / s, self.crpix[1] - 1.0 + np.asarray(eta) / s

    def world_to_pixel(self, ra, dec):
        """``(ra, dec)`` (deg) → 0-based pixel ``(x, y)`` and the on-hemisphere flag."""
        xi, eta, ok = tan_project(self.crval[0], self.crval[1], ra, dec)
        x, y = self.plane_to_pixel(xi, eta)
        return x, y, ok

    def pixel_to_world(self, x, y):
        """0-based pixel ``(x, y)`` → ``(ra, dec)`` (deg)."""
        s = self.scale_deg
        xi = (self.crpix[0] - 1.0 - np.asarray(x, dtype=float)) * s
        eta = (np.asarray(y, dtype=float) - self.crpix[1] + 1.0) * s
        return tan_deproject(self.crval[0], self.crval[1], xi, eta)

    def window(self, ra: float, dec: float, ny: int, nx: int) -> tuple[int, int] | None:
        """Lower-left 0-based pixel ``(x0, y0)`` of an ``ny × nx`` window centred on a position.

        The window is the block of whole pixels whose centre is nearest the requested position
        (as astrocut does: cutouts are never resampled). None when the position is on the far
        side of the sky from the tangent point.
        """
        x, y, ok = self.world_to_pixel(ra, dec)
        if not bool(ok):
            return None
        x0 = math.floor(float(x) - (nx - 1) / 2.0 + 0.5)
        y0 = math.floor(float(y) - (ny - 1) / 2.0 + 0.5)
        return x0, y0

    def wcs_cards(self, x0: int, y0: int) -> list[str]:
        """The WCS cards of a cutout whose first pixel is global ``(x0, y0)``.

        Written as astrocut does: the original ``CDi_j`` plus ``PCi_j`` with ``CDELTi = 1``
        (they agree), CRPIX shifted by the cutout origin.
        """
        s = self.scale_deg
        return [
            card("WCSAXES", 2, "number of World Coordinate System axes"),
            card("CTYPE1", "RA---TAN", "Right ascension, gnomonic projection"),
            card("CTYPE2", "DEC--TAN", "Declination, gnomonic projection"),
            card("CRVAL1", float(self.crval[0]), "[deg] RA at the reference pixel"),
            card("CRVAL2", float(self.crval[1]), "[deg] Dec at the reference pixel"),
            card("CRPIX1", float(self.crpix[0] - x0), "reference pixel along axis 1"),
            card("CRPIX2", float(self.crpix[1] - y0), "reference pixel along axis 2"),
            card("CDELT1", 1.0),
            card("CDELT2", 1.0),
            card("CD1_1", -s, "partial of RA w.r.t. x"),
            card("CD1_2", 0.0, "partial of RA w.r.t. y"),
            card("CD2_1", 0.0, "partial of Dec w.r.t. x"),
            card("CD2_2", s, "partial of Dec w.r.t. y"),
            card("PC1_1", -s),
            card("PC1_2", 0.0),
            card("PC2_1", 0.0),
            card("PC2_2", s),
            card("CUNIT1", "deg"),
            card("CUNIT2", "deg"),
            card("LONPOLE", 180.0),
            card("LATPOLE", float(self.crval[1])),
            card("RADESYS", "ICRS"),
            card("LTV1", float(-x0), "offset in X to subsection start"),
            card("LTV2", float(-y0), "offset in Y to subsection start"),
            card("LTM1_1", 1.0, "reciprocal of sampling rate in X"),
            card("LTM2_2", 1.0, "reciprocal of sampling rate in Y"),
        ]


def polygon_mask(vertices: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Which pixel centres ``(ys[:, None], xs[None, :])`` lie inside a convex polygon.

    ``vertices`` is an ``(n, 2)`` array of ``(x, y)`` in either winding order.
    """
    v = np.asarray(vertices, dtype=float)
    inside_pos = np.ones((ys.size, xs.size), dtype=bool)
    inside_neg = np.ones_like(inside_pos)
    for (xa, ya), (xb, yb) in zip(v, np.roll(v, -1, axis=0)):
        cross = (xb - xa) * (ys[:, None] - ya) - (yb - ya) * (xs[None, :] - xa)
        inside_pos &= cross >= 0
        inside_neg &= cross <= 0
    return inside_pos | inside_neg


def point_in_polygon(vertices: np.ndarray, x: float, y: float) -> bool:
    """True when ``(x, y)`` lies inside (or on) a convex polygon."""
    return bool(polygon_mask(vertices, np.array([x]), np.array([y]))[0, 0])


def distance_to_polygon(vertices: np.ndarray, x: float, y: float) -> float:
    """Euclidean distance from a point to a convex polygon (0 inside), in the vertices' units."""
    if point_in_polygon(vertices, x, y):
        return 0.0
    v = np.asarray(vertices, dtype=float)
    best = math.inf
    for (xa, ya), (xb, yb) in zip(v, np.roll(v, -1, axis=0)):
        dx, dy = xb - xa, yb - ya
        t = ((x - xa) * dx + (y - ya) * dy) / max(dx * dx + dy * dy, 1e-300)
        t = min(1.0, max(0.0, t))
        best = min(best, math.hypot(x - (xa + t * dx), y - (ya + t * dy)))
    return best


# --------------------------------------------------------------------------------------------
# Sizes and image parameters (untrusted wire values)
# --------------------------------------------------------------------------------------------

def parse_position(ra, dec) -> tuple[float, float]:
    """``(ra, dec)`` as floats from wire values; not numbers, not finite or |dec| > 90 → BadRequest."""
    try:
        ra_f, dec_f = float(ra), float(dec)
    except (TypeError, ValueError):
        raise BadRequest(f"ra and dec must be numbers, not {ra!r}, {dec!r}") from None
    if not (math.isfinite(ra_f) and math.isfinite(dec_f)) or abs(dec_f) > 90.0:
        raise BadRequest(f"invalid position ra={ra!r}, dec={dec!r}")
    return ra_f, dec_f


def parse_units(units) -> str:
    """``"px"`` or ``"d"``; anything else is a :class:`BadRequest`."""
    text = "px" if units is None else str(units).strip().lower()
    if text not in SIZE_UNITS:
        raise BadRequest(f"units must be 'px' or 'd', not {units!r}")
    return text


def positive_size(name: str, value) -> float:
    """A size as a finite float > 0, or :class:`BadRequest`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise BadRequest(f"{name} must be a finite number > 0, not {value!r}")
    return number


def size_to_pixels(value, units: str, scale_arcsec: float, name: str) -> int:
    """One cutout side in whole pixels: pixel sizes round, angular sizes use the grid's scale."""
    number = positive_size(name, value)
    if units == "d":
        number = number * 3600.0 / scale_arcsec
    if number > MAX_CUTOUT_PIXELS:
        raise BadRequest(f"{name}={value} {units} is more than {MAX_CUTOUT_PIXELS} pixels")
    return max(1, int(math.floor(number + 0.5)))


def check_area(ny: int, nx: int) -> None:
    """Refuse cutouts larger than :data:`MAX_CUTOUT_PIXELS` in all, as MAST does."""
    if ny * nx > MAX_CUTOUT_PIXELS:
        raise BadRequest(f"cutout of {nx} x {ny} pixels exceeds the limit of "
                         f"{MAX_CUTOUT_PIXELS} pixels")


def size_label(value, units: str) -> str:
    """The size as astrocut writes it into file names: ``10.0pix`` or ``0.001deg``."""
    number = float(value)
    return f"{number:.1f}pix" if units == "px" else f"{number:.6g}deg"


@dataclass(frozen=True)
class ImageParams:
    """Validated JPG/PNG rendering options (astrocut ``img_cut`` semantics)."""

    stretch: str = "asinh"
    minmax_percent: tuple[float, float] | None = None
    minmax_value: tuple[float, float] | None = None
    invert: bool = False


def _pair(name: str, value) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().strip("[]()").strip()
        if not text:
            return None
        parts = [p for p in text.replace(",", " ").split() if p]
    else:
        parts = list(value)
    if len(parts) != 2:
        raise BadRequest(f"{name} must be two numbers like [0.5, 99.5], not {value!r}")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be two numbers like [0.5, 99.5], not {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise BadRequest(f"{name} needs finite values with low < high, not {value!r}")
    return lo, hi


def _flag(name: str, value) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise BadRequest(f"{name} must be True or False, not {value!r}")


def parse_image_params(stretch=None, minmax_percent=None, minmax_value=None,
                       invert=False) -> ImageParams:
    """Validate JPG/PNG options given as Python values or as their wire strings.

    Parameters
    ----------
    stretch : str, optional
        ``asinh`` (default), ``sinh``, ``sqrt``, ``log`` or ``linear``.
    minmax_percent, minmax_value : str or sequence of two floats, optional
        ``"[0.5, 99.5]"``, ``"0.5,99.5"`` or ``(0.5, 99.5)``. Percentiles must lie in [0, 100].
    invert : bool or str, optional
        ``True``/``False`` or their strings.

    Returns
    -------
    ImageParams

    Raises
    ------
    BadRequest
        For an unknown stretch or malformed numbers.
    """
    name = str(stretch).strip().lower() if stretch is not None else ""
    name = name or "asinh"
    if name not in STRETCHES:
        raise BadRequest(f"stretch must be one of {', '.join(STRETCHES)}, not {stretch!r}")
    percent = _pair("minmax_percent", minmax_percent)
    if percent is not None and not (0.0 <= percent[0] and percent[1] <= 100.0):
        raise BadRequest(f"minmax_percent must lie within [0, 100], not {minmax_percent!r}")
    value = _pair("minmax_value", minmax_value)
    return ImageParams(name, percent, value, _flag("invert", invert))


# --------------------------------------------------------------------------------------------
# The sky: sources and pixels
# --------------------------------------------------------------------------------------------

def stable_seed(*parts) -> int:
    """A 64-bit integer from any printable parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class SourceList:
    """Sources of one field on its tangent plane.

    Attributes are parallel arrays: ``xi``, ``eta`` (deg), ``mag`` (AB-like magnitude at 1 µm),
    ``slope`` (magnitude change per factor 2 in wavelength), ``size_x``, ``size_y`` (intrinsic
    Gaussian sigmas in arcsec along RA and Dec; 0 for stars).
    """

    xi: np.ndarray
    eta: np.ndarray
    mag: np.ndarray
    slope: np.ndarray
    size_x: np.ndarray
    size_y: np.ndarray

    @classmethod
    def generate(cls, key: str, seed: int, half_width_deg: float, half_height_deg: float,
                 per_arcsec2: float, anchors: Sequence[tuple[float, float, float]] = ()):
        """Draw a field's sources; ``anchors`` are bright stars at fixed ``(xi, eta, mag)``."""
        rng = np.random.default_rng([stable_seed("sources", key), seed & 0xFFFFFFFF])
        area = (2 * half_width_deg * 3600.0) * (2 * half_height_deg * 3600.0)
        n = int(rng.poisson(per_arcsec2 * area))
        xi = rng.uniform(-half_width_deg, half_width_deg, n)
        eta = rng.uniform(-half_height_deg, half_height_deg, n)
        # Steep number counts: many faint galaxies, few bright ones.
        mag = 28.5 - 2.5 * np.log10(1.0 + 200.0 * rng.pareto(1.5, n))
        mag = np.clip(mag, 18.0, 29.0)
        is_star = rng.random(n) < 0.05
        radius = np.where(is_star, 0.0, rng.lognormal(math.log(0.25), 0.5, n))
        axis = rng.uniform(0.3, 1.0, n)
        along_ra = rng.random(n) < 0.5
        size_x = np.where(along_ra, radius, radius * axis)
        size_y = np.where(along_ra, radius * axis, radius)
        slope = np.where(is_star, rng.normal(0.4, 0.3, n), rng.normal(-0.3, 0.4, n))
        if anchors:
            a = np.asarray(anchors, dtype=float)
            # Anchors are isolated standard stars: nothing else within 4 arcsec.
            clear = np.ones(n, dtype=bool)
            for axi, aeta, _ in a:
                clear &= np.hypot(xi - axi, eta - aeta) * 3600.0 > 4.0
            xi, eta, mag, slope = xi[clear], eta[clear], mag[clear], slope[clear]
            size_x, size_y = size_x[clear], size_y[clear]
            xi, eta, mag = (np.concatenate([a[:, 0], xi]), np.concatenate([a[:, 1], eta]),
                            np.concatenate([a[:, 2], mag]))
            zeros = np.zeros(len(a))
            slope = np.concatenate([zeros, slope])
            size_x, size_y = np.concatenate([zeros, size_x]), np.concatenate([zeros, size_y])
        return cls(xi, eta, mag, slope, size_x, size_y)


@dataclass(frozen=True)
class Band:
    """How one image sees the sky: PSF, photometric zero point, background and noise."""

    wavelength_um: float
    psf_fwhm_arcsec: float
    zeropoint: float
    background: float
    noise: float


def pixel_noise(salt: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Standard-normal noise that depends only on ``salt`` and the global pixel index."""
    with np.errstate(over="ignore"):
        gx = (xs.astype(np.int64) & 0xFFFFFFFF).astype(_U64)
        gy = (ys.astype(np.int64) & 0xFFFFFFFF).astype(_U64)
        h = splitmix64((gy[:, None] << _U64(32)) ^ gx[None, :] ^ _U64(salt))
    u1 = ((h >> _U64(32)).astype(np.float64) + 0.5) * 2.0 ** -32
    u2 = ((h & _U64(0xFFFFFFFF)).astype(np.float64) + 0.5) * 2.0 ** -32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@dataclass(frozen=True)
class PixelSources:
    """A field's sources placed on one grid: pixel positions plus intrinsic sizes in pixels."""

    x: np.ndarray
    y: np.ndarray
    mag: np.ndarray
    slope: np.ndarray
    size_x: np.ndarray
    size_y: np.ndarray

    @classmethod
    def on_grid(cls, sources: SourceList, grid: TanGrid) -> "PixelSources":
        x, y = grid.plane_to_pixel(sources.xi, sources.eta)
        arrays = [np.asarray(x), np.asarray(y), sources.mag, sources.slope,
                  sources.size_x / grid.scale_arcsec, sources.size_y / grid.scale_arcsec]
        for a in arrays:
            a.flags.writeable = False   # cached and shared between request threads
        return cls(*arrays)


_SIGMA_PER_FWHM = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_TRUNCATE_SIGMA = 5.0


def render_window(grid: TanGrid, band: Band, sources: PixelSources, salt: int,
                  x0: int, y0: int, ny: int, nx: int) -> np.ndarray:
    """Pixel values (float64, ``(ny, nx)``) of a window of a grid, before any footprint mask.

    Each pixel depends only on the grid, band, sources, salt and its global index: sources are
    separable Gaussians cut to zero beyond a fixed radius, so every window that contains a pixel
    sums exactly the same non-zero terms for it.
    """
    xs = np.arange(x0, x0 + nx)
    ys = np.arange(y0, y0 + ny)
    if band.noise > 0:
        image = band.background + band.noise * pixel_noise(salt, xs, ys)
    else:
        image = np.full((ny, nx), float(band.background))
    psf = band.psf_fwhm_arcsec * _SIGMA_PER_FWHM / grid.scale_arcsec
    sig_x = np.hypot(sources.size_x, psf)
    sig_y = np.hypot(sources.size_y, psf)
    reach = np.ceil(_TRUNCATE_SIGMA * np.maximum(sig_x, sig_y))
    near = ((sources.x + reach >= x0) & (sources.x - reach <= x0 + nx - 1)
            & (sources.y + reach >= y0) & (sources.y - reach <= y0 + ny - 1))
    if np.any(near):
        sx, sy, r = sources.x[near], sources.y[near], reach[near]
        gx_sig, gy_sig = sig_x[near], sig_y[near]
        mag = sources.mag[near] + sources.slope[near] * math.log2(band.wavelength_um)
        flux = 10.0 ** (-0.4 * (mag - band.zeropoint))
        amp = flux / (2.0 * math.pi * gx_sig * gy_sig)
        dx = xs[None, :] - sx[:, None]
        dy = ys[None, :] - sy[:, None]
        gx = np.exp(-0.5 * (dx / gx_sig[:, None]) ** 2) * (np.abs(dx) <= r[:, None])
        gy = np.exp(-0.5 * (dy / gy_sig[:, None]) ** 2) * (np.abs(dy) <= r[:, None])
        image += (gy * amp[:, None]).T @ gx
    return image


# --------------------------------------------------------------------------------------------
# JPG / PNG
# --------------------------------------------------------------------------------------------

def _stretch(name: str, v: np.ndarray) -> np.ndarray:
    # The astropy.visualization defaults, which astrocut uses.
    if name == "asinh":
        a = 0.1
        return np.arcsinh(v / a) / math.asinh(1.0 / a)
    if name == "sinh":
        a = 1.0 / 3.0
        return np.sinh(v / a) / math.sinh(1.0 / a)
    if name == "sqrt":
        return np.sqrt(v)
    if name == "log":
        a = 1000.0
        return np.log1p(a * v) / math.log1p(a)
    return v


def normalise(data: np.ndarray, params: ImageParams) -> np.ndarray:
    """astrocut's ``normalize_img``: interval, stretch, scale to 0–255, invert; NaN → 0.

    The interval is ``minmax_percent`` when given, else ``minmax_value``, else the default
    0.5–99.5 percentiles of the finite pixels. Values are clipped to it and mapped to [0, 1]
    before the stretch; the result is truncated to 8 bits. NaN pixels are 0 whatever ``invert``.
    """
    finite = np.isfinite(data)
    if params.minmax_percent is not None or params.minmax_value is None:
        lo_p, hi_p = params.minmax_percent or DEFAULT_MINMAX_PERCENT
        if finite.any():
            lo, hi = np.percentile(data[finite], [lo_p, hi_p])
        else:
            lo, hi = 0.0, 1.0
    else:
        lo, hi = params.minmax_value
    span = float(hi) - float(lo)
    if span > 0:
        scaled = np.clip((np.where(finite, data, lo) - lo) / span, 0.0, 1.0)
    else:
        scaled = np.zeros(data.shape)
    out = np.floor(np.clip(_stretch(params.stretch, scaled), 0.0, 1.0) * 255.0).astype(np.uint8)
    if params.invert:
        out = 255 - out
    out[~finite] = 0
    return out


def encode_image(data: np.ndarray, fmt: str, params: ImageParams) -> bytes:
    """An 8-bit greyscale JPG or PNG of a cutout, row 0 of the image = row 0 of the FITS data.

    Like the 2020 ZCut service (astrocut 0.6) the rows are *not* flipped, so a north-up cutout
    shown naively appears upside down.
    """
    from PIL import Image

    # A 2-D uint8 array becomes a mode "L" (8-bit greyscale) image.
    image = Image.fromarray(normalise(np.asarray(data, dtype=np.float64), params))
    buf = io.BytesIO()
    image.save(buf, format="JPEG" if fmt == "jpg" else "PNG")
    return buf.getvalue()
