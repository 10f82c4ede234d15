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
    "check_pixels",
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
# Reading whole target lists: rows → Target records, bad rows → InvalidRow with a reason.
# Imported here rather than at the top so this section stays self-contained for its owner.
import logging  # noqa: E402
from dataclasses import replace  # noqa: E402

__all__ += ["TARGET_COLUMNS", "InvalidRow", "TargetList", "read_targets"]

log = logging.getLogger(__name__)

#: Column names a target list may have (case-insensitive; surrounding spaces ignored).
TARGET_COLUMNS = ("id", "name", "ra", "dec", "size", "sector", "survey", "moving", "mt_type")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]{0,199}$")  # same rule as store.check_name
_SURVEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,99}$")
_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n", ""}
_MT_TYPES = {"majorbody": "majorbody", "smallbody": "smallbody"}
_SIZE_PAIR = re.compile(r"^\s*\(?\s*([-+]?[\d.eE+-]+)\s*[,x×\s]\s*([-+]?[\d.eE+-]+)\s*\)?\s*$")


@dataclass(frozen=True)
class InvalidRow:
    """A row of a target list that cannot be used, and why.

    Attributes
    ----------
    row : int
        1-based position among the data rows (for a CSV file the reason also names the line).
    target_id : str
        The row's id when one could be made, else ``"row_<n>"``; goes into the manifest.
    reason : str
        What is wrong and what to fix, naming the row.
    """

    row: int
    target_id: str
    reason: str


@dataclass(frozen=True)
class TargetList:
    """What `read_targets` returns: the usable targets and the rows that are not.

    Attributes
    ----------
    targets : tuple of Target
        Valid, de-duplicated targets in input order.
    invalid : tuple of InvalidRow
        One entry per bad row; each becomes a manifest row with status ``invalid``.
    given : tuple of frozenset of str
        For each target, the optional fields its row set (``size``, ``sector``, ``survey``),
        so that `with_defaults` fills in only the others.
    """

    targets: tuple[Target, ...] = ()
    invalid: tuple[InvalidRow, ...] = ()
    given: tuple[frozenset, ...] = ()

    def __len__(self) -> int:
        return len(self.targets)

    def __iter__(self):
        return iter(self.targets)

    def with_defaults(self, *, size: Any = None, sector: int | None = None,
                      survey: str | None = None, units: str | None = None) -> "TargetList":
        """The call's values for every field a row left empty (per-row values win).

        Parameters
        ----------
        size : optional
            Any size `parse_size` accepts; None keeps the rows' (default 5 × 5 pixels).
        sector : int, optional
        survey : str, optional
        units : str, optional
            Unit of a plain-number ``size``.

        Raises
        ------
        InvalidQueryError
            A bad call-level value: it would make every row bad, so fail before any request.
        """
        changes: dict[str, Any] = {}
        if size is not None:
            # No pixel limit here: it depends on the service (`services.check_size`).
            changes["size"] = parse_size(size, units=units, pixel_arcsec=None, max_pixels=math.inf)
        if sector is not None:
            changes["sector"] = _parse_sector(sector)
        if survey is not None:
            changes["survey"] = _parse_survey(survey)
        if not changes:
            return self
        given = self.given or tuple(frozenset() for _ in self.targets)
        targets = tuple(
            replace(t, **{k: v for k, v in changes.items() if k not in g}) for t, g in zip(self.targets, given)
        )
        return TargetList(targets, self.invalid, given)


def _missing(value: Any) -> bool:
    if value is None or value is np.ma.masked:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    try:
        import pandas as pd

        return bool(pd.isna(value)) if np.ndim(value) == 0 else False
    except (ImportError, TypeError, ValueError):
        return False


def _parse_sector(value: Any) -> int:
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number != int(number) or int(number) < 1:
        raise InvalidQueryError(f"sector {value!r} must be a positive whole number (leave it empty for all sectors)")
    return int(number)


def _parse_survey(value: Any) -> str:
    text = str(value).strip()
    if not _SURVEY.match(text):
        raise InvalidQueryError(f"survey {value!r} is not a survey name such as 'candels_gn_30mas'")
    return text


def _parse_bool(value: Any, column: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if _missing(value):
        return False
    text = str(value).strip().lower()
    if text in ("1.0", "0.0"):
        text = text[0]
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidQueryError(f"{column} {value!r} must be true or false")


def _parse_mt_type(value: Any) -> str:
    key = re.sub(r"[\s_\-]", "", str(value).strip().lower())
    if key not in _MT_TYPES:
        raise InvalidQueryError(f"mt_type {value!r} must be 'majorbody' or 'smallbody' (or empty)")
    return _MT_TYPES[key]


def _parse_row_size(value: Any) -> CutoutSize:
    from astropy import units as u

    if isinstance(value, str):
        text = value.strip()
        m = _SIZE_PAIR.match(text)
        try:
            if m:  # "ny,nx" or "ny x nx", in pixels, astroquery's order
                value = [_number(m.group(1)), _number(m.group(2))]
            else:
                try:
                    value = _number(text)
                except ValueError:
                    value = u.Quantity(text)
        except (ValueError, TypeError):
            raise InvalidQueryError(
                f"size {text!r} is not a number of pixels, a pair 'ny,nx' or a quantity such as '30 arcsec'"
            ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)  # a 3-element size in a file is a typo, not a wish
        try:
            return parse_size(value, pixel_arcsec=None, max_pixels=math.inf)  # limit: per service
        except InputWarning as warn:
            raise InvalidQueryError(f"size {value!r}: {warn}") from None


def _number(text: str) -> int | float:
    number = float(text)
    return int(number) if number.is_integer() and not any(c in text for c in ".eE") else number


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)  # a numeric TIC ID read as float by a table library
    return str(value).strip()


def _coordinate(value: Any, column: str) -> float:
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise InvalidQueryError(f"{column} {value!r} is not a number of degrees") from None
    if _is_plain_number(value):
        return float(value)
    raise InvalidQueryError(f"{column} {value!r} is not a number of degrees")


def _row_to_target(record: Mapping[str, Any]) -> tuple[Target, frozenset]:
    """One normalised record → Target, or InvalidQueryError with what is wrong (no row number)."""
    get = {k: (None if _missing(v) else v) for k, v in record.items()}
    name = _text(get["name"]) if get.get("name") is not None else None
    moving = _parse_bool(get.get("moving"), "moving")
    mt_type = _parse_mt_type(get["mt_type"]) if get.get("mt_type") is not None else None
    ra_raw, dec_raw = get.get("ra"), get.get("dec")
    ra = dec = None
    if moving:
        if not name:
            raise InvalidQueryError("a moving target needs its name (e.g. 'Eleonora') in the name column")
        if ra_raw is not None or dec_raw is not None:
            raise InvalidQueryError("a moving target takes a name only: clear ra and dec")
    else:
        if mt_type is not None:
            raise InvalidQueryError("mt_type applies to moving targets only: set moving to true or clear mt_type")
        if (ra_raw is None) != (dec_raw is None):
            raise InvalidQueryError("give both ra and dec, or neither (then the name is resolved)")
        if ra_raw is not None:
            ra, dec = parse_coordinates((_coordinate(ra_raw, "ra"), _coordinate(dec_raw, "dec")), warn=False)
        elif not name:
            raise InvalidQueryError("no target: give a name (or 'TIC n') or both ra and dec in degrees")
    given = set()
    fields_: dict[str, Any] = {}
    if get.get("size") is not None:
        fields_["size"] = _parse_row_size(get["size"])
        given.add("size")
    if get.get("sector") is not None:
        fields_["sector"] = _parse_sector(get["sector"])
        given.add("sector")
    if get.get("survey") is not None:
        fields_["survey"] = _parse_survey(get["survey"])
        given.add("survey")
    if get.get("id") is not None:
        target_id = _text(get["id"])
        if not _SAFE_ID.match(target_id) or ".." in target_id:
            raise InvalidQueryError(
                f"id {target_id!r} cannot name files and zarr groups: use letters, digits, '.', '_', '+', '-', "
                "starting with a letter or digit"
            )
    else:
        try:
            target_id = make_target_id(name, ra, dec)
        except InvalidQueryError:  # a name of punctuation only, and no position
            target_id = ""
        if not _SAFE_ID.match(target_id):
            raise InvalidQueryError(f"cannot make an id from name {name!r}: add an id column")
    target = Target(target_id=target_id, name=name or None, ra=ra, dec=dec, moving=moving,
                    mt_type=mt_type, **fields_)
    return target, frozenset(given)


@dataclass(frozen=True)
class _BadRecord:
    """A record that could not even be split into columns (e.g. a CSV line with extra fields)."""

    reason: str


def _records(src: Any, storage_options: Mapping[str, Any] | None) -> tuple[list[Any], list[int | None]]:
    """The input as a list of plain dicts (or `_BadRecord`), and each one's file line (or None)."""
    import os

    if isinstance(src, (str, os.PathLike)):
        return _read_file(os.fspath(src), storage_options)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(src, pd.DataFrame):
        rows = [dict(r) for r in src.to_dict(orient="records")]
        return rows, [None] * len(rows)
    from astropy.table import Table

    if isinstance(src, Table):
        rows = []
        for row in src:
            rows.append({name: (None if np.ma.is_masked(row[name]) else _scalar(row[name])) for name in src.colnames})
        return rows, [None] * len(rows)
    if isinstance(src, Mapping):
        raise InvalidQueryError("read_targets takes a list of dicts (one per target), not a single dict")
    try:
        items = list(src)
    except TypeError:
        raise InvalidQueryError(
            f"read_targets cannot read a {type(src).__name__}: give a CSV or Parquet path/URL, an astropy Table, "
            "a pandas DataFrame or a list of dicts"
        ) from None
    return items, [None] * len(items)


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _read_file(path: str, storage_options: Mapping[str, Any] | None) -> tuple[list[Any], list[int | None]]:
    import fsspec

    lower = re.sub(r"\.(gz|bz2|xz|zst)$", "", path.lower())  # targets.csv.gz reads as targets.csv
    is_parquet = lower.endswith((".parquet", ".pq", ".parq"))
    try:
        with fsspec.open(path, "rb", compression=None if is_parquet else "infer",
                         **dict(storage_options or {})) as fh:
            if is_parquet:
                import pandas as pd

                rows = [dict(r) for r in pd.read_parquet(fh).to_dict(orient="records")]
                return rows, [None] * len(rows)
            raw = fh.read()
    except FileNotFoundError:
        raise InvalidQueryError(f"target list {path!r} does not exist") from None
    except (ValueError, OSError, ImportError) as err:
        kind = "Parquet" if is_parquet else "CSV"
        raise InvalidQueryError(f"cannot read {path!r} as a {kind} target list: {err}") from None
    return _parse_csv(raw, lower)


def _parse_csv(raw: bytes, path: str) -> tuple[list[Any], list[int | None]]:
    """CSV text → records, all values as text (ids like "007" and TIC numbers must not become
    floats); a line with the wrong number of fields is one bad record, not a failed file."""
    import csv
    import io

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InvalidQueryError(f"cannot read {path!r} as a CSV target list: not UTF-8 text ({err})") from None
    dialect = "excel-tab" if path.lower().endswith(".tsv") else "excel"
    reader = csv.reader(io.StringIO(text, newline=""), dialect=dialect, skipinitialspace=True)
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    except csv.Error as err:
        raise InvalidQueryError(f"cannot read {path!r} as a CSV target list: {err}") from None
    header = [h.strip() for h in header]
    records: list[Any] = []
    lines: list[int | None] = []
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            records.append(_BadRecord(f"is not valid CSV ({err})"))
            lines.append(reader.line_num)
            continue
        if not fields:  # a blank line is not a row
            continue
        if len(fields) != len(header):
            records.append(_BadRecord(f"has {len(fields)} fields but the header has {len(header)}; "
                                      "quote values that contain commas"))
        else:
            records.append(dict(zip(header, fields)))
        lines.append(reader.line_num)
    return records, lines


def read_targets(src: Any, *, storage_options: Mapping[str, Any] | None = None) -> TargetList:
    """Read a target list; bad rows are reported, never fatal to the others.

    Parameters
    ----------
    src : str, path, astropy Table, pandas DataFrame, list of dict, or TargetList
        A CSV or Parquet file (local path or fsspec URL; Parquet by its ``.parquet``/``.pq``
        suffix), or the rows themselves. Columns (case-insensitive):

        - ``name``: object name or ``"TIC n"`` (resolved later), or a moving target's name;
        - ``ra``, ``dec``: ICRS degrees (instead of, or as well as, a name);
        - optional ``id`` (else made from the name, or from ra/dec), ``size`` (pixels,
          ``"ny,nx"``, or a quantity such as ``"30 arcsec"``), ``sector``, ``survey``,
          ``moving`` (true/false) and ``mt_type`` (``majorbody``/``smallbody``).

        Other columns are ignored (logged). A TargetList is returned as it is.
    storage_options : dict, optional
        fsspec options when ``src`` is a URL.

    Returns
    -------
    TargetList
        ``.targets`` (Target records) and ``.invalid`` (InvalidRow: row number, id, reason).
        Use `TargetList.with_defaults` to apply a call's size/sector/survey to rows without them.

    Raises
    ------
    InvalidQueryError
        When the input as a whole is unusable: unreadable file, unknown type, or no ``name``
        and no ``ra``/``dec`` columns at all.

    Notes
    -----
    Duplicate ids: a row that repeats an earlier one exactly is dropped (logged); a row
    whose id is already used by a *different* target is invalid, with a reason that names
    the first row, because two targets cannot share files and zarr groups.
    """
    if isinstance(src, TargetList):
        return src
    records, lines = _records(src, storage_options)
    columns: set[str] = set()
    normalised: list[Any] = []
    for record in records:
        if isinstance(record, (Target, _BadRecord)):
            normalised.append(record)
            continue
        if not isinstance(record, Mapping):
            normalised.append(None)
            continue
        row = {}
        for key, value in record.items():
            column = str(key).strip().lower()
            if column in TARGET_COLUMNS:
                row[column] = value
            columns.add(column)
        normalised.append(row)
    if records and columns and "name" not in columns and not {"ra", "dec"} <= columns:
        raise InvalidQueryError(
            f"the target list has neither a 'name' column nor 'ra' and 'dec' columns (it has: "
            f"{', '.join(sorted(columns))})"
        )
    unknown = sorted(columns - set(TARGET_COLUMNS))
    if unknown:
        log.info("target list: ignoring columns %s", ", ".join(unknown))

    targets: list[Target] = []
    given: list[frozenset] = []
    invalid: list[InvalidRow] = []
    first_row: dict[str, tuple[int, Target]] = {}
    for index, record in enumerate(normalised, start=1):
        where = f"row {index}" + (f" (line {lines[index - 1]})" if lines[index - 1] else "")
        try:
            if record is None:
                raise InvalidQueryError("is not a mapping of column names to values")
            if isinstance(record, _BadRecord):
                raise InvalidQueryError(record.reason)
            if isinstance(record, Target):
                target, row_given = record, frozenset({"size", "sector", "survey"})
            else:
                for column in TARGET_COLUMNS:
                    record.setdefault(column, None)
                target, row_given = _row_to_target(record)
        except InvalidQueryError as err:
            fallback = _fallback_id(record, index)
            invalid.append(InvalidRow(index, fallback, f"{where}: {err.message or err}"))
            continue
        previous = first_row.get(target.target_id)
        if previous is not None:
            if previous[1] == target:
                log.info("target list %s repeats row %d (%s); dropped", where, previous[0], target.target_id)
                continue
            invalid.append(InvalidRow(index, f"row_{index}", (
                f"{where}: id {target.target_id!r} is already used by row {previous[0]} for a different "
                "request; give this row its own id (id column) or merge the two rows")))
            continue
        first_row[target.target_id] = (index, target)
        targets.append(target)
        given.append(row_given)
    # An invalid row must not share a manifest id with a valid target (its row would shadow it),
    # nor with an earlier invalid row (only the later of the two would stay on record).
    taken = set(first_row)
    unique = []
    for bad in invalid:
        if bad.target_id in taken:
            bad = replace(bad, target_id=f"row_{bad.row}")
        taken.add(bad.target_id)
        unique.append(bad)
    invalid = unique
    if invalid:
        log.warning("target list: %d of %d rows are invalid", len(invalid), len(normalised))
    return TargetList(tuple(targets), tuple(invalid), tuple(given))


def _fallback_id(record: Any, index: int) -> str:
    """An id for an invalid row's manifest entry: its own id or name when usable, else ``row_<n>``."""
    if isinstance(record, Mapping):
        for column in ("id", "name"):
            value = record.get(column)
            if value is not None and not _missing(value):
                text = _text(value)
                try:
                    candidate = text if column == "id" else make_target_id(text)
                except InvalidQueryError:
                    continue
                if _SAFE_ID.match(candidate) and ".." not in candidate:
                    return candidate
    return f"row_{index}"
