"""The layout of a run's store, and the file-system plumbing every writer shares.

Layout under ``OUT`` (a local path or any fsspec URL, e.g. ``s3://bucket/run1``)::

    OUT/
      manifest.csv                                   one row per (target, service, product)
      fits/<service>/<target_id>/<file as the service named it>
      cutouts.zarr/<target_id>/<product>/            zarr v3 group (one xarray Dataset)
      .staging/                                      temporary names, renamed into place
      .complete/<target_id>/<product>.json           commit markers of finished zarr groups
      .manifest-journal/                             remote stores: appended manifest rows

Worker-side functions take the ``OUT`` URL string and a plain ``storage_options`` dict, so
they pickle cheaply; nothing in `mastcut_dask.store` imports Dask.

Paths recorded in the manifest are *relative to OUT* (``fits/tesscut/...`` and
``<target_id>/<product>`` inside ``cutouts.zarr``), so a store can be copied or moved (local
disk to S3 and back) without rewriting it.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
import uuid
from typing import Any, Mapping

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..exceptions import UnsafeArchiveError
from ..services.catalog import check_service
from ..targets import check_name

__all__ = [
    "MANIFEST_NAME", "MANIFEST_COLUMNS", "STATUSES", "FITS_DIR", "ZARR_NAME", "STAGING_DIR", "COMMIT_DIR",
    "JOURNAL_DIR", "LIGHTCURVE_PRODUCT", "fits_path", "zarr_group", "store_url", "resolve_out", "filesystem", "is_local",
    "is_object_store", "join", "staging_path", "clean_staging", "discard", "remove_quietly", "forget_listings",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("target_id", "service", "product", "status", "fits_path", "zarr_group",
                    "n_bytes", "sha256", "error")
STATUSES = ("done", "no_coverage", "invalid", "failed")
FITS_DIR = "fits"
ZARR_NAME = "cutouts.zarr"
STAGING_DIR = ".staging"
#: ``.complete/<target_id>/<product>.json`` is written last: a zarr group without its marker
#: is incomplete and is never read. The markers live outside ``cutouts.zarr`` because zarr
#: warns about (and other readers may trip on) foreign files inside a hierarchy.
COMMIT_DIR = ".complete"
#: Product name of a target's stitched light curve (its zarr group is ``<target_id>/lightcurve``).
LIGHTCURVE_PRODUCT = "lightcurve"
#: Remote manifests: each append is one small object here, folded into manifest.csv by `Manifest.flush`.
JOURNAL_DIR = ".manifest-journal"



def fits_path(service: str, target_id: str, filename: str) -> str:
    """Where a FITS file goes, relative to OUT: ``fits/<service>/<target_id>/<filename>``."""
    check_service(service)
    check_name(target_id, "target id")
    check_name(filename, "file name from the server", error=UnsafeArchiveError)
    return posixpath.join(FITS_DIR, service, target_id, filename)


def zarr_group(target_id: str, product: str) -> str:
    """The zarr group of a product, relative to ``OUT/cutouts.zarr``: ``<target_id>/<product>``."""
    check_name(target_id, "target id")
    check_name(product, "product name")
    return f"{target_id}/{product}"


def store_url(out: str, relpath: str = "") -> str:
    """``OUT`` joined with a relative store path, keeping the URL's protocol (``s3://b/run/fits/...``)."""
    out = str(out)
    if not relpath:
        return out
    if "://" in out:
        return out.rstrip("/") + "/" + relpath.lstrip("/")
    return os.path.join(out, *relpath.split("/"))


def resolve_out(out: str | os.PathLike) -> str:
    """OUT as workers should get it: local paths made absolute (a worker process may run in
    another directory), URLs unchanged. ``file://`` URLs become plain absolute paths."""
    text = os.fspath(out)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if "://" in text or "::" in text:
        return text
    return os.path.abspath(os.path.expanduser(text))


def filesystem(out: str, storage_options: Mapping[str, Any] | None):
    """(filesystem, root path inside it) for OUT."""
    fs, root = fsspec.core.url_to_fs(str(out), **dict(storage_options or {}))
    return fs, root.rstrip("/") or root


def is_local(fs) -> bool:
    """Whether ``fs`` is the local disk (where a folder can be renamed into place)."""
    return isinstance(fs, LocalFileSystem)


def is_object_store(fs) -> bool:
    """Stores where a single PUT replaces an object atomically (S3, GCS, Azure, memory)."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return bool({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"} & set(protocols))


def join(root: str, relpath: str) -> str:
    """A store-relative path under ``root`` (``root`` itself for an empty one)."""
    return posixpath.join(root, relpath) if relpath else root


def staging_path(root: str, label: str) -> str:
    """A fresh temporary name under ``OUT/.staging`` for one write attempt."""
    # A fresh random name per attempt: two workers retrying the same product never share a
    # temporary; only the final name is derived from the request.
    return posixpath.join(root, STAGING_DIR, f"{uuid.uuid4().hex}-{label}")


def clean_staging(out: str, storage_options: Mapping[str, Any] | None = None, *,
                  older_than: float = 3600.0) -> int:
    """Remove temporaries that crashed or killed writers left under ``OUT/.staging``.

    Nothing there is ever read, so this only frees space. Entries younger than
    ``older_than`` seconds are kept, as a writer of a run still going may own them.

    Returns
    -------
    int
        How many entries were removed.
    """
    fs, root = filesystem(out, storage_options)
    staging = posixpath.join(root, STAGING_DIR)
    forget_listings(fs, staging)
    if not fs.exists(staging):
        return 0
    now = time.time()
    removed = 0
    for info in fs.ls(staging, detail=True):
        age = now - _mtime(info, default=now)
        if age >= older_than:
            remove_quietly(fs, info["name"], recursive=info.get("type") == "directory")
            removed += 1
    return removed


def _mtime(info: Mapping[str, Any], default: float) -> float:
    """Modification time (epoch seconds) from an fsspec ``info`` dict, whatever the backend calls it."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return default


def discard(fs, path: str) -> None:
    """Remove a file if it is there; another writer removing it first is fine."""
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def remove_quietly(fs, path: str, recursive: bool = False) -> None:
    """Remove a temporary file or folder if it is there; a failure is logged, never raised."""
    try:
        if fs.exists(path):
            fs.rm(path, recursive=recursive)
    except OSError:  # cleanup of a temporary must never hide the original error
        log.warning("could not remove temporary %s", path)


def forget_listings(fs, path: str | None = None) -> None:
    """Drop cached directory listings: other processes (workers) write here behind our back."""
    try:
        fs.invalidate_cache(path)
    except (AttributeError, NotImplementedError, OSError):  # filesystems without a listings cache
        pass
