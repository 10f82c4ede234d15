"""A local MAST-compatible cutout service (TESSCut, ZCut, HAPCut and the SANTA resolver).

See :mod:`mastcut_dask.emulator.server` for the HTTP side and
:mod:`mastcut_dask.emulator.sky` for the deterministic sky it serves.
"""

from __future__ import annotations

__all__ = ["MastEmulator"]


def __getattr__(name):
    if name == "MastEmulator":
        from .server import MastEmulator

        return MastEmulator
    raise AttributeError(name)
