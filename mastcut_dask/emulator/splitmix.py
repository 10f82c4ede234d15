"""splitmix64, the one integer hash behind every "random" number of the emulator.

The TESS sky (:mod:`.sky`, :mod:`._tess_pixels`) and the image-cutout noise (:mod:`.imagecut`)
all derive their values from it, so a pixel is a pure function of its inputs: no state, no
generator to advance, and the same value whichever cutout asks for it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["splitmix64", "splitmix64_inplace"]

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S1, _S2, _S3 = np.uint64(30), np.uint64(27), np.uint64(31)


def splitmix64_inplace(h: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """Apply the splitmix64 finaliser to a uint64 array in place (wrapping arithmetic); return it.

    ``scratch``, a uint64 array of the same shape, saves an allocation in hot loops (its
    content is overwritten). Working in place matters there: a TESS cutout hashes one value
    per pixel and cadence.
    """
    tmp = np.empty_like(h) if scratch is None else scratch
    with np.errstate(over="ignore"):
        h += _GAMMA
        np.right_shift(h, _S1, out=tmp)
        h ^= tmp
        h *= _M1
        np.right_shift(h, _S2, out=tmp)
        h ^= tmp
        h *= _M2
        np.right_shift(h, _S3, out=tmp)
        h ^= tmp
    return h


def splitmix64(z) -> np.ndarray:
    """splitmix64 finaliser of a uint64 array, as a new array."""
    return splitmix64_inplace(np.array(z, dtype=np.uint64))
