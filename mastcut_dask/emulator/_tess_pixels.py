"""Pixel values of the emulated TESS FFIs: a pure function of (slot, row, column, cadence).

The model is documented in :mod:`mastcut_dask.emulator.sky` ("Pixels"). Every float
operation on a pixel is the same whatever cutout asks for it (stars are summed in TIC order
and non-contributing stars add an exact 0.0), so overlapping requests agree bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from ._tess_geometry import (
    PIXEL_SCALE_DEG,
    SCI_COL0,
    SCI_COL1,
    SCI_ROW0,
    SCI_ROW1,
    CcdId,
    layout,
    sector_cadences,
    slot_u,
    tan_pixel_to_world,
    tan_world_to_pixel,
)
from .sky import S_NOISE, hash_u64, stars_near, variability
from .splitmix import splitmix64_inplace

PSF_CUT_PX = 5.0  # stars further than this from a pixel centre do not reach it
READ_NOISE = 0.5  # e-/s floor of the per-pixel sigma
DEADC = 0.792
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_CHUNK = 64  # cadences per star search when windows move (moving targets)


def background_level(c: CcdId, seed: int) -> float:
    """The slot's mean background ``b0`` in e-/s."""
    return 80.0 + 120.0 * slot_u(seed, c, 0)


def _stars_in_box(c: CcdId, r0: float, r1: float, c0: float, c1: float, seed: int):
    """Stars whose projected centre lies within PSF_CUT_PX of the pixel box [r0, r1] x [c0, c1]."""
    w = layout(seed).wcs[c]
    pad = PSF_CUT_PX + 1.0
    cy, cx = 0.5 * (r0 + r1), 0.5 * (c0 + c1)
    ra, dec = tan_pixel_to_world(w, cx, cy)
    radius = (0.5 * math.hypot(r1 - r0, c1 - c0) + pad) * PIXEL_SCALE_DEG * 1.02
    st = stars_near(float(ra), float(dec), radius, seed=seed)
    x, y, front = tan_world_to_pixel(w, st["ra"], st["dec"])
    keep = front & (y >= r0 - pad) & (y <= r1 + pad) & (x >= c0 - pad) & (x <= c1 + pad)
    out = {k: v[keep] for k, v in st.items()}
    out["x"], out["y"] = x[keep], y[keep]
    return out


def _psf(dr: np.ndarray, dc: np.ndarray) -> np.ndarray:
    """Truncated unit Gaussian PSF on a (K, ny, nx) grid from row offsets (K, ny) and column offsets (K, nx)."""
    gr = np.exp(-0.5 * dr * dr) * _INV_SQRT_2PI
    gc = np.exp(-0.5 * dc * dc) * _INV_SQRT_2PI
    p = gr[:, :, None] * gc[:, None, :]
    inside = (dr * dr)[:, :, None] + (dc * dc)[:, None, :] <= PSF_CUT_PX * PSF_CUT_PX
    return np.where(inside, p, 0.0)


def _add_stars_fixed(model: np.ndarray, c: CcdId, fr: np.ndarray, fc: np.ndarray, t: np.ndarray,
                     seed: int) -> None:
    """Add every star to a fixed grid (rows ``fr`` x columns ``fc``), each on its own stamp only.

    Same float operations per pixel as the dense path (the PSF is zero off the stamp), so
    large views stay affordable without changing a single value.
    """
    if len(fr) == 0 or len(fc) == 0 or len(t) == 0:
        return
    st = _stars_in_box(c, fr.min(), fr.max(), fc.min(), fc.max(), seed)
    for i in range(len(st["tic_id"])):
        ri = np.nonzero(np.abs(fr - st["y"][i]) <= PSF_CUT_PX)[0]
        ci = np.nonzero(np.abs(fc - st["x"][i]) <= PSF_CUT_PX)[0]
        if len(ri) == 0 or len(ci) == 0:
            continue
        p = _psf((fr[ri] - st["y"][i])[None, :], (fc[ci] - st["x"][i])[None, :])
        if not p.any():
            continue
        amp = st["flux"][i] * variability(t, st["period"][i], st["epoch"][i], st["duration"][i], st["depth"][i])
        if ri[-1] - ri[0] + 1 == len(ri) and ci[-1] - ci[0] + 1 == len(ci):
            # contiguous stamp (always, for cutouts): a view, much cheaper than fancy indexing
            model[:, ri[0]:ri[-1] + 1, ci[0]:ci[-1] + 1] += amp[:, None, None] * p
        else:
            model[:, ri[:, None], ci[None, :]] += amp[:, None, None] * p


def render(c: CcdId, rows: np.ndarray, cols: np.ndarray, cadences: np.ndarray, *, seed: int = 0,
           extra: tuple[np.ndarray, np.ndarray, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """FLUX and FLUX_ERR (float32, shape (K, ny, nx)) for windows of CCD pixels.

    Parameters
    ----------
    c : CcdId
        The slot.
    rows, cols : numpy.ndarray
        0-based FFI rows (shape (K, ny) or (1, ny)) and columns ((K, nx) or (1, nx)) of each
        cadence's window.
    cadences : numpy.ndarray
        0-based cadence indices within the sector, shape (K,).
    seed : int
        Sky seed.
    extra : tuple, optional
        ``(x, y, flux)``: an extra Gaussian source at 0-based FFI column ``x[k]``, row ``y[k]``
        per cadence with total ``flux`` e-/s (the moving object).
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    cadences = np.asarray(cadences, dtype=np.int64)
    cad = sector_cadences(c.sector, seed)
    t = cad.time[cadences]
    k_n = len(cadences)
    ny, nx = rows.shape[1], cols.shape[1]

    bt = background_level(c, seed) * (1.0 + 0.2 * np.sin(2.0 * np.pi * (t - cad.t0) / 13.7))
    br = 1.0 + 0.1 * (rows - 1024) / 1024.0
    model = np.empty((k_n, ny, nx))
    model[...] = (bt[:, None] * br)[:, :, None]

    fr, fc = rows.astype(np.float64), cols.astype(np.float64)
    if rows.shape[0] == 1 and cols.shape[0] == 1:
        _add_stars_fixed(model, c, fr[0], fc[0], t, seed)
    for a in range(0, k_n if rows.shape[0] > 1 or cols.shape[0] > 1 else 0, _CHUNK):
        b = min(k_n, a + _CHUNK)
        rs = fr if rows.shape[0] == 1 else fr[a:b]
        cs = fc if cols.shape[0] == 1 else fc[a:b]
        st = _stars_in_box(c, rs.min(), rs.max(), cs.min(), cs.max(), seed)
        for i in range(len(st["tic_id"])):
            p = _psf(rs - st["y"][i], cs - st["x"][i])
            if not p.any():
                continue
            amp = st["flux"][i] * variability(t[a:b], st["period"][i], st["epoch"][i],
                                              st["duration"][i], st["depth"][i])
            model[a:b] += amp[:, None, None] * p
    if extra is not None:
        ex, ey, ef = extra
        model += ef * _psf(fr - np.asarray(ey)[:, None], fc - np.asarray(ex)[:, None])

    t_exp = DEADC * cad.timedel * 86400.0
    sigma = model / t_exp
    sigma += READ_NOISE * READ_NOISE
    np.sqrt(sigma, out=sigma)
    flux = noise(c, rows, cols, cadences, seed)
    flux *= sigma
    flux += model
    off = ((rows < SCI_ROW0) | (rows >= SCI_ROW1))[:, :, None] | ((cols < SCI_COL0) | (cols >= SCI_COL1))[:, None, :]
    if off.any():
        flux = np.where(off, np.nan, flux)
        sigma = np.where(off, np.nan, sigma)
    return flux.astype(np.float32), sigma.astype(np.float32)


def noise(c: CcdId, rows: np.ndarray, cols: np.ndarray, cadences: np.ndarray, seed: int) -> np.ndarray:
    """Standard normal deviate per (row, column, cadence): counter-based, no state.

    ``N = BoxMuller(mix(H(seed, S_NOISE, sector, camera, ccd) ^ (row << 48 | column << 32 | cadence)))``
    with row and column taken modulo 2**16.
    """
    h0 = hash_u64(seed, S_NOISE, c.sector, c.camera, c.ccd)[0]
    r = (rows.astype(np.int64) & 0xFFFF).astype(np.uint64) << np.uint64(48)
    q = (cols.astype(np.int64) & 0xFFFF).astype(np.uint64) << np.uint64(32)
    k = cadences.astype(np.uint64) ^ h0
    # hashed in place, with a scratch array reused below: this is the hot loop of every cutout
    h = (r[:, :, None] | q[:, None, :]) ^ k[:, None, None]
    tmp = np.empty_like(h)
    splitmix64_inplace(h, tmp)
    # Box-Muller in float32: three times faster than float64, and FLUX is float32 anyway
    np.right_shift(h, np.uint64(32), out=tmp)
    u1 = tmp.astype(np.float32)
    u1 += np.float32(0.5)
    u1 *= np.float32(2.0 ** -32)  # in (0, 1]: log is finite
    np.log(u1, out=u1)
    u1 *= np.float32(-2.0)
    np.sqrt(u1, out=u1)
    np.bitwise_and(h, np.uint64(0xFFFFFFFF), out=tmp)
    u2 = tmp.astype(np.float32)
    u2 *= np.float32(2.0 * np.pi * 2.0 ** -32)
    np.cos(u2, out=u2)
    u1 *= u2
    return u1
