"""Reading a run's store back: every complete zarr group as one lazy `xarray.DataTree`."""

from __future__ import annotations

import posixpath
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import xarray as xr

from .groups import complete_groups
from .layout import ZARR_NAME, filesystem, is_local, store_url

__all__ = ["open_cutouts"]


def open_cutouts(out: str, storage_options: Mapping[str, Any] | None = None, *, chunks: Any = None,
                 open_threads: int = 8):
    """Open a run's datasets as a tree: target → product → Dataset, lazily.

    Only complete groups (with their commit marker) are included; half-written ones from an
    interrupted run are skipped.

    Parameters
    ----------
    out : str
        The store given to ``fetch_cutouts(out=...)``: local path or fsspec URL.
    storage_options : dict, optional
        fsspec options for OUT (e.g. ``{"endpoint_url": ..., "key": ..., "secret": ...}``).
    chunks : optional
        Passed to `xarray.open_dataset`: None (default) gives lazily indexed arrays without
        Dask; ``{}`` gives Dask arrays with the stored chunks.
    open_threads : int
        Groups opened at once (metadata reads overlap; most useful on remote stores).

    Returns
    -------
    xarray.DataTree
        ``tree["tic_307210830/s0008-1-1"].dataset`` is one cutout. Empty when nothing is stored.
    """
    fs, root = filesystem(out, storage_options)

    opts = None if is_local(fs) else dict(storage_options or {})

    def one(group: tuple[str, str]):
        rel = f"{ZARR_NAME}/{group[0]}/{group[1]}"
        # Local stores open by plain path (also for file:// URLs); remote ones by URL + options.
        url = posixpath.join(root, rel) if opts is None else store_url(out, rel)
        return xr.open_dataset(url, engine="zarr", consolidated=False, zarr_format=3, chunks=chunks,
                               backend_kwargs={"storage_options": opts} if opts else None)

    groups = complete_groups(fs, root)
    # Opening reads a dozen small metadata objects per group: overlap those reads (they are
    # round trips on object stores), since a survey run has thousands of groups.
    with ThreadPoolExecutor(max_workers=max(1, min(open_threads, len(groups)))) as pool:
        opened = list(pool.map(one, groups))
    return xr.DataTree.from_dict({f"{t}/{p}": ds for (t, p), ds in zip(groups, opened)})
