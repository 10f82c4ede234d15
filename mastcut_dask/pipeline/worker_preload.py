"""A Dask preload that imports the decoding stack when a worker process starts.

A fresh worker otherwise imports astropy, xarray, zarr and dask.array on its first cutout:
about 1.2 s of CPU (`benchmarks/store.py` prints it), spent while requests are in flight and competing with them for the CPU.
Clusters that `mastcut_dask` starts itself use this preload; for others::

    dask worker tcp://scheduler:8786 --preload mastcut_dask.pipeline.worker_preload

or ``LocalCluster(..., preload=["mastcut_dask.pipeline.worker_preload"])``.
"""

from __future__ import annotations

import importlib

#: The modules a worker needs to fetch, decode and store a cutout.
MODULES = (
    "astropy.io.fits", "astropy.wcs", "astropy.table", "dask.array", "numcodecs", "requests",
    "xarray", "xarray.backends.zarr", "zarr", "zarr.api.asynchronous",
    "mastcut_dask.services", "mastcut_dask.decode", "mastcut_dask.store", "mastcut_dask.pipeline.tasks",
)


def import_all() -> None:
    """Import every module of `MODULES` (each at most once per process, as any import)."""
    for name in MODULES:
        importlib.import_module(name)


def dask_setup(worker=None) -> None:
    """Called by distributed when the worker starts with this module as a preload."""
    import_all()
