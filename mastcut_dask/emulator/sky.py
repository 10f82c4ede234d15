"""The emulator's deterministic sky: the reference every TESS test is checked against.

Everything below is a pure function of a ``seed`` (default 0) and the arguments; there is no
random-number-generator state anywhere, so any process, thread or worker recomputes the same sky.

Hashing
-------
Every "random" number is ``splitmix64`` mixed over a tuple of integers
(:func:`hash_u64`): ``h = mix(SALT ^ seed)``, then ``h = mix(h ^ k)`` for each key ``k``.
Uniform deviates in ``[0, 1)`` are ``(h >> 11) * 2**-53`` (:func:`hash_uniform`); Gaussian deviates
use Box-Muller on the two 32-bit halves of one hash (:func:`hash_normal`). Each quantity uses its
own small integer "stream" tag as the first key, so quantities never share deviates.

Geometry (:mod:`mastcut_dask.emulator._tess_geometry`)
-------------------------------------------------------
* The sky is cut into 288 tiles: 14 declination bands 12 deg high between -84 and +84 deg
  (band ``j`` centred on ``-78 + 12 j``) split into ``round(30 cos(dec_centre))`` equal RA
  cells, plus one polar cap per pole (``|dec| > 84``). Tile 0 is the south cap, then bands from
  south to north and RA 0 -> 360, the last tile is the north cap.
* A slot is one ``(sector, camera, ccd)`` with sector 1-104, camera 1-4, ccd 1-4. Each slot is
  used at most once in the whole sky and has ONE fixed TAN WCS: 21 arcsec/px, a rotation
  ``theta`` hashed uniformly in [0, 360) deg written as a *pure rotation*
  ``PC = s [[cos, -sin], [sin, cos]]`` (positive determinant, as in real TESS FFI WCSs),
  CDELT = 1, CRPIX = (1068.5, 1024.5) = centre of the science area.
* The FFI is 2136 columns x 2078 rows; science pixels are FITS columns 45-2092 and rows 1-2048
  (0-based numpy: ``[0:2048, 44:2092]``). A position is *covered* by a slot when it projects
  (in front of the tangent plane) into a science pixel, i.e. 0-based column in
  ``[43.5, 2091.5)`` and row in ``[-0.5, 2047.5)``; a search radius widens both by
  ``radius / 21 arcsec`` pixels.
* Pinned slots first (the facts in the user docs, pinned whatever the seed):

  =====================================  ==================================================
  position / object                      slots (sector, camera, ccd)
  =====================================  ==================================================
  (135.1408, -5.1915)  EXACT             (8,1,1) (34,1,2) (61,1,2) (88,1,2)
  TIC 32449963 at (163.2, -58.4) EXACT   (10,1,4)
  (107.18696, -70.50919)                 (1,4,3) (9,4,1) (27,4,2) (33,4,1)
  TIC 307210830 (124.5317563, -68.313)   (2,4,2) (36,4,3)
  Ceres (moving)                         (29,1,4) (43,3,3) (44,2,4) (92,4,3) (97,1,4)
  Eleonora (moving)                      (6,1,1) (73,1,2)
  =====================================  ==================================================

  A pinned slot's CRVAL is its pinned position moved by a hashed offset of at most 3 deg per
  axis in the tangent plane (so the position is always on the science area, whatever the
  rotation). Moving-target slots are centred on hashed tiles at least 25 deg from every pinned
  position. Then every tile draws how many slots it wants (0: 10 %, 1: 30 %, 2: 30 %, 3: 20 %,
  4: 10 %; pinned slots count) and takes them from the remaining slots in hashed order, never
  two of one sector on a tile; such a slot's CRVAL is its tile centre moved by at most 1.5 deg
  per axis. Finally every unpinned slot that covers an EXACT position is dropped (left
  unused), so those positions see exactly the documented sectors.

Cadences (:func:`_tess_geometry.sector_cadences`)
-------------------------------------------------
* ``TIMEDEL`` 1800 s for sectors 1-26, 600 s for 27-55, 200 s from 56 (the real FFI cadences).
* Cadence count ``n = int(D * 86400 / TIMEDEL)`` with ``D = 23.5 + 2 u`` days; pinned:
  sector 1 -> 1282, sector 33 -> 3495.
* Sector start ``t0 = 1325.29 + 27.3 (sector - 1) + 0.2 u`` (BTJD). The sector is two orbits:
  cadence ``k`` (0-based) has mid-exposure ``TIME = t0 + (k + 0.5) TIMEDEL`` plus an orbit gap of
  ``1 + 0.5 u`` days for ``k >= n // 2`` (a downlink: times are not evenly spaced).
* ``TIMECORR = c + 1e-5 (TIME - t_mid)`` with a per-sector ``c`` in [-0.0058, 0.0058] d.
* QUALITY: 32 (momentum dump) on the cadence nearest each ``t0 + (m + 0.5) P_dump``,
  ``P_dump = 3.0 + 1.5 u`` days (a dump that falls in the orbit gap flags nothing);
  128 (manual exclude) where ``hash(sector, k) % 400 == 0``.
  QUALITY depends on (sector, cadence) only (shared by all cameras and CCDs).
* ``max_cadences`` keeps the first N cadences of the sector.

Stars (this module)
-------------------
* The sky is cut into 3-arcmin cells: 3600 declination bands 0.05 deg high (band ``j`` from
  ``-90 + 0.05 j``), each split into ``max(1, round(7200 cos(dec_mid)))`` RA cells. Cells are
  numbered band by band from the south pole, RA 0 -> 360, from 0.
* Cell ``c`` holds exactly one star, **TIC c + 1**, at ``dec = dec_lo + 0.05 u``,
  ``ra = (i + u') 360 / n_ra``. So ``tic_position(n)`` is defined for ``1 <= n <= N_CELLS``
  (about 16.5 million) and resolving "TIC n" lands on a real star.
* Pinned stars (IDs above ``N_CELLS``, so no clash): TIC 307210830 at the recorded resolver
  position (124.531756290083, -68.3129998725044), Tmag 9.4; TIC 32449963 at (163.2, -58.4),
  Tmag 10.0; TIC 1000000001 at (107.18696, -70.50919), Tmag 10.5; TIC 1000000002 at
  (135.1408, -5.1915), Tmag 11.0.
* Magnitude ``Tmag = 17 - 10 u**4`` (mostly faint); flux ``F = 15000 * 10**(-0.4 (Tmag - 10))``
  e-/s (all of it inside the PSF).
* Variability (every star): a trapezoid transit. ``period = 0.5 + 14.5 u`` d,
  ``epoch = 1300 + period u`` (BTJD), ``duration = (0.04 + 0.06 u) period`` capped at 0.4 d,
  ``depth = 0.002 + 0.028 u`` (0.2-3 %), ingress/egress each 10 % of the duration. With
  ``x = |((t - epoch) / period + 0.5) mod 1 - 0.5| * period``, the relative flux is
  ``1 - depth * clip((duration / 2 - x) / (0.1 duration), 0, 1)``.
  :func:`star_truth` returns the star nearest a position with all these numbers.

Pixels (:mod:`mastcut_dask.emulator._tess_pixels`)
---------------------------------------------------
A pure function of (slot, CCD row, CCD column, cadence), in float64, rounded to float32 last:

* background ``B(t, r) = b0 (1 + 0.2 sin(2 pi (t - t0) / 13.7)) (1 + 0.1 (r - 1024) / 1024)``
  e-/s with ``b0 = 80 + 120 u`` per slot;
* plus, for every star whose centre (projected through the slot's WCS) lies within 5 px of the
  pixel, ``F * v(t) * g(dr) g(dc)`` with ``g(d) = exp(-d**2 / 2) / sqrt(2 pi)`` (Gaussian PSF,
  sigma = 1 px, sampled at the pixel centre), summed in increasing TIC order, truncated where
  ``dr**2 + dc**2 > 25`` (so the set of stars seen by a pixel never depends on the cutout);
* noise ``sigma = sqrt(model / T_exp + 0.5**2)`` e-/s with ``T_exp = 0.792 TIMEDEL`` seconds,
  and ``FLUX = model + sigma * N`` with the counter-based deviate
  ``N = BoxMuller(mix(H ^ (row << 48 | column << 32 | cadence)))``, ``H = hash_u64(seed,
  S_NOISE, sector, camera, ccd)``, ``mix`` = splitmix64, Box-Muller (in float32) on the two
  32-bit halves (row and column modulo 2**16): no sequential state.
  ``FLUX_ERR = sigma``. Pixels outside the science area are NaN.

Two overlapping cutouts therefore agree bit for bit where they overlap, and a whole-CCD view
(``ccd_pixels``) agrees with every cutout. Pixel coordinates here are 0-based FFI indices
(numpy ``[row, column]`` of the 2078 x 2136 frame; astropy ``x = column``, ``y = row``).
Fixed-target cutout windows start at ``floor(p - (n - 1) / 2 + 0.5)`` along each axis, ``p`` the
target's 0-based pixel coordinate and ``n`` the size.

Moving targets (:mod:`mastcut_dask.emulator._tess_moving`)
----------------------------------------------------------
A moving object's path inside one slot is a straight line in that CCD's pixel coordinates
(so a great circle on the sky), ``p(t) = p_c + v (t - t_c) (cos phi, sin phi)``, with hashed
``p_c`` inside the science area, ``phi``, ``t_c`` inside the sector and ``v`` in 90-200 px/day:
it is on the detector for part of the sector only. Eleonora in sector 6 moves along row 1000
at -276.4 px/day, centred on column 1068 at ``t0 + 6.1`` d, so that a default 5x5 window fits on
exactly 355 cadences (whatever the seed). The object itself is an extra Gaussian source
(flux from ``Tmag = 9 + 5 u``) present in moving-target cutouts only; its photon noise enters
FLUX_ERR there, with the same per-pixel deviate as the fixed sky.

Any other object name gets ``hash(name) % 4`` slots picked (by hash) among the slots in use,
at most one per sector; names compare case- and whitespace-insensitively, ``obj_type`` is
ignored. The hash of a name is blake2b (Python's ``hash`` is salted per process).

Why this design
---------------
The tiling gives honest geometry (coverage is a real WCS projection, neighbouring CCDs
overlap, some sky is unobserved) at the cost of a few hundred WCSs, while the counter-based
hashing makes every pixel reproducible in isolation, which is what lets tests compare cutouts
with each other, with a cube view and with lightkurve. Departures from the first sketch, and
why: pinned CCDs are centred near their pinned position rather than on the tile centre, so
coverage holds for every seed and rotation; "exactly these sectors" is enforced by dropping
conflicting unpinned slots rather than by hoping; the PSF is truncated at 5 px so the set of
stars reaching a pixel, and therefore its float value, never depends on the request; every
star transits, so any "TIC n" target has a signal a decoder test can recover; a moving
object's flux lives only in moving-target files, so ``ccd_pixels`` stays the one fixed sky.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from .splitmix import splitmix64

__all__ = [
    "CELL_DEG",
    "N_CELLS",
    "PINNED_STARS",
    "StarTruth",
    "hash_u64",
    "hash_uniform",
    "hash_normal",
    "star_truth",
    "stars_near",
    "tic_position",
    "variability",
    "variability_at",
]

_M64 = 0xFFFFFFFFFFFFFFFF
_SALT = 0x6D61737463757421  # "mastcut!": keeps seed 0 away from the all-zero state

# Streams: the first key of every hash, one per quantity.
S_STAR = 1
S_SLOT = 2
S_TILE = 3
S_CADENCE = 4
S_NOISE = 5
S_MOVING = 6
S_SECTOR = 7

CELL_DEG = 0.05
_N_BANDS = 3600


def hash_u64(seed: int, *keys) -> np.ndarray:
    """Hash a seed and integer keys (scalars or broadcastable arrays) to uint64.

    Parameters
    ----------
    seed : int
        The sky seed.
    *keys : int or array_like of int
        Integer keys; negative values are taken modulo 2**64.

    Returns
    -------
    numpy.ndarray
        uint64 array with the broadcast shape of the keys (at least 1-D).
    """
    with np.errstate(over="ignore"):
        h = splitmix64(np.atleast_1d(np.asarray((_SALT ^ (int(seed) & _M64)), dtype=np.uint64)))
        for k in keys:
            k = np.asarray(k)
            k = k.astype(np.int64).view(np.uint64) if k.dtype.kind == "i" else k.astype(np.uint64)
            h = splitmix64(h ^ np.atleast_1d(k))
    return h


def hash_uniform(seed: int, *keys) -> np.ndarray:
    """Uniform deviates in [0, 1) from :func:`hash_u64` (53 bits)."""
    return (hash_u64(seed, *keys) >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def hash_normal(seed: int, *keys) -> np.ndarray:
    """Standard normal deviates from one hash per value (Box-Muller on its 32-bit halves)."""
    h = hash_u64(seed, *keys)
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * (2.0 ** -32)
    u2 = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) * (2.0 ** -32)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _u(seed: int, *keys) -> float:
    """One uniform deviate as a Python float."""
    return float(hash_uniform(seed, *keys)[0])


# ----------------------------------------------------------------------------- cells
@functools.lru_cache(maxsize=1)
def _bands() -> tuple[np.ndarray, np.ndarray]:
    """(n_ra per band, first cell index per band) for the 3-arcmin cell grid."""
    dec_mid = -90.0 + CELL_DEG * (np.arange(_N_BANDS) + 0.5)
    n_ra = np.maximum(1, np.round(360.0 / CELL_DEG * np.cos(np.radians(dec_mid)))).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(n_ra)[:-1]])
    return n_ra, first


N_CELLS: int = int(_bands()[0].sum())


@dataclass(frozen=True)
class StarTruth:
    """Everything the emulator knows about one star.

    Attributes
    ----------
    tic_id : int
        Its TIC number (``"TIC <tic_id>"`` resolves to it).
    ra, dec : float
        Position (deg, ICRS).
    tmag : float
        TESS magnitude.
    flux : float
        Total flux in e-/s (``15000 * 10**(-0.4 (tmag - 10))``).
    period, epoch, duration : float
        Transit period (d), mid-transit epoch (BTJD), total duration (d).
    depth : float
        Fractional transit depth (0.002-0.03).
    """

    tic_id: int
    ra: float
    dec: float
    tmag: float
    flux: float
    period: float
    epoch: float
    duration: float
    depth: float


# (tic_id, ra, dec, tmag)
PINNED_STARS: tuple[tuple[int, float, float, float], ...] = (
    (307210830, 124.531756290083, -68.3129998725044, 9.4),
    (32449963, 163.2, -58.4, 10.0),
    (1000000001, 107.18696, -70.50919, 10.5),
    (1000000002, 135.1408, -5.1915, 11.0),
)


def _star_arrays(ids: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Positions, magnitudes and transit parameters of catalogue stars (vectorised)."""
    ids = np.asarray(ids, dtype=np.int64)
    cell = ids - 1
    n_ra, first = _bands()
    band = np.searchsorted(first, cell, side="right") - 1
    i = cell - first[band]
    dec = -90.0 + CELL_DEG * (band + hash_uniform(seed, S_STAR, ids, 0))
    ra = (i + hash_uniform(seed, S_STAR, ids, 1)) * (360.0 / n_ra[band])
    tmag = 17.0 - 10.0 * hash_uniform(seed, S_STAR, ids, 2) ** 4
    out = {"tic_id": ids, "ra": ra, "dec": dec, "tmag": tmag}
    out.update(_transit_params(ids, seed))
    return out


def _transit_params(ids: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    period = 0.5 + 14.5 * hash_uniform(seed, S_STAR, ids, 3)
    epoch = 1300.0 + period * hash_uniform(seed, S_STAR, ids, 4)
    duration = np.minimum((0.04 + 0.06 * hash_uniform(seed, S_STAR, ids, 5)) * period, 0.4)
    depth = 0.002 + 0.028 * hash_uniform(seed, S_STAR, ids, 6)
    return {"period": period, "epoch": epoch, "duration": duration, "depth": depth}


def _pinned_arrays(seed: int) -> dict[str, np.ndarray]:
    ids = np.array([p[0] for p in PINNED_STARS], dtype=np.int64)
    out = {
        "tic_id": ids,
        "ra": np.array([p[1] for p in PINNED_STARS]),
        "dec": np.array([p[2] for p in PINNED_STARS]),
        "tmag": np.array([p[3] for p in PINNED_STARS]),
    }
    out.update(_transit_params(ids, seed))
    return out


def _flux_from_tmag(tmag):
    return 15000.0 * 10.0 ** (-0.4 * (np.asarray(tmag) - 10.0))


def tic_position(tic_id: int, *, seed: int = 0) -> tuple[float, float] | None:
    """Sky position of star ``TIC <tic_id>``, or None if the emulator's catalogue has no such star.

    Parameters
    ----------
    tic_id : int
        TIC number.
    seed : int, optional
        Sky seed.

    Returns
    -------
    tuple of float or None
        ``(ra, dec)`` in degrees.
    """
    tic_id = int(tic_id)
    for pid, ra, dec, _ in PINNED_STARS:
        if pid == tic_id:
            return (ra, dec)
    if not 1 <= tic_id <= N_CELLS:
        return None
    s = _star_arrays(np.array([tic_id]), seed)
    return (float(s["ra"][0]), float(s["dec"][0]))


def _angsep(ra1, dec1, ra2, dec2):
    """Angular separation in degrees (haversine, stable at small angles)."""
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    a = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(a, 0, 1))))


def _cells_near(ra: float, dec: float, radius: float) -> np.ndarray:
    """Indices of every cell that may hold a star within ``radius`` deg of (ra, dec)."""
    n_ra, first = _bands()
    j0 = max(0, int(math.floor((dec - radius + 90.0) / CELL_DEG)))
    j1 = min(_N_BANDS - 1, int(math.floor((dec + radius + 90.0) / CELL_DEG)))
    out = []
    for j in range(j0, j1 + 1):
        lo, hi = -90.0 + CELL_DEG * j, -90.0 + CELL_DEG * (j + 1)
        cosmin = math.cos(math.radians(min(89.999999, max(abs(lo), abs(hi)))))
        half = radius / cosmin if cosmin > 0 else 360.0
        n = int(n_ra[j])
        if half >= 180.0 or n <= 3:
            cells = np.arange(n)
        else:
            w = 360.0 / n
            i0 = int(math.floor((ra - half) / w)) - 1
            i1 = int(math.floor((ra + half) / w)) + 1
            cells = np.unique(np.arange(i0, i1 + 1) % n)
        out.append(first[j] + cells)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def stars_near(ra: float, dec: float, radius: float, *, seed: int = 0) -> dict[str, np.ndarray]:
    """All stars within ``radius`` degrees of a position, sorted by TIC ID.

    Parameters
    ----------
    ra, dec : float
        Centre (deg).
    radius : float
        Search radius (deg).
    seed : int, optional
        Sky seed.

    Returns
    -------
    dict of str to numpy.ndarray
        Equal-length arrays ``tic_id, ra, dec, tmag, flux, period, epoch, duration, depth``.
    """
    ids = _cells_near(ra, dec, radius) + 1
    cat = _star_arrays(ids, seed)
    pin = _pinned_arrays(seed)
    both = {k: np.concatenate([cat[k], pin[k]]) for k in cat}
    keep = _angsep(ra, dec, both["ra"], both["dec"]) <= radius
    order = np.argsort(both["tic_id"][keep], kind="stable")
    out = {k: v[keep][order] for k, v in both.items()}
    out["flux"] = _flux_from_tmag(out["tmag"])
    return out


def variability(t, period, epoch, duration, depth) -> np.ndarray:
    """Relative flux of the trapezoid transit model at BTJD times ``t`` (broadcasts).

    Parameters
    ----------
    t : array_like
        Times (BTJD).
    period, epoch, duration, depth : array_like
        Transit parameters as in :class:`StarTruth`.

    Returns
    -------
    numpy.ndarray
        1 out of transit, ``1 - depth`` at the flat bottom.
    """
    t = np.asarray(t, dtype=np.float64)
    x = np.abs(np.mod((t - epoch) / period + 0.5, 1.0) - 0.5) * period
    ramp = np.clip((duration / 2.0 - x) / (0.1 * duration), 0.0, 1.0)
    return 1.0 - depth * ramp


def star_truth(ra: float, dec: float, *, seed: int = 0, radius: float = 0.1) -> StarTruth | None:
    """The star nearest a position (within ``radius`` deg), with its variability parameters.

    Parameters
    ----------
    ra, dec : float
        Position (deg).
    seed : int, optional
        Sky seed.
    radius : float, optional
        Search radius in degrees (default 0.1, i.e. 2 cells).

    Returns
    -------
    StarTruth or None
        None when no star lies within ``radius``.
    """
    s = stars_near(ra, dec, radius, seed=seed)
    if len(s["tic_id"]) == 0:
        return None
    k = int(np.argmin(_angsep(ra, dec, s["ra"], s["dec"])))
    return StarTruth(**{name: (int(v[k]) if name == "tic_id" else float(v[k])) for name, v in s.items()})


def variability_at(ra: float, dec: float, t, *, seed: int = 0) -> np.ndarray:
    """Relative flux at times ``t`` of the star nearest (ra, dec); ones if there is none."""
    st = star_truth(ra, dec, seed=seed)
    if st is None:
        return np.ones_like(np.asarray(t, dtype=np.float64))
    return variability(t, st.period, st.epoch, st.duration, st.depth)
