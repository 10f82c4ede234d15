"""One target: the record every later stage works from, and its file-safe identifier."""

from __future__ import annotations

import re
from dataclasses import dataclass

from typing import Any

from ..exceptions import InvalidQueryError, MastcutError
from .size import CutoutSize

__all__ = ["Target", "make_target_id", "is_safe_name", "check_name", "check_survey_name"]

# One path component on any file system or object store: 1-200 characters, a letter or digit
# first (no hidden files, no names reserved by zarr), then letters, digits and . _ + - only.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]{0,199}$")
# A ZCut survey name as the service spells them ("candels_gn_30mas", "3dhst_goods-n").
_SURVEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


def is_safe_name(name: Any) -> bool:
    """Whether ``name`` is one safe path component (see `check_name`)."""
    return isinstance(name, str) and bool(_SAFE_NAME.match(name)) and ".." not in name


def check_name(name: Any, what: str = "name", *, error: type[MastcutError] = InvalidQueryError) -> str:
    """Return ``name`` if it is one safe path component, else raise.

    Safe means: 1-200 characters from letters, digits, ``.``, ``_``, ``+``, ``-``; starting
    with a letter or digit; no ``..``. Such a name cannot escape its folder, hide, or clash
    with zarr's reserved names, on any filesystem or object store. Target ids, product names
    and file names from a server all pass through it before they become paths.

    Parameters
    ----------
    name : str
        The candidate (a target id, a product name, a file name from a server).
    what : str
        What the name is, for the error message.
    error : type
        The exception raised: `InvalidQueryError` for user input, `UnsafeArchiveError` for
        names that came from a server.

    Raises
    ------
    InvalidQueryError or UnsafeArchiveError
    """
    if not is_safe_name(name):
        raise error(f"{what} {name!r} is not safe as a file or group name: use 1-200 letters, digits, "
                    "'.', '_', '+' or '-', starting with a letter or digit, and no '..'.")
    return name


def check_survey_name(survey: Any) -> bool:
    """Whether ``survey`` looks like a ZCut survey name (the service itself decides if it exists)."""
    return isinstance(survey, str) and bool(_SURVEY_NAME.match(survey))

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
