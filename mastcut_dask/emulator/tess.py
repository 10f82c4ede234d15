"""The emulator's TESSCut products: sector discovery and astrocut-style target pixel files.

The sky behind them is documented in :mod:`mastcut_dask.emulator.sky`. The HTTP server calls
the functions here; tests use the truth API (:func:`ccd_pixels`, :func:`ccd_wcs`,
:func:`sector_times`, :func:`star_truth`) to check what clients decode.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np

from ._tess_geometry import (
    CRPIX,
    FFI_COLS,
    FFI_ROWS,
    CcdId,
    MOVING_PINS,
    layout,
    sector_cadences,
    slots_covering,
)
from .errors import BadRequest
from .sky import S_MOVING, StarTruth, hash_u64, star_truth, tic_position, variability_at

__all__ = [
    "TESS_PIXEL_SCALE_DEG",
    "MAX_CUTOUT_PIXELS",
    "CcdId",
    "StarTruth",
    "sectors_at",
    "moving_sectors",
    "cutout_files",
    "moving_cutout_files",
    "tic_position",
    "star_truth",
    "variability_at",
    "parse_size",
    "ccd_wcs",
    "sector_times",
    "layout",
]

TESS_PIXEL_SCALE_DEG: float = 21 / 3600
MAX_CUTOUT_PIXELS = 10_000


def sectors_at(ra: float, dec: float, radius_deg: float = 0.0, *, seed: int = 0) -> list[CcdId]:
    """The (sector, camera, ccd) slots whose science pixels cover a sky position.

    Parameters
    ----------
    ra, dec : float
        Position in degrees (ICRS).
    radius_deg : float, optional
        Also count slots whose science area lies within this many degrees.
    seed : int, optional
        Sky seed.

    Returns
    -------
    list of CcdId
        Sorted; empty when nothing covers the position.
    """
    ra, dec, radius_deg = float(ra), float(dec), float(radius_deg)
    if not (math.isfinite(ra) and math.isfinite(dec) and -90.0 <= dec <= 90.0):
        raise BadRequest(f"invalid coordinates ra={ra!r}, dec={dec!r}")
    if not math.isfinite(radius_deg) or radius_deg < 0:
        raise BadRequest(f"invalid radius {radius_deg!r}: must be a finite number >= 0")
    return slots_covering(ra % 360.0, dec, radius_deg, seed)


def _name_key(obj_id: str) -> tuple[str, int]:
    """Normalised moving-target name and a process-independent integer hash of it."""
    norm = " ".join(str(obj_id).split()).lower()
    return norm, int.from_bytes(hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest(), "little")


def moving_sectors(obj_id: str, obj_type: str | None = None, *, seed: int = 0) -> list[CcdId]:
    """The slots a moving target crosses, in sector order.

    "Ceres" and "Eleonora" are pinned (see :mod:`~mastcut_dask.emulator.sky`); any other name
    gets 0-3 hashed slots. ``obj_type`` is accepted and ignored (the real service tries
    ``majorbody`` then ``smallbody``).

    Parameters
    ----------
    obj_id : str
        Object name or ID, as sent on the wire.
    obj_type : str, optional
        Ignored.
    seed : int, optional
        Sky seed.

    Returns
    -------
    list of CcdId
        Empty for an unknown object.
    """
    norm, key = _name_key(obj_id)
    if not norm:
        return []
    if norm in MOVING_PINS:
        return list(MOVING_PINS[norm])
    lay = layout(seed)
    n = int(hash_u64(seed, S_MOVING, key, 0)[0] % np.uint64(4))
    picks = hash_u64(seed, S_MOVING, key, 1 + np.arange(n)) % np.uint64(len(lay.slots))
    chosen: dict[int, CcdId] = {}
    for p in picks:
        c = lay.slots[int(p)]
        chosen.setdefault(c.sector, c)
    return [chosen[s] for s in sorted(chosen)]


def parse_size(x, y, units) -> tuple[int, int]:
    """Turn the wire's ``x``, ``y``, ``units`` into (nx columns, ny rows).

    Pixels are rounded to the nearest integer (at least 1); degrees become
    ``ceil(deg / TESS_PIXEL_SCALE_DEG)`` (with a 1e-9 pixel tolerance, so that exactly
    representable sizes such as 5 arcmin = 15 px are not pushed up by float rounding).

    Raises
    ------
    BadRequest
        Unknown units, non-numeric, non-finite or non-positive sizes, or more than
        ``MAX_CUTOUT_PIXELS`` pixels in total.
    """
    if units not in ("px", "d"):
        raise BadRequest(f"invalid units {units!r}: must be 'px' or 'd'")
    out = []
    for name, v in (("x", x), ("y", y)):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise BadRequest(f"invalid cutout size {name}={v!r}: not a number") from None
        if not math.isfinite(f) or f <= 0:
            raise BadRequest(f"invalid cutout size {name}={v!r}: must be a finite number > 0")
        n = math.ceil(f / TESS_PIXEL_SCALE_DEG - 1e-9) if units == "d" else max(1, int(math.floor(f + 0.5)))
        out.append(n)
    nx, ny = out
    if nx * ny > MAX_CUTOUT_PIXELS:
        raise BadRequest(f"cutout of {nx}x{ny} pixels is too large: at most {MAX_CUTOUT_PIXELS} pixels allowed")
    return nx, ny


def ccd_wcs(ccd: CcdId, *, seed: int = 0):
    """The fixed TAN WCS of one (sector, camera, ccd) over the full 2136 x 2078 FFI.

    Parameters
    ----------
    ccd : CcdId
        The slot.
    seed : int, optional
        Sky seed.

    Returns
    -------
    astropy.wcs.WCS
        Pixel (x=column, y=row), 0-based in astropy's ``*_values`` methods, maps to ICRS.

    Raises
    ------
    KeyError
        If the slot observes nothing in this sky.
    """
    from astropy.wcs import WCS

    w = layout(seed).wcs[CcdId(*ccd)]
    out = WCS(naxis=2)
    out.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    out.wcs.cunit = ["deg", "deg"]
    out.wcs.crval = [w.ra0, w.dec0]
    out.wcs.crpix = list(CRPIX)
    out.wcs.cdelt = [1.0, 1.0]
    out.wcs.pc = np.array(w.pc)
    out.wcs.radesys = "ICRS"
    out.pixel_shape = (FFI_COLS, FFI_ROWS)
    return out


def sector_times(sector: int, *, seed: int = 0) -> np.ndarray:
    """TIME (BTJD, mid-exposure) of every cadence of a sector (before any cap)."""
    return sector_cadences(int(sector), seed).time
