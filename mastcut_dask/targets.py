"""User input → plain records: cutout sizes, sky positions, targets and cutout requests.

Nothing here touches the network. Sizes are parsed exactly as astroquery 0.4.11's
``_parse_cutout_size`` does, then checked more strictly (zero, negative, non-finite and
oversized cutouts are refused before any request is sent). Positions become plain
``(ra, dec)`` floats in ICRS degrees so that they pickle cheaply to Dask workers.
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .exceptions import InputWarning, InvalidQueryError

__all__ = [
    "TESS_PIXEL_ARCSEC",
    "MAX_CUTOUT_PIXELS",
    "CutoutSize",
    "Target",
    "CutoutRequest",
    "parse_size",
    "parse_coordinates",
    "parse_radius",
    "make_target_id",
]

#: Angular size of one TESS pixel, used to bound angular cutout sizes for TESSCut.
TESS_PIXEL_ARCSEC = 21.0
#: MAST refuses (or times out on) cutouts larger than this many pixels.
MAX_CUTOUT_PIXELS = 10_000

_SIZE_UNIT_ERROR = "Cutout size must be in pixels or angular quantity."


@dataclass(frozen=True)
class CutoutSize:
    """A parsed cutout size, as it goes on the wire.

    Attributes
    ----------
    x, y : int or float
        Extent along x (columns) and y (rows); in pixels when ``units == "px"``, in degrees
        when ``units == "d"``. Ints stay ints so that ``size=5`` is sent as ``5``, like astroquery.
    units : str
        ``"px"`` or ``"d"``.
    """

    x: float
    y: float
    units: str = "px"

    def wire(self) -> dict[str, Any]:
        """The ``x``, ``y``, ``units`` parameters in astroquery's order."""
        return {"x": self.x, "y": self.y, "units": self.units}

    def pixels(self, pixel_arcsec: float | None = TESS_PIXEL_ARCSEC) -> tuple[float, float] | None:
        """The size in pixels ``(nx, ny)``; None when angular and no pixel scale is known."""
        if self.units == "px":
            return float(self.x), float(self.y)
        if not pixel_arcsec:
            return None
        return self.x * 3600.0 / pixel_arcsec, self.y * 3600.0 / pixel_arcsec


def _is_plain_number(value: Any) -> bool:
    return isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (bool, np.bool_))


def _plain(value: Any) -> int | float:
    """numpy scalars → Python int/float, so that the record pickles small and prints as astroquery."""
    if isinstance(value, (numbers.Integral, np.integer)):
        return int(value)
    return float(value)


def _element(value: Any, units_hint: str | None) -> tuple[float, str]:
    """One size element → (value, "px" | "d")."""
    from astropy import units as u

    if isinstance(value, u.Quantity):
        if value.unit == u.pixel:
            return _plain(value.value), "px"
        if value.unit.physical_type == "angle":
            return float(value.to_value(u.deg)), "d"
        raise InvalidQueryError(_SIZE_UNIT_ERROR)
    if _is_plain_number(value):
        if units_hint is None or units_hint == "px":
            return _plain(value), "px"
        # A plain number with an explicit angular unit, e.g. units="arcmin".
        return float((value * u.Unit(units_hint)).to_value(u.deg)), "d"
    raise InvalidQueryError(f"Cutout size must be a number or a Quantity, got {value!r}.")


def _units_hint(units: str | None) -> str | None:
    """Validate the ``units=`` keyword (accepted as in the seed document's ``units="px"``)."""
    from astropy import units as u

    if units is None:
        return None
    text = str(units).strip().lower()
    if text in ("px", "pix", "pixel", "pixels"):
        return "px"
    if text == "d":
        return "deg"
    try:
        unit = u.Unit(text)
    except ValueError:
        unit = None
    if unit is None or unit.physical_type != "angle":
        raise InvalidQueryError(
            f"Unknown size units {units!r}: use 'px' for pixels or an angular unit such as 'd', 'arcsec' or 'arcmin'."
        )
    return text


def parse_size(size: Any = 5, *, units: str | None = None,
               pixel_arcsec: float | None = TESS_PIXEL_ARCSEC,
               max_pixels: int = MAX_CUTOUT_PIXELS) -> CutoutSize:
    """Parse a cutout size as astroquery does, then refuse sizes MAST cannot serve.

    Parameters
    ----------
    size : int, float, array-like or `~astropy.units.Quantity`
        A scalar gives a square; two elements are ``(ny, nx)``; more than two elements warn
        (`InputWarning`) and only the first two are used. Plain numbers are pixels;
        Quantities must be in pixels or an angle (converted to degrees).
    units : str, optional
        Unit of plain numbers: ``"px"`` (default) or an angular unit (``"d"``, ``"arcmin"`` ...).
    pixel_arcsec : float or None
        Pixel scale used to bound angular sizes (TESS: 21″); None skips that bound.
    max_pixels : int
        Largest cutout area in pixels.

    Returns
    -------
    CutoutSize

    Raises
    ------
    InvalidQueryError
        Bad unit ("Cutout size must be in pixels or angular quantity."), a zero, negative or
        non-finite extent, or a cutout of more than ``max_pixels`` pixels.
    """
    from astropy import units as u

    hint = _units_hint(units)
    if isinstance(size, (str, bytes)) or size is None or isinstance(size, (bool, np.bool_)):
        raise InvalidQueryError(f"Cutout size must be a number, a pair (ny, nx) or a Quantity, got {size!r}.")
    if isinstance(size, u.Quantity):
        size = np.atleast_1d(size)
        if len(size) == 1:
            size = np.repeat(size, 2)
    elif np.isscalar(size):
        size = [size, size]
    try:
        n = len(size)
    except TypeError:
        raise InvalidQueryError(f"Cutout size must be a number, a pair (ny, nx) or a Quantity, got {size!r}.") from None
    if n == 0:
        raise InvalidQueryError("Cutout size is empty: give one number or a pair (ny, nx).")
    if n == 1:
        size = [size[0], size[0]]
    if n > 2:
        warnings.warn("Too many dimensions in cutout size, only the first two will be used.", InputWarning,
                      stacklevel=2)
    y, y_units = _element(size[0], hint)
    x, x_units = _element(size[1], hint)
    if x_units != y_units:
        raise InvalidQueryError("Both cutout size elements must be in the same kind of unit (pixels or angle).")
    for name, value in (("ny", y), ("nx", x)):
        if not math.isfinite(value) or value <= 0:
            raise InvalidQueryError(f"Cutout size {name}={value} must be a positive, finite number.")
    result = CutoutSize(x=x, y=y, units=x_units)
    pix = result.pixels(pixel_arcsec)
    if pix is not None and pix[0] * pix[1] > max_pixels:
        raise InvalidQueryError(
            f"Cutout of {pix[0]:.0f} x {pix[1]:.0f} pixels exceeds MAST's limit of {max_pixels} pixels; "
            "ask for a smaller size."
        )
    return result


_COMMA_PAIR = re.compile(r"^\s*([-+]?[\d.eE+-]+)\s*[, ]\s*([-+]?[\d.eE+-]+)\s*$")


def _check_radec(ra: float, dec: float, given: Any) -> tuple[float, float]:
    if not (math.isfinite(ra) and math.isfinite(dec)):
        raise InvalidQueryError(f"Coordinates {given!r} are not finite numbers.")
    if not -90.0 <= dec <= 90.0:
        raise InvalidQueryError(f"Declination {dec} of {given!r} is outside [-90, 90] degrees.")
    return ra % 360.0, dec


def parse_coordinates(coordinates: Any, *, warn: bool = True) -> tuple[float, float]:
    """A sky position → ``(ra, dec)`` in ICRS degrees.

    Parameters
    ----------
    coordinates : SkyCoord, str or (ra, dec)
        A `~astropy.coordinates.SkyCoord` (or frame) in any frame; a string astropy parses
        (``"10.68 41.27"``, ``"00h42m44s +41d16m09s"``; numbers alone are degrees);
        ``"ra, dec"``; or a pair of numbers in degrees.
    warn : bool
        Strings give astroquery's `InputWarning` ("Coordinate string is being interpreted as
        an ICRS coordinate...") when True.

    Returns
    -------
    tuple of float

    Raises
    ------
    InvalidQueryError
        When the value is not a position (names are never looked up here; use ``objectname``).
    """
    from astropy import units as u
    from astropy.coordinates import BaseCoordinateFrame, SkyCoord

    if isinstance(coordinates, (SkyCoord, BaseCoordinateFrame)):
        sc = coordinates if isinstance(coordinates, SkyCoord) else SkyCoord(coordinates)
        if not sc.isscalar:
            raise InvalidQueryError("coordinates must be a single position, not an array of positions.")
        icrs = sc.icrs
        return _check_radec(float(icrs.ra.deg), float(icrs.dec.deg), coordinates)
    if isinstance(coordinates, str):
        text = coordinates.strip()
        if not text:
            raise InvalidQueryError("coordinates is an empty string: give 'ra dec' in degrees or a SkyCoord.")
        m = _COMMA_PAIR.match(text)
        try:
            if m:
                sc = SkyCoord(float(m.group(1)), float(m.group(2)), unit="deg", frame="icrs")
                message = "Coordinate string is being interpreted as an ICRS coordinate provided in degrees."
            else:
                sc = SkyCoord(text, frame="icrs")
                message = "Coordinate string is being interpreted as an ICRS coordinate."
        except (ValueError, u.UnitsError, TypeError):
            try:
                sc = SkyCoord(text, unit="deg", frame="icrs")
                message = "Coordinate string is being interpreted as an ICRS coordinate provided in degrees."
            except (ValueError, u.UnitsError, TypeError):
                raise InvalidQueryError(
                    f"Cannot read {coordinates!r} as a sky position; give 'ra dec' in degrees, a sexagesimal "
                    "string, a SkyCoord, or pass the name as objectname=."
                ) from None
        if warn:
            warnings.warn(message, InputWarning, stacklevel=2)
        return _check_radec(float(sc.ra.deg), float(sc.dec.deg), coordinates)
    if isinstance(coordinates, (tuple, list, np.ndarray)) and len(coordinates) == 2:
        ra, dec = coordinates
        if isinstance(ra, u.Quantity) or isinstance(dec, u.Quantity):
            try:
                ra = u.Quantity(ra, u.deg).value
                dec = u.Quantity(dec, u.deg).value
            except u.UnitsError:
                raise InvalidQueryError(f"(ra, dec) {coordinates!r} must be angles.") from None
        if not (_is_plain_number(ra) and _is_plain_number(dec)):
            raise InvalidQueryError(f"(ra, dec) {coordinates!r} must be two numbers in degrees.")
        return _check_radec(float(ra), float(dec), coordinates)
    raise InvalidQueryError(
        f"Cannot read {coordinates!r} as a sky position; give a SkyCoord, an 'ra dec' string or (ra, dec) in degrees."
    )


def parse_radius(radius: Any = 0.0) -> float:
    """A search radius (float degrees, string parsable by `~astropy.coordinates.Angle`, Quantity) → degrees."""
    from astropy import units as u
    from astropy.coordinates import Angle

    try:
        value = float(Angle(radius, u.deg).deg)
    except (ValueError, TypeError, u.UnitsError):
        raise InvalidQueryError(f"Cannot read radius {radius!r} as an angle; give degrees or a Quantity.") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidQueryError(f"radius {radius!r} must be a finite, non-negative angle.")
    return value


_SLUG = re.compile(r"[^a-z0-9]+")


def make_target_id(name: str | None = None, ra: float | None = None, dec: float | None = None) -> str:
    """A file- and zarr-safe identifier: ``"TIC 307210830"`` → ``"tic_307210830"``,
    ``(10.5, -20.25)`` → ``"ra010.500000_dec-20.250000"``."""
    if name:
        slug = _SLUG.sub("_", str(name).strip().lower()).strip("_")
        if slug:
            return slug
    if ra is None or dec is None:
        raise InvalidQueryError("A target needs a name or both ra and dec.")
    return f"ra{ra:010.6f}_dec{dec:+.6f}"


@dataclass(frozen=True)
class Target:
    """One row of a target list: what to cut, where, and how big.

    Attributes
    ----------
    target_id : str
        Identifier used in file names and the manifest (see `make_target_id`).
    name : str or None
        Object name or TIC ID ("TIC 307210830"), or the moving target's Horizons name.
    ra, dec : float or None
        ICRS degrees; None until a name is resolved (and always for moving targets).
    moving : bool
        A moving target (asteroid, comet): sent as ``obj_id`` to TESSCut.
    mt_type : str or None
        ``"majorbody"`` or ``"smallbody"``, sent as ``obj_type``.
    size : CutoutSize
    sector : int or None
        One TESS sector, or None for all.
    survey : str or None
        One ZCut survey, or None for all.
    """

    target_id: str
    name: str | None = None
    ra: float | None = None
    dec: float | None = None
    moving: bool = False
    mt_type: str | None = None
    size: CutoutSize = CutoutSize(5, 5, "px")
    sector: int | None = None
    survey: str | None = None

    def __post_init__(self):
        if self.moving and (self.ra is not None or self.dec is not None):
            raise InvalidQueryError(
                f"Target {self.target_id}: a moving target takes a name only; remove ra/dec."
            )
        if not self.moving and self.name is None and (self.ra is None or self.dec is None):
            raise InvalidQueryError(f"Target {self.target_id}: give a name or both ra and dec.")

    @property
    def resolved(self) -> bool:
        """True when the target can be sent as is (a position, or a moving target's name)."""
        return self.moving or (self.ra is not None and self.dec is not None)


@dataclass(frozen=True)
class CutoutRequest:
    """One cutout request as it goes on the wire (see `mastcut_dask.services`).

    Attributes
    ----------
    service : str
        ``"tesscut"``, ``"zcut"`` or ``"hapcut"``.
    size : CutoutSize
    ra, dec : float or None
        ICRS degrees; None for moving targets.
    obj_id, obj_type : str or None
        Moving-target name and type (TESSCut only).
    sector : int or None
        TESS sector (None = all).
    survey : str or None
        ZCut survey (None = all).
    cutout_format : str or None
        ZCut ``fits``, ``jpg`` or ``png`` (download only).
    img_params : tuple of (str, value) pairs
        ZCut image options: stretch, minmax_percent, minmax_value, invert.
    target_id : str or None
        The target the request is for (carried into errors and manifests).
    """

    service: str
    size: CutoutSize = CutoutSize(5, 5, "px")
    ra: float | None = None
    dec: float | None = None
    obj_id: str | None = None
    obj_type: str | None = None
    sector: int | None = None
    survey: str | None = None
    cutout_format: str | None = None
    img_params: tuple[tuple[str, Any], ...] = ()
    target_id: str | None = None

    @property
    def moving(self) -> bool:
        """True for a moving-target (``obj_id``) request."""
        return self.obj_id is not None

    def describe(self) -> str:
        """A short human label: the object or the position."""
        if self.obj_id is not None:
            return self.obj_id
        return self.target_id or f"({self.ra}, {self.dec})"

    @classmethod
    def for_target(cls, service: str, target: Target, *, cutout_format: str | None = None,
                   img_params: Mapping[str, Any] | None = None) -> "CutoutRequest":
        """The request for one resolved `Target`."""
        if not target.resolved:
            raise InvalidQueryError(f"Target {target.target_id} has no position yet; resolve its name first.")
        return cls(
            service=service, size=target.size,
            ra=None if target.moving else target.ra, dec=None if target.moving else target.dec,
            obj_id=target.name if target.moving else None, obj_type=target.mt_type if target.moving else None,
            sector=target.sector, survey=target.survey, cutout_format=cutout_format,
            img_params=tuple((img_params or {}).items()), target_id=target.target_id,
        )


# ---- read_targets (owner: pipeline) ---------------------------------------------------------
