"""Moving targets: straight pixel-space paths across a CCD, and TPFs whose window follows the path."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ._tess_fits import ffi_names, primary_cards, tpf_bytes, wcs_cards
from ._tess_geometry import (
    CRPIX,
    FFI_COLS,
    FFI_ROWS,
    SCI_COL0,
    SCI_COL1,
    SCI_ROW0,
    SCI_ROW1,
    CcdId,
    _slot_key,
    layout,
    sector_cadences,
    tan_pixel_to_world,
)
from ._tess_pixels import render
from .sky import S_MOVING, _flux_from_tmag, hash_uniform


@dataclass(frozen=True)
class MovingPath:
    """A moving object's path on one CCD: ``(x, y)(t) = (x_c, y_c) + (vx, vy) (t - t_c)``.

    Pixels are 0-based FFI (column, row); velocities in px/day; ``tmag`` sets its flux.
    """

    ccd: CcdId
    x_c: float
    y_c: float
    vx: float
    vy: float
    t_c: float
    tmag: float

    def at(self, t) -> tuple[np.ndarray, np.ndarray]:
        """0-based FFI (column, row) of the object at BTJD times ``t``."""
        dt = np.asarray(t, dtype=np.float64) - self.t_c
        return self.x_c + self.vx * dt, self.y_c + self.vy * dt


# Eleonora in sector 6 crosses the CCD along row 1000 so that a 5x5 window fits on
# exactly 355 cadences (the number in the user docs).
_ELEONORA_S6 = dict(x_c=1068.0, y_c=1000.0, vx=-276.4, vy=0.0, dt_c=6.1, tmag=10.2)


def moving_path(name: str, key: int, c: CcdId, seed: int = 0) -> MovingPath:
    """The path of object ``name`` (normalised; ``key`` its hash) on slot ``c``."""
    cad = sector_cadences(c.sector, seed)
    if name == "eleonora" and c == CcdId(6, 1, 1):
        p = _ELEONORA_S6
        return MovingPath(c, p["x_c"], p["y_c"], p["vx"], p["vy"], cad.t0 + p["dt_c"], p["tmag"])
    u = hash_uniform(seed, S_MOVING, key, _slot_key(c), np.arange(6))
    span = float(cad.time[-1] - cad.time[0])
    phi = 2 * math.pi * u[2]
    v = 90.0 + 110.0 * u[3]
    return MovingPath(
        ccd=c,
        x_c=SCI_COL0 + 300.0 + 1448.0 * u[0],
        y_c=SCI_ROW0 + 300.0 + 1448.0 * u[1],
        vx=v * math.cos(phi),
        vy=v * math.sin(phi),
        t_c=float(cad.time[0]) + span * (0.2 + 0.6 * u[4]),
        tmag=9.0 + 5.0 * u[5],
    )


def safe_name(obj_id: str) -> str:
    """The object name as astrocut puts it in a file name, made safe for a zip member."""
    s = str(obj_id).strip().replace("/", "-").replace(" ", "_")
    s = re.sub(r"[^A-Za-z0-9_.+-]", "_", s).lstrip(".")
    return s[:80] or "target"


def moving_tpf(obj_id: str, path: MovingPath, nx: int, ny: int, max_cadences: int | None,
               seed: int = 0) -> tuple[str, bytes] | None:
    """The path-focused TPF of one object on one CCD, or None if no window fits on the detector."""
    c = path.ccd
    cad = sector_cadences(c.sector, seed)
    x, y = path.at(cad.time)
    col0 = np.floor(x - (nx - 1) / 2.0 + 0.5).astype(np.int64)
    row0 = np.floor(y - (ny - 1) / 2.0 + 0.5).astype(np.int64)
    fits = (col0 >= SCI_COL0) & (col0 + nx <= SCI_COL1) & (row0 >= SCI_ROW0) & (row0 + ny <= SCI_ROW1)
    idx = np.nonzero(fits)[0]
    if max_cadences is not None:
        # the cap applies to the rows of the file, so a capped emulator still serves the crossing
        idx = idx[: max(0, int(max_cadences))]
    if len(idx) == 0:
        return None
    rows = row0[idx, None] + np.arange(ny)[None, :]
    cols = col0[idx, None] + np.arange(nx)[None, :]
    flux, err = render(c, rows, cols, idx, seed=seed,
                       extra=(x[idx], y[idx], float(_flux_from_tmag(path.tmag))))
    w = layout(seed).wcs[c]
    tra, tdec = tan_pixel_to_world(w, x[idx], y[idx])
    moving = {"TGT_X": x[idx] - col0[idx], "TGT_Y": y[idx] - row0[idx], "TGT_RA": tra, "TGT_DEC": tdec}
    aperture = np.zeros((FFI_ROWS, FFI_COLS), dtype=">i4")  # written as is, no byte swap
    for r0, c0 in set(zip(row0[idx].tolist(), col0[idx].tolist())):
        aperture[r0:r0 + ny, c0:c0 + nx] = 1
    tstart, tstop = float(cad.time[idx[0]]), float(cad.time[idx[-1]])
    primary = primary_cards(c, cad, len(cad.time), None, None, obj=str(obj_id), tstart=tstart, tstop=tstop,
                            seed=seed)
    names = ffi_names(c, seed)
    data = tpf_bytes(c=c, cad=cad, rows_idx=idx, flux=flux, flux_err=err, primary=primary, aperture=aperture,
                     aperture_wcs=wcs_cards(w, CRPIX), ffi_file=names[idx],
                     wcs_ffi=names[len(names) // 2].decode() + "c.fits", moving=moving, seed=seed)
    name = f"{safe_name(obj_id)}_{tstart:.6f}-{tstop:.6f}_{ny}-x-{nx}_astrocut.fits"
    return name, data
