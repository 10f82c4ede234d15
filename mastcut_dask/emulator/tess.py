"""The emulator's TESSCut products: sector discovery and astrocut-style target pixel files.

The sky behind them is documented in :mod:`mastcut_dask.emulator.sky`. The HTTP server calls
the functions here; tests use the truth API (:func:`ccd_pixels`, :func:`ccd_wcs`,
:func:`sector_times`, :func:`cutout_window`, :func:`star_truth`, :func:`moving_truth`) to check
what clients decode.

Files are laid out as astrocut >= 1.0 writes them: PRIMARY (no data; ORIGIN='STScI/MAST',
CREATOR='astrocut', PROCVER='1.4.0', FFI_TYPE='SPOC', SECTOR/CAMERA/CCD ints, time keywords,
TICID undefined), PIXELS (the 12 columns; RAW_CNTS all -1 with TNULL4=-1, CADENCENO and
FLUX_BKG*/POS_CORR* all 0, FFI_FILE truncated to 38 characters; a copy of every PRIMARY
keyword; no per-column WCS) and APERTURE (int32, 1 on science pixels, 0 where the cutout hangs
off them, with the cutout's linear TAN WCS and WCS_MSEP = WCS_SIG = 0). Every HDU carries a valid
CHECKSUM/DATASUM. DATE-OBS/DATE-END are UTC computed as ``TIME - TIMECORR - 69.184 s``.

Fixed-target names: ``tess-s{sector:04d}-{camera}-{ccd}_{ra:.6f}_{dec:.6f}_{nx}x{ny}_astrocut.fits``
(``ra``, ``dec`` as requested). Moving-target names (astrocut's ``center_on_path`` default):
``{name}_{TSTART:.6f}-{TSTOP:.6f}_{ny}-x-{nx}_astrocut.fits`` with the name reduced to
``[A-Za-z0-9_.+-]`` (spaces -> '_', '/' -> '-'). ``max_cadences`` keeps the first N cadences of
a fixed-target file and the first N rows of a moving-target file.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np

from ._tess_fits import ffi_names, primary_cards, tpf_bytes, wcs_cards
from ._tess_geometry import (
    CRPIX,
    SCI_COL0,
    SCI_COL1,
    SCI_ROW0,
    SCI_ROW1,
    tan_pixel_to_world,
    tan_world_to_pixel,
    FFI_COLS,
    FFI_ROWS,
    CcdId,
    MOVING_PINS,
    PIXEL_SCALE_DEG,
    layout,
    sector_cadences,
    slots_covering,
)
from ._tess_moving import moving_path, moving_tpf, safe_name
from ._tess_pixels import render
from .constants import MAX_CUTOUT_PIXELS, SIZE_UNITS
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
    "ccd_pixels",
    "cutout_window",
    "cutout_name",
    "moving_truth",
    "safe_name",
    "layout",
]

TESS_PIXEL_SCALE_DEG: float = PIXEL_SCALE_DEG  # public name of the geometry module's scale


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
    if units not in SIZE_UNITS:
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


def _check_position(ra, dec) -> tuple[float, float]:
    try:
        ra, dec = float(ra), float(dec)
    except (TypeError, ValueError):
        raise BadRequest(f"invalid coordinates ra={ra!r}, dec={dec!r}") from None
    if not (math.isfinite(ra) and math.isfinite(dec) and -90.0 <= dec <= 90.0):
        raise BadRequest(f"invalid coordinates ra={ra!r}, dec={dec!r}")
    return ra, dec


def _sector_filter(sectors: Sequence[int] | None) -> set[int] | None:
    if sectors is None:
        return None
    if isinstance(sectors, (int, np.integer)):
        sectors = [sectors]
    out = set()
    for s in sectors:
        try:
            out.add(int(s))
        except (TypeError, ValueError):
            raise BadRequest(f"invalid sector {s!r}: must be an integer") from None
    # 0 means "all sectors" on the wire (astroquery tests the value for truth)
    return None if not out or out == {0} else out


def _n_cadences(total: int, max_cadences: int | None) -> int:
    return total if max_cadences is None else max(0, min(total, int(max_cadences)))


def cutout_window(ccd: CcdId, ra: float, dec: float, nx: int, ny: int, *, seed: int = 0) -> tuple[int, int]:
    """0-based FFI (row, column) of cutout pixel [0, 0] for a window centred on (ra, dec).

    The window is centred on the pixel holding the position (odd sizes) or on the pixel
    corner nearest to it (even sizes): ``first = floor(p - (n - 1) / 2 + 0.5)``.
    """
    x, y, _ = tan_world_to_pixel(layout(seed).wcs[CcdId(*ccd)], ra, dec)
    return (int(math.floor(float(y) - (ny - 1) / 2.0 + 0.5)), int(math.floor(float(x) - (nx - 1) / 2.0 + 0.5)))


def cutout_name(ccd: CcdId, ra: float, dec: float, nx: int, ny: int) -> str:
    """File name TESSCut gives a fixed-target TPF (seed doc style, width first)."""
    return f"tess-s{ccd.sector:04d}-{ccd.camera}-{ccd.ccd}_{ra:.6f}_{dec:.6f}_{nx}x{ny}_astrocut.fits"


def cutout_files(ra: float, dec: float, x: float, y: float, units: str, *, sectors: Sequence[int] | None = None,
                 max_cadences: int | None = None, seed: int = 0) -> list[tuple[str, bytes]]:
    """One astrocut-style TPF per (sector, camera, ccd) covering a position.

    Parameters
    ----------
    ra, dec : float
        Cutout centre (deg).
    x, y : float
        Wire sizes: column (width) and row extents, in ``units``.
    units : str
        ``"px"`` or ``"d"``.
    sectors : sequence of int, optional
        Only these sectors (None, empty or ``[0]``: all).
    max_cadences : int, optional
        Keep only the first N cadences of each sector.
    seed : int, optional
        Sky seed.

    Returns
    -------
    list of (str, bytes)
        ``(file name, FITS bytes)`` in sector order; empty when nothing covers the position.

    Raises
    ------
    BadRequest
        Invalid position, size, units or sector.
    """
    ra, dec = _check_position(ra, dec)
    nx, ny = parse_size(x, y, units)
    wanted = _sector_filter(sectors)
    out = []
    for c in sectors_at(ra, dec, seed=seed):
        if wanted is not None and c.sector not in wanted:
            continue
        out.append((cutout_name(c, ra, dec, nx, ny), _fixed_tpf(c, ra, dec, nx, ny, max_cadences, seed)))
    return out


def _fixed_tpf(c: CcdId, ra: float, dec: float, nx: int, ny: int, max_cadences: int | None, seed: int) -> bytes:
    cad = sector_cadences(c.sector, seed)
    n = _n_cadences(len(cad.time), max_cadences)
    row0, col0 = cutout_window(c, ra, dec, nx, ny, seed=seed)
    rows = row0 + np.arange(ny)
    cols = col0 + np.arange(nx)
    idx = np.arange(n)
    flux, err = render(c, rows[None, :], cols[None, :], idx, seed=seed)
    aperture = (((rows >= SCI_ROW0) & (rows < SCI_ROW1))[:, None]
                & ((cols >= SCI_COL0) & (cols < SCI_COL1))[None, :]).astype(np.int32)
    names = ffi_names(c, seed)
    wcs_ffi = names[len(names) // 2].decode() + "c.fits"
    primary = primary_cards(c, cad, max(n, 1), ra, dec, seed=seed)
    w = layout(seed).wcs[c]
    return tpf_bytes(c=c, cad=cad, rows_idx=idx, flux=flux, flux_err=err, primary=primary, aperture=aperture,
                     aperture_wcs=wcs_cards(w, (CRPIX[0] - col0, CRPIX[1] - row0)), ffi_file=names[:n],
                     wcs_ffi=wcs_ffi, seed=seed)


def moving_cutout_files(obj_id: str, obj_type: str | None, x: float, y: float, units: str, *,
                        sectors: Sequence[int] | None = None, max_cadences: int | None = None,
                        seed: int = 0) -> list[tuple[str, bytes]]:
    """TPFs of a moving target whose window follows its path, one per sector it crosses.

    Each file has the 12 regular PIXELS columns plus TGT_X, TGT_Y, TGT_RA, TGT_DEC; only the
    cadences on which the whole window fits on the science area, in time order; an APERTURE
    of full FFI size (numpy (2078, 2136)) with the CCD's full WCS and 1 on every pixel any
    window used. ``max_cadences`` keeps the first N such rows. The object itself is an extra
    Gaussian source, present in these files only (not in :func:`ccd_pixels`).

    Parameters
    ----------
    obj_id : str
        Object name (see :func:`moving_sectors`).
    obj_type : str or None
        Ignored.
    x, y, units
        Wire sizes, as in :func:`cutout_files`.
    sectors : sequence of int, optional
        Only these sectors.
    max_cadences : int, optional
        Keep only the first N rows of each file.
    seed : int, optional
        Sky seed.

    Returns
    -------
    list of (str, bytes)
        ``(<name>_<TSTART>-<TSTOP>_<ny>-x-<nx>_astrocut.fits, FITS bytes)`` in sector order;
        empty for an unknown object.
    """
    nx, ny = parse_size(x, y, units)
    wanted = _sector_filter(sectors)
    norm, key = _name_key(obj_id)
    out = []
    for c in moving_sectors(obj_id, obj_type, seed=seed):
        if wanted is not None and c.sector not in wanted:
            continue
        got = moving_tpf(obj_id, moving_path(norm, key, c, seed), nx, ny, max_cadences, seed)
        if got is not None:
            out.append(got)
    return out


def moving_truth(obj_id: str, ccd: CcdId, times, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sky position (ra, dec in degrees) of a moving object on one of its CCDs at BTJD ``times``."""
    norm, key = _name_key(obj_id)
    c = CcdId(*ccd)
    path = moving_path(norm, key, c, seed)
    xx, yy = path.at(times)
    return tan_pixel_to_world(layout(seed).wcs[c], xx, yy)


def ccd_pixels(ccd: CcdId, rows, cols, cadences, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The truth: FLUX and FLUX_ERR of any CCD pixels at any cadences (a "cube" view).

    Parameters
    ----------
    ccd : CcdId
        The slot.
    rows, cols : array_like of int
        0-based FFI rows and columns (1-D; the result covers their outer product).
    cadences : array_like of int
        0-based cadence indices within the sector (row ``k`` of an uncapped cutout).
    seed : int, optional
        Sky seed.

    Returns
    -------
    flux, flux_err : numpy.ndarray
        float32, shape ``(len(cadences), len(rows), len(cols))``; NaN off the science area.
    """
    ccd = CcdId(*ccd)
    rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
    cols = np.atleast_1d(np.asarray(cols, dtype=np.int64))
    cadences = np.atleast_1d(np.asarray(cadences, dtype=np.int64))
    return render(ccd, rows[None, :], cols[None, :], cadences, seed=seed)


def sector_times(sector: int, *, seed: int = 0) -> np.ndarray:
    """TIME (BTJD, mid-exposure) of every cadence of a sector (before any cap)."""
    return sector_cadences(int(sector), seed).time
