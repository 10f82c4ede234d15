"""Request parsing for the emulator: query strings, form bodies and JSON bodies as MAST takes them.

Everything here turns untrusted wire text into plain Python values, or raises
:class:`~mastcut_dask.emulator.errors.BadRequest` (answered with HTTP 400 and a JSON ``msg``).

Conventions, as the real services take them:

* a list travels as repeated keys (``sector=28&sector=68``); a literal ``sector=[28, 68]`` or
  ``sector=28,68`` is tolerated too, and ``sector=All`` (or 0, or empty) means every sector;
* ``radius`` is in degrees unless it carries a unit suffix: ``d``, ``s`` (arcsec), ``m``
  (arcmin) or ``px`` (TESS pixels of 21″);
* a cutout size is ``x`` (width), ``y`` (height) and ``units`` (``px`` or ``d``), at most
  10,000 pixels in all.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from .constants import (FALSE_WORDS, IMAGE_FORMATS, MAX_CUTOUT_PIXELS, SIZE_UNITS, STRETCHES,
                        TESS_ARCSEC_PER_PIXEL, TRUE_WORDS)
from .errors import BadRequest

__all__ = [
    "MAX_BODY_BYTES",
    "RequestParams",
    "CutoutSize",
    "parse_request",
]

# A request body larger than this is refused before it is read: no MAST request is that big.
MAX_BODY_BYTES = 1 << 20

_RADIUS_UNITS = {"": 1.0, "d": 1.0, "deg": 1.0, "m": 1.0 / 60.0, "s": 1.0 / 3600.0,
                 "px": TESS_ARCSEC_PER_PIXEL / 3600.0}
_RADIUS_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class CutoutSize:
    """A requested cutout extent: ``x`` is the width, ``y`` the height, in ``units`` (px or d)."""

    x: float
    y: float
    units: str

    def pixels(self, arcsec_per_pixel: float | None) -> float | None:
        """Number of pixels covered, or None when the pixel scale is unknown (angular size)."""
        if self.units == "px":
            return math.ceil(self.x) * math.ceil(self.y)
        if arcsec_per_pixel is None:
            return None
        nx = math.ceil(self.x * 3600.0 / arcsec_per_pixel)
        ny = math.ceil(self.y * 3600.0 / arcsec_per_pixel)
        return nx * ny


class RequestParams:
    """The parameters of one request: a multi-valued mapping of names to lists of strings.

    Parameters
    ----------
    values : dict[str, list[str]]
        Parameter name to its values in arrival order (query string first, then body).
    """

    def __init__(self, values: dict[str, list[str]]):
        self._values = {k: list(v) for k, v in values.items()}

    # -- plain access ------------------------------------------------------------------------
    def as_dict(self) -> dict[str, list[str] | str]:
        """JSON-safe copy for the request log: single values unwrapped."""
        return {k: (v[0] if len(v) == 1 else list(v)) for k, v in self._values.items()}

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (stripped), or ``default``."""
        values = self._values.get(name)
        if not values:
            return default
        return values[0].strip()

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        return list(self._values.get(name, []))

    # -- typed access ------------------------------------------------------------------------
    def float(self, name: str, *, default: float | None = None) -> float:
        """A finite float; missing with no default or unparsable → BadRequest."""
        text = self.get(name)
        if text is None or text == "":
            if default is None:
                raise BadRequest(f"Missing required parameter: {name}")
            return default
        try:
            value = float(text)
        except ValueError:
            raise BadRequest(f"Invalid value for {name}: {text!r}") from None
        if not math.isfinite(value):
            raise BadRequest(f"Invalid value for {name}: {text!r}")
        return value

    def position(self) -> tuple[float, float]:
        """``(ra, dec)`` in degrees; RA wrapped into [0, 360), Dec checked to lie in [-90, 90]."""
        if self.get("ra") in (None, "") or self.get("dec") in (None, ""):
            raise BadRequest("Missing target position: both ra and dec are required.")
        ra = self.float("ra")
        dec = self.float("dec")
        if not -90.0 <= dec <= 90.0:
            raise BadRequest(f"Invalid declination {dec}: must be between -90 and 90 degrees.")
        return ra % 360.0, dec

    def radius_deg(self, default: float = 0.0) -> float:
        """The search radius in degrees, honouring the d/s/m/px suffixes."""
        text = self.get("radius")
        if text is None or text == "":
            return default
        match = _RADIUS_RE.match(text)
        if match is None:
            raise BadRequest(f"Invalid radius: {text!r}")
        number, unit = match.groups()
        factor = _RADIUS_UNITS.get(unit.lower())
        if factor is None:
            raise BadRequest(f"Invalid radius unit {unit!r}: must be one of d, s, m, px.")
        value = float(number) * factor
        if value < 0:
            raise BadRequest(f"Invalid radius: {text!r} (must not be negative)")
        return value

    def size(self, *, arcsec_per_pixel: float | None = None, default: float = 5.0) -> CutoutSize:
        """The cutout size, validated: positive, units px or d, at most 10,000 pixels.

        Parameters
        ----------
        arcsec_per_pixel : float, optional
            Pixel scale used to count the pixels of an angular size; without it only pixel
            sizes are checked against the limit (the product module checks the others).
        default : float
            Side used when ``x`` or ``y`` is absent.
        """
        units = (self.get("units") or "px").lower()
        if units not in SIZE_UNITS:
            raise BadRequest(f"Invalid units {units!r}: cutout size units must be px or d.")
        x = self.float("x", default=default)
        y = self.float("y", default=default)
        if x <= 0 or y <= 0:
            raise BadRequest(f"Invalid cutout size x={x}, y={y}: both must be positive.")
        size = CutoutSize(x, y, units)
        count = size.pixels(arcsec_per_pixel)
        if count is not None and count > MAX_CUTOUT_PIXELS:
            raise BadRequest(f"Cutout size too large: {count} pixels requested, "
                             f"the maximum is {MAX_CUTOUT_PIXELS}.")
        return size

    def sectors(self) -> list[int] | None:
        """Requested TESS sectors, or None for all of them."""
        found: list[int] = []
        for raw in self.get_all("sector"):
            text = raw.strip().strip("[]()")
            for part in re.split(r"[,\s]+", text):
                if part == "" or part.lower() == "all":
                    continue
                try:
                    number = int(float(part))
                except ValueError:
                    raise BadRequest(f"Invalid sector: {raw!r}") from None
                if number != float(part) or number < 0:
                    raise BadRequest(f"Invalid sector: {raw!r}")
                if number > 0:  # astroquery treats 0 as "all sectors"
                    found.append(number)
        return sorted(set(found)) or None

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean in any of the spellings clients use (True, true, 1, ...)."""
        text = self.get(name)
        if text is None:
            return default
        low = text.lower()
        if low in TRUE_WORDS:
            return True
        if low in FALSE_WORDS:
            return False
        raise BadRequest(f"Invalid value for {name}: {text!r} (expected true or false)")

    def pair(self, name: str) -> tuple[float, float] | None:
        """Two floats given as ``[a, b]``, ``a,b`` or two repeated keys; None if absent."""
        values = self.get_all(name)
        if not values:
            return None
        parts = [p for v in values for p in re.split(r"[,\s]+", v.strip().strip("[]()")) if p]
        if len(parts) != 2:
            raise BadRequest(f"Invalid value for {name}: expected two numbers, got {values!r}")
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            raise BadRequest(f"Invalid value for {name}: {values!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise BadRequest(f"Invalid value for {name}: {values!r}")
        return lo, hi

    def image_format(self) -> str:
        """ZCut output format from ``cutout_format=`` (current) or ``format=`` (astroquery 0.4.11)."""
        text = self.get("cutout_format") or self.get("format") or "fits"
        fmt = text.lower()
        if fmt == "jpeg":
            fmt = "jpg"
        if fmt not in IMAGE_FORMATS:
            raise BadRequest(f"Invalid cutout format {text!r}: must be one of {', '.join(IMAGE_FORMATS)}.")
        return fmt

    def stretch(self) -> str | None:
        """The image stretch, checked against those astrocut knows."""
        text = self.get("stretch")
        if text is None or text == "":
            return None
        if text.lower() not in STRETCHES:
            raise BadRequest(f"Invalid stretch {text!r}: must be one of {', '.join(STRETCHES)}.")
        return text.lower()


def parse_request(query: str, body: bytes, content_type: str | None) -> RequestParams:
    """Combine a URL query string and a request body into one :class:`RequestParams`.

    Parameters
    ----------
    query : str
        The raw query string (after ``?``), possibly empty.
    body : bytes
        The request body (form-encoded, or JSON for HAPCut), possibly empty.
    content_type : str or None
        The request's Content-Type header; JSON bodies are also recognised by their first byte.
    """
    values: dict[str, list[str]] = {}

    def add(pairs: dict[str, list[str]]) -> None:
        for key, vals in pairs.items():
            values.setdefault(key, []).extend(vals)

    try:
        add(parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=1000))
    except ValueError as err:
        raise BadRequest(f"Invalid query string: {err}") from None
    if body:
        ctype = (content_type or "").split(";")[0].strip().lower()
        stripped = body.lstrip()
        if ctype == "application/json" or stripped[:1] == b"{":
            add(_json_params(body))
        else:
            try:
                text = body.decode("utf-8")
                add(parse_qs(text, keep_blank_values=True, max_num_fields=1000))
            except (UnicodeDecodeError, ValueError) as err:
                raise BadRequest(f"Invalid form body: {err}") from None
    return RequestParams(values)


def _json_params(body: bytes) -> dict[str, list[str]]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise BadRequest(f"Invalid JSON body: {err}") from None
    if not isinstance(data, dict):
        raise BadRequest("Invalid JSON body: expected an object.")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        items = value if isinstance(value, list) else [value]
        out[str(key)] = [_json_scalar(v) for v in items]
    return out


def _json_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)
