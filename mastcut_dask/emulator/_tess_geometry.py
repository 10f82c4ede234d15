"""Where the emulated TESS CCDs look: sky tiles, (sector, camera, ccd) slots, their WCSs, cadences.

The rules are documented in :mod:`mastcut_dask.emulator.sky` (the reference for every test).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .constants import TESS_ARCSEC_PER_PIXEL
from .sky import S_CADENCE, S_SECTOR, S_SLOT, S_TILE, _angsep, _u, hash_u64, hash_uniform

PIXEL_SCALE_DEG = TESS_ARCSEC_PER_PIXEL / 3600.0
FFI_COLS = 2136
FFI_ROWS = 2078
# 0-based science area: rows [0, 2048), columns [44, 2092)
SCI_ROW0, SCI_ROW1 = 0, 2048
SCI_COL0, SCI_COL1 = 44, 2092
CRPIX = (1068.5, 1024.5)  # 1-based FITS centre of the science area (column, row)
N_SECTORS = 104


class CcdId(NamedTuple):
    """One TESS (sector, camera, ccd) combination."""

    sector: int
    camera: int
    ccd: int


@dataclass(frozen=True)
class SlotWcs:
    """A slot's TAN WCS: CRVAL (deg) and the 2x2 PC matrix (deg/px, CDELT = 1)."""

    ra0: float
    dec0: float
    pc: tuple[tuple[float, float], tuple[float, float]]


# ------------------------------------------------------------------ TAN projection
def tan_world_to_pixel(w: SlotWcs, ra, dec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project sky positions to 0-based FFI pixels (x = column, y = row).

    Returns ``(x, y, front)`` where ``front`` is False for points behind the tangent plane.
    """
    a0, d0 = math.radians(w.ra0), math.radians(w.dec0)
    a = np.radians(np.asarray(ra, dtype=np.float64))
    d = np.radians(np.asarray(dec, dtype=np.float64))
    da = a - a0
    cosd = np.cos(d)
    cosc = math.sin(d0) * np.sin(d) + math.cos(d0) * cosd * np.cos(da)
    front = cosc > 1e-6
    safe = np.where(front, cosc, 1.0)
    xi = np.degrees(cosd * np.sin(da) / safe)
    eta = np.degrees((math.cos(d0) * np.sin(d) - math.sin(d0) * cosd * np.cos(da)) / safe)
    (p11, p12), (p21, p22) = w.pc
    det = p11 * p22 - p12 * p21
    dx = (p22 * xi - p12 * eta) / det
    dy = (-p21 * xi + p11 * eta) / det
    return dx + (CRPIX[0] - 1.0), dy + (CRPIX[1] - 1.0), front


def tan_pixel_to_world(w: SlotWcs, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`tan_world_to_pixel` (0-based pixels to RA, Dec in degrees)."""
    (p11, p12), (p21, p22) = w.pc
    dx = np.asarray(x, dtype=np.float64) - (CRPIX[0] - 1.0)
    dy = np.asarray(y, dtype=np.float64) - (CRPIX[1] - 1.0)
    xi = np.radians(p11 * dx + p12 * dy)
    eta = np.radians(p21 * dx + p22 * dy)
    a0, d0 = math.radians(w.ra0), math.radians(w.dec0)
    rho = np.hypot(xi, eta)
    c = np.arctan(rho)
    sinc, cosc = np.sin(c), np.cos(c)
    with np.errstate(invalid="ignore", divide="ignore"):
        dec = np.arcsin(np.clip(cosc * math.sin(d0) + np.where(rho > 0, eta * sinc / rho, 0.0) * math.cos(d0), -1, 1))
    ra = a0 + np.arctan2(xi * sinc, rho * math.cos(d0) * cosc - eta * math.sin(d0) * sinc)
    return np.mod(np.degrees(ra), 360.0), np.degrees(dec)


def _offset(ra: float, dec: float, dxi: float, deta: float) -> tuple[float, float]:
    """The sky point at tangent-plane offset (dxi east, deta north) degrees from (ra, dec)."""
    w = SlotWcs(ra, dec, ((1.0, 0.0), (0.0, 1.0)))
    r, d = tan_pixel_to_world(w, dxi + CRPIX[0] - 1.0, deta + CRPIX[1] - 1.0)
    return float(r), float(d)


# ------------------------------------------------------------------ tiles
@functools.lru_cache(maxsize=1)
def tiles() -> np.ndarray:
    """Tile centres as an (n, 2) array of (ra, dec): south cap, 14 bands, north cap."""
    out = [(0.0, -90.0)]
    for j in range(14):
        dc = -78.0 + 12.0 * j
        n = max(1, round(30.0 * math.cos(math.radians(dc))))
        out.extend(((i + 0.5) * 360.0 / n, dc) for i in range(n))
    out.append((0.0, 90.0))
    return np.array(out)


def tile_of(ra: float, dec: float) -> int:
    """Index of the tile holding a position."""
    if dec < -84.0:
        return 0
    if dec > 84.0:
        return len(tiles()) - 1
    j = min(13, int((dec + 84.0) // 12.0))
    idx = 1
    for jj in range(j):
        idx += max(1, round(30.0 * math.cos(math.radians(-78.0 + 12.0 * jj))))
    n = max(1, round(30.0 * math.cos(math.radians(-78.0 + 12.0 * j))))
    return idx + min(n - 1, int((ra % 360.0) / (360.0 / n)))


# ------------------------------------------------------------------ pins
EXACT_PINS: tuple[tuple[float, float, tuple[CcdId, ...]], ...] = (
    (135.1408, -5.1915, (CcdId(8, 1, 1), CcdId(34, 1, 2), CcdId(61, 1, 2), CcdId(88, 1, 2))),
    (163.2, -58.4, (CcdId(10, 1, 4),)),
)
LOOSE_PINS: tuple[tuple[float, float, tuple[CcdId, ...]], ...] = (
    (107.18696, -70.50919, (CcdId(1, 4, 3), CcdId(9, 4, 1), CcdId(27, 4, 2), CcdId(33, 4, 1))),
    (124.531756290083, -68.3129998725044, (CcdId(2, 4, 2), CcdId(36, 4, 3))),
)
MOVING_PINS: dict[str, tuple[CcdId, ...]] = {
    "ceres": (CcdId(29, 1, 4), CcdId(43, 3, 3), CcdId(44, 2, 4), CcdId(92, 4, 3), CcdId(97, 1, 4)),
    "eleonora": (CcdId(6, 1, 1), CcdId(73, 1, 2)),
}


def _slot_key(c: CcdId) -> int:
    return (c.sector * 4 + (c.camera - 1)) * 4 + (c.ccd - 1)


@dataclass(frozen=True)
class Layout:
    """The whole assignment: slot -> WCS, plus arrays for fast coverage search."""

    wcs: dict[CcdId, SlotWcs]
    slots: tuple[CcdId, ...]  # sorted
    centres: np.ndarray  # (n, 2) CRVALs, aligned with ``slots``


def _slot_wcs(c: CcdId, ra: float, dec: float, max_off: float, seed: int) -> SlotWcs:
    k = _slot_key(c)
    dxi = max_off * (2 * _u(seed, S_SLOT, k, 0) - 1)
    deta = max_off * (2 * _u(seed, S_SLOT, k, 1) - 1)
    ra0, dec0 = _offset(ra, dec, dxi, deta)
    th = math.radians(360.0 * _u(seed, S_SLOT, k, 2))
    s = PIXEL_SCALE_DEG
    pc = ((s * math.cos(th), -s * math.sin(th)), (s * math.sin(th), s * math.cos(th)))
    return SlotWcs(ra0, dec0, pc)


def covers(w: SlotWcs, ra, dec, radius_px: float = 0.0) -> np.ndarray:
    """Whether positions project onto the science pixels of a slot (widened by ``radius_px``)."""
    x, y, front = tan_world_to_pixel(w, ra, dec)
    return (front & (x >= SCI_COL0 - 0.5 - radius_px) & (x < SCI_COL1 - 0.5 + radius_px)
            & (y >= SCI_ROW0 - 0.5 - radius_px) & (y < SCI_ROW1 - 0.5 + radius_px))


@functools.lru_cache(maxsize=8)
def layout(seed: int = 0) -> Layout:
    """Build (once per seed) the deterministic assignment of slots to the sky."""
    cen = tiles()
    wcs: dict[CcdId, SlotWcs] = {}
    per_tile: dict[int, list[CcdId]] = {}
    pinned: set[CcdId] = set()
    pin_pos = []
    for ra, dec, slots in EXACT_PINS + LOOSE_PINS:
        pin_pos.append((ra, dec))
        for c in slots:
            wcs[c] = _slot_wcs(c, ra, dec, 3.0, seed)
            per_tile.setdefault(tile_of(ra, dec), []).append(c)
            pinned.add(c)
    # moving-target slots go to hashed tiles far from every fixed pin
    pra = np.array([p[0] for p in pin_pos])
    pdec = np.array([p[1] for p in pin_pos])
    far = [t for t in range(len(cen)) if np.all(_angsep(cen[t, 0], cen[t, 1], pra, pdec) > 25.0)]
    for name, slots in sorted(MOVING_PINS.items()):
        for i, c in enumerate(slots):
            t = far[int(hash_u64(seed, S_TILE, _slot_key(c), 7)[0] % len(far))]
            wcs[c] = _slot_wcs(c, cen[t, 0], cen[t, 1], 1.5, seed)
            per_tile.setdefault(t, []).append(c)
            pinned.add(c)
    # the rest, in hashed order
    free = [CcdId(s, cam, ccd) for s in range(1, N_SECTORS + 1) for cam in range(1, 5) for ccd in range(1, 5)]
    free = [c for c in free if c not in pinned]
    order = np.argsort(hash_u64(seed, S_SLOT, np.array([_slot_key(c) for c in free]), 9), kind="stable")
    queue = [free[i] for i in order]
    for t in range(len(cen)):
        u = _u(seed, S_TILE, t, 0)
        want = 0 if u < 0.1 else 1 if u < 0.4 else 2 if u < 0.7 else 3 if u < 0.9 else 4
        have = per_tile.setdefault(t, [])
        qi = 0
        while len(have) < want and qi < len(queue):
            c = queue[qi]
            if all(c.sector != h.sector for h in have):
                queue.pop(qi)
                wcs[c] = _slot_wcs(c, cen[t, 0], cen[t, 1], 1.5, seed)
                have.append(c)
            else:
                qi += 1
    # exact pins see exactly their documented slots
    for ra, dec, _slots in EXACT_PINS:
        for c in [c for c in wcs if c not in pinned]:
            if covers(wcs[c], ra, dec)[()]:
                del wcs[c]
    slots = tuple(sorted(wcs))
    centres = np.array([(wcs[c].ra0, wcs[c].dec0) for c in slots])
    return Layout(wcs=wcs, slots=slots, centres=centres)


def slots_covering(ra: float, dec: float, radius_deg: float = 0.0, seed: int = 0) -> list[CcdId]:
    """Sorted slots whose science area holds (ra, dec), widened by ``radius_deg``."""
    lay = layout(seed)
    # a CCD's science area reaches at most ~8.5 deg from its CRVAL
    near = np.nonzero(_angsep(ra, dec, lay.centres[:, 0], lay.centres[:, 1]) < 9.0 + radius_deg)[0]
    rpx = radius_deg / PIXEL_SCALE_DEG
    return [lay.slots[i] for i in near if covers(lay.wcs[lay.slots[i]], ra, dec, rpx)[()]]


# ------------------------------------------------------------------ cadences
def timedel_seconds(sector: int) -> float:
    """Cadence length of a sector's FFIs, in seconds."""
    return 1800.0 if sector <= 26 else 600.0 if sector <= 55 else 200.0


_PINNED_NCAD = {1: 1282, 33: 3495}


@dataclass(frozen=True)
class Cadences:
    """One sector's FFI cadences (the full list, before any ``max_cadences`` cap)."""

    sector: int
    timedel: float  # days
    time: np.ndarray  # BTJD mid-exposure, float64
    timecorr: np.ndarray  # float32
    quality: np.ndarray  # int32
    t0: float  # sector start (BTJD)


@functools.lru_cache(maxsize=256)
def sector_cadences(sector: int, seed: int = 0) -> Cadences:
    """The cadences of a sector (see the sky docstring for every rule)."""
    dt_s = timedel_seconds(sector)
    dt = dt_s / 86400.0
    n = _PINNED_NCAD.get(sector) or int((23.5 + 2.0 * _u(seed, S_SECTOR, sector, 0)) * 86400.0 / dt_s)
    t0 = 1325.29 + 27.3 * (sector - 1) + 0.2 * _u(seed, S_SECTOR, sector, 1)
    gap = 1.0 + 0.5 * _u(seed, S_SECTOR, sector, 2)
    k = np.arange(n)
    time = t0 + (k + 0.5) * dt + np.where(k >= n // 2, gap, 0.0)
    tmid = 0.5 * (time[0] + time[-1])
    c = 0.0058 * (2 * _u(seed, S_SECTOR, sector, 3) - 1)
    timecorr = (c + 1e-5 * (time - tmid)).astype(np.float32)
    quality = np.zeros(n, dtype=np.int32)
    p_dump = 3.0 + 1.5 * _u(seed, S_SECTOR, sector, 4)
    dumps = t0 + (np.arange(int((time[-1] - t0) / p_dump) + 1) + 0.5) * p_dump
    idx = np.searchsorted(time, dumps).clip(1, n - 1)
    idx = np.where(np.abs(time[idx - 1] - dumps) < np.abs(time[idx] - dumps), idx - 1, idx)
    ok = np.abs(time[idx] - dumps) < dt  # dumps inside the orbit gap hit no cadence
    quality[idx[ok]] |= 32
    quality[(hash_u64(seed, S_CADENCE, sector, k) % np.uint64(400)) == 0] |= 128
    for a in (time, timecorr, quality):
        a.setflags(write=False)
    return Cadences(sector=sector, timedel=dt, time=time, timecorr=timecorr, quality=quality, t0=t0)


def slot_u(seed: int, c: CcdId, k: int) -> float:
    """A per-slot uniform deviate (used for background levels and the like)."""
    return float(hash_uniform(seed, S_SLOT, _slot_key(c), 100 + k)[0])
