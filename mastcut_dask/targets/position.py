"""Sky positions and radii: user input to plain ICRS degrees, which pickle cheaply to workers."""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle, BaseCoordinateFrame, SkyCoord

from ..exceptions import InputWarning, InvalidQueryError
from .size import is_plain_number

__all__ = ["parse_coordinates", "parse_radius"]


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
        if not (is_plain_number(ra) and is_plain_number(dec)):
            raise InvalidQueryError(f"(ra, dec) {coordinates!r} must be two numbers in degrees.")
        return _check_radec(float(ra), float(dec), coordinates)
    raise InvalidQueryError(
        f"Cannot read {coordinates!r} as a sky position; give a SkyCoord, an 'ra dec' string or (ra, dec) in degrees."
    )


def parse_radius(radius: Any = 0.0) -> float:
    """A search radius (float degrees, string parsable by `~astropy.coordinates.Angle`, Quantity) → degrees."""
    try:
        value = float(Angle(radius, u.deg).deg)
    except (ValueError, TypeError, u.UnitsError):
        raise InvalidQueryError(f"Cannot read radius {radius!r} as an angle; give degrees or a Quantity.") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidQueryError(f"radius {radius!r} must be a finite, non-negative angle.")
    return value
