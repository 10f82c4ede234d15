"""Cutout sizes: parsed exactly as astroquery 0.4.11's ``_parse_cutout_size`` does, then checked
more strictly (zero, negative, non-finite and oversized cutouts are refused before any request)."""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy import units as u

from ..exceptions import InputWarning, InvalidQueryError

__all__ = ["TESS_PIXEL_ARCSEC", "MAX_CUTOUT_PIXELS", "CutoutSize", "parse_size", "check_pixels"]

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


def is_plain_number(value: Any) -> bool:
    """A real number that is not a bool (numpy scalars included)."""
    return isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (bool, np.bool_))


def _plain(value: Any) -> int | float:
    """numpy scalars → Python int/float, so that the record pickles small and prints as astroquery."""
    if isinstance(value, (numbers.Integral, np.integer)):
        return int(value)
    return float(value)


def _element(value: Any, units_hint: str | None) -> tuple[float, str]:
    """One size element → (value, "px" | "d")."""
    if isinstance(value, u.Quantity):
        if value.unit == u.pixel:
            return _plain(value.value), "px"
        if value.unit.physical_type == "angle":
            return float(value.to_value(u.deg)), "d"
        raise InvalidQueryError(_SIZE_UNIT_ERROR)
    if is_plain_number(value):
        if units_hint is None or units_hint == "px":
            return _plain(value), "px"
        # A plain number with an explicit angular unit, e.g. units="arcmin".
        return float((value * u.Unit(units_hint)).to_value(u.deg)), "d"
    raise InvalidQueryError(f"Cutout size must be a number or a Quantity, got {value!r}.")


def _units_hint(units: str | None) -> str | None:
    """Validate the ``units=`` keyword (accepted as in the seed document's ``units="px"``)."""
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
    check_pixels(result, pixel_arcsec=pixel_arcsec, max_pixels=max_pixels)
    return result


def check_pixels(size: CutoutSize, *, pixel_arcsec: float | None, max_pixels: float) -> None:
    """Refuse a cutout of more than ``max_pixels`` pixels (angular sizes at ``pixel_arcsec``).

    Raises
    ------
    InvalidQueryError
        The size exceeds the limit.
    """
    pix = size.pixels(pixel_arcsec)
    if pix is not None and pix[0] * pix[1] > max_pixels:
        raise InvalidQueryError(
            f"Cutout of {pix[0]:.0f} x {pix[1]:.0f} pixels exceeds MAST's limit of {max_pixels:g} pixels; "
            "ask for a smaller size."
        )
