"""One zarr v3 group per (target, product) under ``OUT/cutouts.zarr``, made atomic by a commit
marker written last. (A second layout, stacks of many targets, will sit beside this file.)"""

from __future__ import annotations

import errno
import json
import logging
import os
import posixpath
from typing import Any, Mapping

from ..exceptions import MastcutError
from ..targets import is_safe_name
from .layout import (
    COMMIT_DIR,
    ZARR_NAME,
    discard,
    filesystem,
    forget_listings,
    is_local,
    join,
    remove_quietly,
    staging_path,
    store_url,
    zarr_group,
)
from .zarr_encode import encode_dataset

__all__ = ["write_dataset", "is_complete_group", "read_commit_marker", "complete_groups", "zarr_ready",
           "IN_MEMORY_BYTES"]

log = logging.getLogger(__name__)

_GROUP_META = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode()


def zarr_ready(ds):
    """A copy of ``ds`` whose fixed-width strings are variable-length.

    zarr 3 writes numpy ``<U`` arrays with a data type that has no zarr v3 specification
    (and warns); object strings use the specified ``string`` type. Read back, they compare
    equal to the original ``<U`` values.
    """
    out = ds.copy(deep=False)
    for name, var in ds.variables.items():
        if var.dtype.kind == "U":
            new = var.astype(object)
            new.encoding = {}
            if name in ds.coords:
                out = out.assign_coords({name: new})
            else:
                out[name] = new
    for var in out.variables.values():
        # Encodings inherited from a source file (e.g. FITS scaling) do not apply to zarr.
        var.encoding = {}
    return out


def _ensure_group_meta(fs, path: str) -> None:
    """Make ``path`` an (empty) zarr v3 group if it is not one already.

    Parents must be groups for the tree to be a valid zarr hierarchy. Several workers may do
    this at once; they all write the same bytes, so the race is harmless.
    """
    meta = posixpath.join(path, "zarr.json")
    if not fs.exists(meta):
        fs.makedirs(path, exist_ok=True)
        fs.pipe_file(meta, _GROUP_META)


#: Datasets up to this size are encoded in memory and written as plain files (see `write_dataset`).
IN_MEMORY_BYTES = 64 * 1024**2


def write_dataset(out: str, target_id: str, product: str, ds,
                  storage_options: Mapping[str, Any] | None = None, *,
                  max_memory_bytes: int = IN_MEMORY_BYTES, request: Mapping[str, Any] | None = None) -> str:
    """Write one decoded dataset as the zarr v3 group ``OUT/cutouts.zarr/<target_id>/<product>``.

    Atomicity: a group counts as written only once its commit marker
    (``OUT/.complete/<target_id>/<product>.json``) exists, and the marker is written last. On a local disk the
    group is additionally written under ``OUT/.staging`` and renamed into place, so the final
    name never holds half a group. On object stores a directory cannot be renamed atomically
    (a "move" is one copy per object), so the group is written in place after its old marker
    is removed; readers (`open_cutouts`, `Manifest.is_done`) ignore groups without a marker.

    Parameters
    ----------
    out : str
        The store: local path or fsspec URL.
    target_id, product : str
        Safe names (see `check_name`, `product_name`).
    ds : xarray.Dataset
        The decoded cutout; attrs must be JSON-safe.
    storage_options : dict, optional
        fsspec options for OUT.
    max_memory_bytes : int
        Datasets up to this size are encoded in memory first and written as plain files
        (less than half the CPU of ``to_zarr``); larger ones stream through zarr.
    request : dict, optional
        JSON-safe description of the request the dataset answers (size, position...), kept in
        the commit marker so that a rerun asking for something else is not taken for a cache
        hit (see `Manifest.is_done`).

    Returns
    -------
    str
        The group relative to ``cutouts.zarr`` (``<target_id>/<product>``), as in the manifest.
    """
    group = zarr_group(target_id, product)
    fs, root = filesystem(out, storage_options)
    zroot = join(root, ZARR_NAME)
    _ensure_group_meta(fs, zroot)
    _ensure_group_meta(fs, posixpath.join(zroot, target_id))
    final = posixpath.join(zroot, group)
    marker = marker_path(root, group)
    data = zarr_ready(ds)
    record = {"target_id": target_id, "product": product, "variables": sorted(map(str, ds.variables))}
    if request is not None:
        record["request"] = dict(request)
    commit = json.dumps(record)
    # Small datasets (every usual cutout) are encoded in memory, in one hand-off to zarr's
    # event loop (see zarr_encode), and written as plain files: ``to_zarr`` on the final store
    # costs two to three times the CPU, which matters when a worker stores tens of products
    # per second.
    encoded = _encode_in_memory(data) if data.nbytes <= max_memory_bytes else None
    if is_local(fs):
        tmp = staging_path(root, f"{target_id}-{product}")
        try:
            fs.makedirs(posixpath.dirname(tmp), exist_ok=True)
            if encoded is not None:
                _write_local_files(tmp, encoded)
            else:
                data.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
            discard(fs, marker)
            _replace_local_dir(fs, tmp, final, root)
            fs.makedirs(posixpath.dirname(marker), exist_ok=True)
            fs.pipe_file(marker, commit.encode())
        except BaseException:
            remove_quietly(fs, tmp, recursive=True)
            raise
    else:
        discard(fs, marker)  # first: from here on the old group no longer looks complete
        if fs.exists(final):
            fs.rm(final, recursive=True)
        if encoded is not None:
            # One batched call: s3fs and friends upload the objects concurrently.
            fs.pipe({posixpath.join(final, key): value for key, value in encoded.items()})
        else:
            url = store_url(out, f"{ZARR_NAME}/{group}")
            data.to_zarr(url, mode="w", zarr_format=3, consolidated=False,
                         storage_options=dict(storage_options or {}))
        fs.makedirs(posixpath.dirname(marker), exist_ok=True)
        fs.pipe_file(marker, commit.encode())
    log.debug("stored zarr group %s", group)
    return group


def _encode_in_memory(data) -> dict[str, bytes]:
    """The zarr v3 store of ``data`` as ``{key: bytes}`` (keys like ``flux/zarr.json``, ``flux/c/0/0/0``)."""
    return encode_dataset(data)


def _write_local_files(root: str, encoded: Mapping[str, bytes]) -> None:
    made: set[str] = set()  # each folder once: a group has ~25 objects in a dozen folders
    for key, value in encoded.items():
        parts = key.split("/")
        # Keys come from zarr for our own variable names; still, never write outside root.
        if any(part in ("", ".", "..") for part in parts):
            raise MastcutError(f"refusing zarr key {key!r}")
        path = os.path.join(root, *parts)
        folder = os.path.dirname(path)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        with open(path, "wb") as fh:
            fh.write(value)


#: What rename() says when the target is a non-empty folder (POSIX allows either).
_DIR_IN_THE_WAY = (errno.ENOTEMPTY, errno.EEXIST)


def _replace_local_dir(fs, tmp: str, final: str, root: str) -> None:
    """Rename a finished directory into place, replacing an older one.

    The old group is moved aside and the new one renamed in right after, so the final name
    is never half-filled, only absent for an instant (and its marker is already gone). The
    loop covers a second writer of the same group (a task re-run by Dask) landing in between.
    """
    os.makedirs(os.path.dirname(final), exist_ok=True)
    aside: list[str] = []
    try:
        for _ in range(5):
            try:
                os.replace(tmp, final)  # atomic; fails only if ``final`` is a non-empty dir
                return
            except OSError as err:
                # Not "is final a folder now?": another writer may move it aside in between.
                if err.errno not in _DIR_IN_THE_WAY:
                    raise
            old = staging_path(root, "old")
            try:
                os.replace(final, old)
                aside.append(old)
            except FileNotFoundError:
                pass  # the other writer moved it first
        try:
            os.replace(tmp, final)
        except OSError as err:
            if err.errno not in _DIR_IN_THE_WAY:
                raise
            # Writers of this same group kept landing first. Each wrote the same request whole,
            # so the version in place is as good as ours: keep it rather than fail the task.
            remove_quietly(fs, tmp, recursive=True)
    finally:
        for old in aside:
            remove_quietly(fs, old, recursive=True)


def marker_path(root: str, group: str) -> str:
    """Where the commit marker of ``<target_id>/<product>`` lives: ``OUT/.complete/<group>.json``."""
    return posixpath.join(root, COMMIT_DIR, group + ".json")


def is_complete_group(out: str, group: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True when the zarr group ``<target_id>/<product>`` was written completely (its marker exists)."""
    fs, root = filesystem(out, storage_options)
    forget_listings(fs, posixpath.join(root, COMMIT_DIR))
    forget_listings(fs, posixpath.join(root, ZARR_NAME))
    return fs.isfile(marker_path(root, group)) and fs.isfile(posixpath.join(root, ZARR_NAME, group, "zarr.json"))


def read_commit_marker(out: str, group: str, storage_options: Mapping[str, Any] | None = None) -> dict | None:
    """The commit marker of a completely written group (see `write_dataset`), or None."""
    if not is_complete_group(out, group, storage_options):
        return None
    fs, root = filesystem(out, storage_options)
    try:
        record = json.loads(fs.cat_file(marker_path(root, group)))
    except (OSError, ValueError):  # gone meanwhile, or not ours
        return None
    return record if isinstance(record, dict) else None


def complete_groups(fs, root: str) -> list[tuple[str, str]]:
    """Every ``(target_id, product)`` whose commit marker exists, sorted (names checked: the
    store may hold files that are not ours)."""
    forget_listings(fs, posixpath.join(root, COMMIT_DIR))
    found = []
    for path in fs.glob(posixpath.join(root, COMMIT_DIR, "*", "*.json")):
        parts = path.rstrip("/").split("/")
        target_id, product = parts[-2], parts[-1][: -len(".json")]
        if is_safe_name(target_id) and is_safe_name(product):
            found.append((target_id, product))
    return sorted(found)
