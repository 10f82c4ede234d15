"""The run's store: FITS files, a zarr v3 tree of datasets, and the manifest.

Layout under ``OUT`` (a local path or any fsspec URL, e.g. ``s3://bucket/run1``)::

    OUT/
      manifest.csv                                   one row per (target, service, product)
      fits/<service>/<target_id>/<file as the service named it>
      cutouts.zarr/<target_id>/<product>/            zarr v3 group (one xarray Dataset)
      .staging/                                      temporary names, renamed into place
      .complete/<target_id>/<product>.json           commit markers of finished zarr groups

Worker-side functions (`write_fits`, `write_dataset`) take the ``OUT`` URL string and a plain
``storage_options`` dict, so they pickle cheaply; nothing here imports Dask. The client owns
the `Manifest`, which is the record of outcomes and the basis of resume.

Paths recorded in the manifest are *relative to OUT* (``fits/tesscut/...`` and
``<target_id>/<product>`` inside ``cutouts.zarr``), so a store can be copied or moved (local
disk to S3 and back) without rewriting it.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import time
import uuid
from dataclasses import asdict, dataclass, fields
from typing import IO, Any, Iterable, Iterator, Mapping

from .exceptions import InvalidQueryError, MastcutError, UnsafeArchiveError

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_COLUMNS",
    "STATUSES",
    "SERVICES",
    "FITS_DIR",
    "ZARR_NAME",
    "COMMIT_DIR",
    "check_name",
    "product_name",
    "product_from_sector_name",
    "fits_path",
    "zarr_group",
    "store_url",
    "resolve_out",
    "clean_staging",
    "write_fits",
    "write_dataset",
    "is_complete_group",
    "file_digest",
    "file_size",
    "ManifestRow",
    "Manifest",
    "open_cutouts",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("target_id", "service", "product", "status", "fits_path", "zarr_group",
                    "n_bytes", "sha256", "error")
STATUSES = ("done", "no_coverage", "invalid", "failed")
SERVICES = ("tesscut", "zcut", "hapcut")
FITS_DIR = "fits"
ZARR_NAME = "cutouts.zarr"
STAGING_DIR = ".staging"
#: ``.complete/<target_id>/<product>.json`` is written last: a zarr group without its marker
#: is incomplete and is never read. The markers live outside ``cutouts.zarr`` because zarr
#: warns about (and other readers may trip on) foreign files inside a hierarchy.
COMMIT_DIR = ".complete"
#: Remote manifests: each append is one small object here, folded into manifest.csv by `Manifest.flush`.
JOURNAL_DIR = ".manifest-journal"

_CHUNK = 1 << 20
# One path component: starts with a letter or digit (so never "." / ".." / hidden / "__"
# names reserved by zarr), then letters, digits and . _ + - only.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]{0,199}$")
_GROUP_META = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode()


# ---- names ---------------------------------------------------------------------------------

def check_name(name: Any, what: str = "name", *, error: type[MastcutError] = InvalidQueryError) -> str:
    """Return ``name`` if it is one safe path component, else raise.

    Safe means: 1-200 characters from letters, digits, ``.``, ``_``, ``+``, ``-``; starting
    with a letter or digit; no ``..``. Such a name cannot escape its folder, hide, or clash
    with zarr's reserved names, on any filesystem or object store.

    Parameters
    ----------
    name : str
        The candidate (a target id, a product name, a file name from a server).
    what : str
        What the name is, for the error message.
    error : type
        The exception raised: `InvalidQueryError` for user input, `UnsafeArchiveError` for
        names that came from a server.

    Raises
    ------
    InvalidQueryError or UnsafeArchiveError
    """
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise error(f"{what} {name!r} is not safe as a file or group name: use 1-200 letters, digits, "
                    "'.', '_', '+' or '-', starting with a letter or digit, and no '..'.")
    return name


_TESS_FILE = re.compile(r"^tess-(s\d{4}-\d-\d)(?:_|\.|$)")
_TESS_SECTOR_NAME = re.compile(r"^tess-(s\d{4}-\d-\d)$")
# "<survey or input stem>_<ra>_<dec>_<size>..." : the prefix is everything before the position.
_ZCUT_FILE = re.compile(r"^(?P<prefix>.+?)_[-+]?\d+(?:\.\d+)?_[-+]?\d+(?:\.\d+)?_")
_HAP_FILE = re.compile(r"^hst_cutout_skycell-(?P<cell>p\d{4}x\d{2}y\d{2})(?:-[a-z0-9]+)*?_(?P<rest>[a-z0-9][a-z0-9_]*?)"
                       r"(?:\.fits(?:\.gz)?)?$", re.IGNORECASE)
_ASTROCUT_TAIL = re.compile(r"(?:_astrocut(?:_\d+)?)?\.(?:fits(?:\.gz)?|jpg|jpeg|png)$", re.IGNORECASE)
_SLUG = re.compile(r"[^a-z0-9._+\-]+")


def product_from_sector_name(sector_name: str) -> str:
    """TESSCut's ``sectorName`` (``"tess-s0008-1-1"``) → the product name ``"s0008-1-1"``.

    Lets a planner know a product's name from discovery, before anything is fetched.

    Raises
    ------
    UnsafeArchiveError
        When the server's value does not have that shape.
    """
    m = _TESS_SECTOR_NAME.match(str(sector_name).strip())
    if not m:
        raise UnsafeArchiveError(f"Unexpected TESS sector name {sector_name!r} (expected e.g. 'tess-s0008-1-1').")
    return m.group(1)


def product_name(service: str, filename: str) -> str:
    """The product (zarr group) name for a file the service delivered.

    ========  =================================================================  ====================
    service   file name                                                          product
    ========  =================================================================  ====================
    tesscut   ``tess-s0008-1-1_135.140800_-5.191500_5x5_astrocut.fits``          ``s0008-1-1``
    tesscut   ``Eleonora_1430.5-1435.1_5-x-5_astrocut.fits`` (moving target)     ``eleonora_1430.5-1435.1_5-x-5``
    zcut      ``candels_gn_30mas_189.492060_62.206150_100.0pix-x-100.0pix_...``  ``candels_gn_30mas``
    hapcut    ``hst_cutout_skycell-p2007x09y05-ra351d3478-decn28d4978_wfc3_...``  ``p2007x09y05_wfc3_ir_f160w_coarse``
    ========  =================================================================  ====================

    HAPCut products keep the skycell: skycells overlap, so one position can get the same
    detector/filter from two skycells, and those must not overwrite each other.

    Parameters
    ----------
    service : {"tesscut", "zcut", "hapcut"}
    filename : str
        The file name as the server gave it (hostile: it is checked first).

    Returns
    -------
    str
        A safe name (see `check_name`).

    Raises
    ------
    UnsafeArchiveError
        The file name is unsafe (path separators, ``..``, hidden, odd characters).
    InvalidQueryError
        Unknown service.
    """
    _check_service(service)
    check_name(filename, "file name from the server", error=UnsafeArchiveError)
    product: str | None = None
    if service == "tesscut":
        m = _TESS_FILE.match(filename)
        if m:
            product = m.group(1)
    elif service == "zcut":
        m = _ZCUT_FILE.match(filename)
        if m:
            product = m.group("prefix").lower()
    else:
        m = _HAP_FILE.match(filename)
        if m:
            product = f"{m.group('cell')}_{m.group('rest')}".lower()
    if product is None:
        # Moving-target TPFs and unknown namings: the file stem, lower-cased, minus the
        # "_astrocut.fits" tail — deterministic, and unique per file within one response.
        stem = _ASTROCUT_TAIL.sub("", filename)
        product = _SLUG.sub("_", stem.lower()).strip("._+-")
    return check_name(product, "product name", error=UnsafeArchiveError)


def _check_service(service: str) -> str:
    if service not in SERVICES:
        raise InvalidQueryError(f"Unknown service {service!r}; use one of {', '.join(SERVICES)}.")
    return service


def fits_path(service: str, target_id: str, filename: str) -> str:
    """Where a FITS file goes, relative to OUT: ``fits/<service>/<target_id>/<filename>``."""
    _check_service(service)
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


def _fs(out: str, storage_options: Mapping[str, Any] | None):
    """(filesystem, root path inside it) for OUT."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(out), **dict(storage_options or {}))
    return fs, root.rstrip("/") or root


def _is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _object_store(fs) -> bool:
    """Stores where a single PUT replaces an object atomically (S3, GCS, Azure, memory)."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return bool({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"} & set(protocols))


def _join(root: str, relpath: str) -> str:
    return posixpath.join(root, relpath) if relpath else root


def _staging_path(root: str, label: str) -> str:
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
    fs, root = _fs(out, storage_options)
    staging = posixpath.join(root, STAGING_DIR)
    _forget_listings(fs, staging)
    if not fs.exists(staging):
        return 0
    now = time.time()
    removed = 0
    for info in fs.ls(staging, detail=True):
        age = now - _mtime(info, default=now)
        if age >= older_than:
            _remove_quietly(fs, info["name"], recursive=info.get("type") == "directory")
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


# ---- FITS ----------------------------------------------------------------------------------

def _chunks(src: bytes | bytearray | memoryview | str | os.PathLike | IO[bytes]) -> Iterator[bytes]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        view = memoryview(src)
        for i in range(0, len(view), _CHUNK):
            yield bytes(view[i:i + _CHUNK])
        return
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as fh:
            yield from iter(lambda: fh.read(_CHUNK), b"")
        return
    if hasattr(src, "read"):
        yield from iter(lambda: src.read(_CHUNK), b"")
        return
    raise InvalidQueryError(f"write_fits needs bytes, a local path or a binary file object, got {type(src).__name__}.")


def write_fits(out: str, service: str, target_id: str, filename: str,
               src: bytes | str | os.PathLike | IO[bytes],
               storage_options: Mapping[str, Any] | None = None) -> tuple[str, int, str]:
    """Store one FITS file exactly as the service delivered it, atomically.

    The bytes go to a temporary name under ``OUT/.staging`` and are then moved to
    ``OUT/fits/<service>/<target_id>/<filename>``: a local rename, or a server-side copy on
    object stores, where the object appears whole or not at all. A crash leaves at most a
    stray temporary, never a truncated file under its final name.

    Parameters
    ----------
    out : str
        The store: local path or fsspec URL.
    service : {"tesscut", "zcut", "hapcut"}
    target_id : str
        A safe target id (see `check_name`).
    filename : str
        The file name as the service named it (checked: hostile input).
    src : bytes, path or binary file object
        The content; a path is a local file on the calling machine (e.g. an extracted zip member).
    storage_options : dict, optional
        fsspec options for OUT (e.g. ``{"endpoint_url": ...}`` for S3).

    Returns
    -------
    fits_path : str
        Path relative to OUT (``fits/tesscut/tic_1/tess-s0008-....fits``), as in the manifest.
    n_bytes : int
    sha256 : str
        Hex digest of the content.
    """
    rel = fits_path(service, target_id, filename)
    fs, root = _fs(out, storage_options)
    final = _join(root, rel)
    tmp = _staging_path(root, filename)
    fs.makedirs(posixpath.dirname(tmp), exist_ok=True)
    digest = hashlib.sha256()
    n_bytes = 0
    try:
        with fs.open(tmp, "wb") as fh:
            for chunk in _chunks(src):
                digest.update(chunk)
                n_bytes += len(chunk)
                fh.write(chunk)
        fs.makedirs(posixpath.dirname(final), exist_ok=True)
        fs.mv(tmp, final)
    except BaseException:
        _remove_quietly(fs, tmp)
        raise
    log.debug("stored %s (%d bytes)", rel, n_bytes)
    return rel, n_bytes, digest.hexdigest()


def _discard(fs, path: str) -> None:
    """Remove a file if it is there; another writer removing it first is fine."""
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def _remove_quietly(fs, path: str, recursive: bool = False) -> None:
    try:
        if fs.exists(path):
            fs.rm(path, recursive=recursive)
    except OSError:  # cleanup of a temporary must never hide the original error
        log.warning("could not remove temporary %s", path)


def file_size(out: str, relpath: str, storage_options: Mapping[str, Any] | None = None) -> int | None:
    """Size in bytes of a stored file, or None when it does not exist (no data is read)."""
    fs, root = _fs(out, storage_options)
    path = _join(root, relpath)
    _forget_listings(fs, path)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    return int(info["size"]) if info.get("type") == "file" else None


def file_digest(out: str, relpath: str, storage_options: Mapping[str, Any] | None = None) -> tuple[int, str] | None:
    """``(n_bytes, sha256)`` of a stored file, or None when it does not exist."""
    fs, root = _fs(out, storage_options)
    path = _join(root, relpath)
    _forget_listings(fs, path)
    if not fs.isfile(path):
        return None
    digest = hashlib.sha256()
    n_bytes = 0
    with fs.open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
            n_bytes += len(chunk)
    return n_bytes, digest.hexdigest()


# ---- zarr ----------------------------------------------------------------------------------

def _zarr_ready(ds):
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
    fs, root = _fs(out, storage_options)
    zroot = _join(root, ZARR_NAME)
    _ensure_group_meta(fs, zroot)
    _ensure_group_meta(fs, posixpath.join(zroot, target_id))
    final = posixpath.join(zroot, group)
    marker = _marker_path(root, group)
    data = _zarr_ready(ds)
    record = {"target_id": target_id, "product": product, "variables": sorted(map(str, ds.variables))}
    if request is not None:
        record["request"] = dict(request)
    commit = json.dumps(record)
    # Small datasets (every usual cutout) are encoded in memory, in one hand-off to zarr's
    # event loop (see zarr_encode), and written as plain files: ``to_zarr`` on the final store
    # costs two to three times the CPU, which matters when a worker stores tens of products
    # per second.
    encoded = _encode_in_memory(data) if data.nbytes <= max_memory_bytes else None
    if _is_local(fs):
        tmp = _staging_path(root, f"{target_id}-{product}")
        try:
            fs.makedirs(posixpath.dirname(tmp), exist_ok=True)
            if encoded is not None:
                _write_local_files(tmp, encoded)
            else:
                data.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
            _discard(fs, marker)
            _replace_local_dir(fs, tmp, final, root)
            fs.makedirs(posixpath.dirname(marker), exist_ok=True)
            fs.pipe_file(marker, commit.encode())
        except BaseException:
            _remove_quietly(fs, tmp, recursive=True)
            raise
    else:
        _discard(fs, marker)  # first: from here on the old group no longer looks complete
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
    from .zarr_encode import encode_dataset

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
            old = _staging_path(root, "old")
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
            _remove_quietly(fs, tmp, recursive=True)
    finally:
        for old in aside:
            _remove_quietly(fs, old, recursive=True)


def _forget_listings(fs, path: str | None = None) -> None:
    """Drop cached directory listings: other processes (workers) write here behind our back."""
    try:
        fs.invalidate_cache(path)
    except (AttributeError, NotImplementedError, OSError):  # filesystems without a listings cache
        pass


def _marker_path(root: str, group: str) -> str:
    return posixpath.join(root, COMMIT_DIR, group + ".json")


def is_complete_group(out: str, group: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True when the zarr group ``<target_id>/<product>`` was written completely (its marker exists)."""
    fs, root = _fs(out, storage_options)
    _forget_listings(fs, posixpath.join(root, COMMIT_DIR))
    _forget_listings(fs, posixpath.join(root, ZARR_NAME))
    return fs.isfile(_marker_path(root, group)) and fs.isfile(posixpath.join(root, ZARR_NAME, group, "zarr.json"))


def read_commit_marker(out: str, group: str, storage_options: Mapping[str, Any] | None = None) -> dict | None:
    """The commit marker of a completely written group (see `write_dataset`), or None."""
    if not is_complete_group(out, group, storage_options):
        return None
    fs, root = _fs(out, storage_options)
    try:
        record = json.loads(fs.cat_file(_marker_path(root, group)))
    except (OSError, ValueError):  # gone meanwhile, or not ours
        return None
    return record if isinstance(record, dict) else None


def _complete_groups(fs, root: str) -> list[tuple[str, str]]:
    _forget_listings(fs, posixpath.join(root, COMMIT_DIR))
    found = []
    for path in fs.glob(posixpath.join(root, COMMIT_DIR, "*", "*.json")):
        parts = path.rstrip("/").split("/")
        target_id, product = parts[-2], parts[-1][: -len(".json")]
        if _SAFE_NAME.match(target_id) and _SAFE_NAME.match(product):
            found.append((target_id, product))
    return sorted(found)


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
    import xarray as xr

    fs, root = _fs(out, storage_options)
    from concurrent.futures import ThreadPoolExecutor

    opts = None if _is_local(fs) else dict(storage_options or {})

    def one(group: tuple[str, str]):
        rel = f"{ZARR_NAME}/{group[0]}/{group[1]}"
        # Local stores open by plain path (also for file:// URLs); remote ones by URL + options.
        url = posixpath.join(root, rel) if opts is None else store_url(out, rel)
        return xr.open_dataset(url, engine="zarr", consolidated=False, zarr_format=3, chunks=chunks,
                               backend_kwargs={"storage_options": opts} if opts else None)

    groups = _complete_groups(fs, root)
    # Opening reads a dozen small metadata objects per group: overlap those reads (they are
    # round trips on object stores), since a survey run has thousands of groups.
    with ThreadPoolExecutor(max_workers=max(1, min(open_threads, len(groups)))) as pool:
        opened = list(pool.map(one, groups))
    return xr.DataTree.from_dict({f"{t}/{p}": ds for (t, p), ds in zip(groups, opened)})


# ---- manifest ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ManifestRow:
    """One outcome: a (target, service, product) and what became of it.

    Attributes
    ----------
    target_id, service : str
    product : str
        ``s0008-1-1``, ``candels_gn_30mas``...; empty for target-level outcomes (``invalid``,
        ``no_coverage`` found by discovery, a discovery that ``failed``).
    status : {"done", "no_coverage", "invalid", "failed"}
    fits_path : str
        Relative to OUT (empty unless done).
    zarr_group : str
        Relative to ``OUT/cutouts.zarr`` (empty unless done).
    n_bytes : int or None
        Size of the FITS file.
    sha256 : str
        Hex digest of the FITS file.
    error : str
        Why it is not done (the reason for ``invalid``, the message for ``failed``).
    """

    target_id: str
    service: str
    product: str = ""
    status: str = "done"
    fits_path: str = ""
    zarr_group: str = ""
    n_bytes: int | None = None
    sha256: str = ""
    error: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise InvalidQueryError(f"Manifest status {self.status!r} is not one of {', '.join(STATUSES)}.")
        if self.n_bytes is not None and not isinstance(self.n_bytes, int):
            object.__setattr__(self, "n_bytes", int(self.n_bytes))
        for name in ("target_id", "service", "product", "fits_path", "zarr_group", "sha256", "error"):
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, "")
            elif not isinstance(value, str):
                object.__setattr__(self, name, str(value))

    @property
    def key(self) -> tuple[str, str, str]:
        """``(target_id, service, product)``: a later row with the same key replaces an earlier one."""
        return self.target_id, self.service, self.product

    def as_csv(self) -> dict[str, str]:
        """The row as CSV strings (None → empty)."""
        return {k: ("" if v is None else str(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_csv(cls, record: Mapping[str, str]) -> "ManifestRow":
        """A row read back from ``manifest.csv``."""
        values = {f.name: (record.get(f.name) or "") for f in fields(cls)}
        n_bytes = values.pop("n_bytes")
        return cls(n_bytes=int(n_bytes) if n_bytes else None, **values)


class Manifest:
    """The client's record of a run: ``OUT/manifest.csv``, loaded, appended, and used to resume.

    Rows are appended as results arrive and handed to storage at once, so a crash of the client
    loses at most what was in flight. Local files are appended and flushed to the OS (fsynced on
    `close`). Remote stores cannot append: each batch of rows is written as one small object
    under ``OUT/.manifest-journal/`` (one PUT, whatever the manifest's size), and `flush` /
    `close` (and every ``remote_flush_interval`` seconds) rewrite ``manifest.csv`` whole and
    remove the journal objects it now holds; loading reads ``manifest.csv`` and then the journal.
    Rewriting the whole file on every row would send O(rows²) bytes: 20 GB for 10,000 rows.
    A later row for the same ``(target_id, service, product)`` supersedes an earlier one, both
    in memory and on reload.

    Parameters
    ----------
    out : str
        The store: local path or fsspec URL. Created if needed.
    storage_options : dict, optional
        fsspec options for OUT.
    verify : {"sha256", "size"}
        How `is_done` checks a stored FITS file: size and sha256 (default; reads every file,
        which on a remote store means downloading it), or size only (one metadata request).
    remote_flush_interval : float
        Remote stores only: fold the journal into ``manifest.csv`` at most this often
        (seconds), plus on `flush` / `close` (default 60). Nothing recorded is lost in between:
        the journal holds it.

    Examples
    --------
    >>> m = Manifest("results/")                                      # doctest: +SKIP
    >>> if not m.should_skip("tic_1", "tesscut", "s0008-1-1"):        # doctest: +SKIP
    ...     m.append(ManifestRow("tic_1", "tesscut", "s0008-1-1", "done", ...))
    """

    def __init__(self, out: str, storage_options: Mapping[str, Any] | None = None, *,
                 remote_flush_interval: float = 60.0, verify: str = "sha256"):
        if verify not in ("sha256", "size"):
            raise InvalidQueryError(f"verify={verify!r}: use 'sha256' (read every file) or 'size' (cheap on remotes).")
        self.verify = verify
        self.out = str(out)
        self.remote_flush_interval = float(remote_flush_interval)
        self._dirty = False
        self._last_flush = time.monotonic()
        # Journal objects this manifest has read or written (and may remove once folded in);
        # a concurrent writer's newer ones are left alone.
        self._journal: list[str] = []
        self._journal_writer = uuid.uuid4().hex[:12]
        self._journal_seq = 0
        self.storage_options = dict(storage_options or {})
        self._fs, self._root = _fs(self.out, self.storage_options)
        self._path = _join(self._root, MANIFEST_NAME)
        self._local = _is_local(self._fs)
        self._rows: dict[tuple[str, str, str], ManifestRow] = {}
        # (target_id, service) → that target's keys, so per-target lookups stay O(1) on
        # manifests of 100,000 rows.
        self._by_target: dict[tuple[str, str], dict[tuple[str, str, str], None]] = {}
        self._verified: set[tuple[str, str, str]] = set()
        # Rows superseded since the file was last written whole (see `discard`): the local
        # file, written by appending, is rewritten without them on `close`.
        self._stale_on_disk = False
        # A killed writer's torn last row is still in the file: appending after it would glue
        # the next row onto it (or into its open quote), so the first write rewrites instead.
        self._torn = False
        self._load()

    # -- reading
    def _load(self) -> None:
        _forget_listings(self._fs, self._path)
        if self._fs.exists(self._path):
            with self._fs.open(self._path, "rb") as fh:
                self._read_rows(fh.read().decode("utf-8", errors="replace"), self._path)
        if not self._local:
            self._load_journal()

    def _load_journal(self) -> None:
        folder = _join(self._root, JOURNAL_DIR)
        _forget_listings(self._fs, folder)
        try:
            names = sorted(self._fs.ls(folder, detail=False))
        except FileNotFoundError:
            return
        for name in names:
            if not posixpath.basename(name).endswith(".csv"):
                continue
            try:
                text = self._fs.cat_file(name).decode("utf-8", errors="replace")
            except FileNotFoundError:  # folded in and removed by a concurrent writer meanwhile
                continue
            self._read_rows(text, name, journal=True)
            self._journal.append(name)

    def _read_rows(self, text: str, where: str, *, journal: bool = False) -> None:
        """Record the rows of one manifest (or journal object) text, in order."""
        if text and not text.endswith("\n"):
            # A crash mid-append leaves a partial last row: drop it (that result is re-fetched).
            # (Object stores never show half a journal object; other remotes might.)
            log.warning("manifest %s: ignoring an incomplete last line", where)
            text = text[: text.rfind("\n") + 1]
            self._torn = self._torn or not journal
        # newline="" keeps line breaks inside quoted fields (multi-line error messages) intact.
        # strict: a row cut inside a quoted field is an error, not a row with half a message.
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        if reader.fieldnames is not None and list(reader.fieldnames) != list(MANIFEST_COLUMNS):
            raise MastcutError(f"{where} does not have the manifest columns {', '.join(MANIFEST_COLUMNS)}; "
                               "choose another output location.")
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                # Only a killed writer's last row can be malformed; anything after it is lost
                # to this run's records (and so fetched again), never misread.
                log.warning("manifest %s: stopping at line %d: %s", where, reader.line_num, err)
                self._torn = self._torn or not journal
                break
            try:
                row = ManifestRow.from_csv(record)
            except (InvalidQueryError, ValueError, TypeError) as err:
                log.warning("manifest %s line %d ignored: %s", where, reader.line_num, err)
                continue
            self._put(row)

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self._rows.values())

    @property
    def rows(self) -> list[ManifestRow]:
        """The current rows (the latest per key), ordered by when each key's latest row came."""
        return list(self._rows.values())

    def get(self, target_id: str, service: str, product: str = "") -> ManifestRow | None:
        """The current row for a key, or None."""
        return self._rows.get((target_id, service, product))

    def rows_for(self, target_id: str, service: str | None = None) -> list[ManifestRow]:
        """All current rows of one target (optionally one service), oldest outcome first."""
        if service is None:
            return [r for r in self._rows.values() if r.target_id == target_id]
        return [self._rows[key] for key in self._by_target.get((target_id, service), ())]

    def _put(self, row: ManifestRow) -> None:
        """Record ``row`` in memory as its key's latest outcome.

        Rows stay ordered by each key's latest outcome. A product outcome supersedes the
        target's earlier target-level row (product ""): a target that failed discovery or
        resolution once and has products now is not also "failed".
        """
        self._drop(row.key)
        if row.product:
            self._drop((row.target_id, row.service, ""), stale=True)
        self._rows[row.key] = row
        self._by_target.setdefault((row.target_id, row.service), {})[row.key] = None
        self._verified.discard(row.key)

    def _drop(self, key: tuple[str, str, str], *, stale: bool = False) -> None:
        if self._rows.pop(key, None) is None:
            return
        keys = self._by_target.get(key[:2])
        if keys is not None:
            keys.pop(key, None)
        self._verified.discard(key)
        self._stale_on_disk |= stale

    def discard(self, target_id: str, service: str, product: str = "") -> None:
        """Forget the row for a key (an outcome that no longer holds); written on `close`
        (local files) or with the next write (remote stores)."""
        if self.get(target_id, service, product) is not None:
            self._drop((target_id, service, product), stale=True)
            self._dirty = True

    def to_table(self):
        """The current rows as an astropy `~astropy.table.Table` with the manifest columns."""
        from astropy.table import Table

        rows = self.rows
        cols = {name: [getattr(r, name) for r in rows] for name in MANIFEST_COLUMNS}
        cols["n_bytes"] = [-1 if v is None else v for v in cols["n_bytes"]]
        table = Table(cols, names=MANIFEST_COLUMNS,
                      dtype=[str, str, str, str, str, str, "i8", str, str])
        table["n_bytes"].description = "size of the FITS file in bytes (-1 when none)"
        return table

    # -- writing
    def append(self, row: ManifestRow) -> None:
        """Record one outcome and flush it to storage before returning."""
        self.extend([row])

    def extend(self, rows: Iterable[ManifestRow]) -> None:
        """Record several outcomes with one flush."""
        rows = list(rows)
        if not rows:
            return
        for row in rows:
            if not isinstance(row, ManifestRow):
                raise InvalidQueryError(f"Manifest rows must be ManifestRow, got {type(row).__name__}.")
        if self._local and self._torn:
            self._rewrite_local(self._merged(rows))
            self._torn = False
        elif self._local:
            self._append_local(rows)
        for row in rows:
            self._put(row)
        if not self._local:
            self._dirty = True
            self._write_journal(rows)
            if time.monotonic() - self._last_flush >= self.remote_flush_interval:
                self.flush()

    def _merged(self, rows: list[ManifestRow]) -> list[ManifestRow]:
        """The current rows with ``rows`` recorded, without changing this manifest."""
        merged = dict(self._rows)
        for row in rows:
            merged.pop(row.key, None)
            if row.product:
                merged.pop((row.target_id, row.service, ""), None)
            merged[row.key] = row
        return list(merged.values())

    def flush(self) -> None:
        """Write rows not yet on storage (remote stores with a ``remote_flush_interval``).

        Local files: rewritten whole (temporary name, fsync, rename) when rows were superseded
        since the file was last written whole, else fsynced.
        """
        if self._local:
            if self._stale_on_disk and os.path.exists(self._path):
                self._rewrite_local(list(self._rows.values()))
                self._stale_on_disk = False
            elif os.path.exists(self._path):
                with open(self._path, "rb+") as fh:
                    os.fsync(fh.fileno())
            return
        if self._dirty or self._journal:
            self._rewrite_remote()
            self._dirty = False
            self._last_flush = time.monotonic()
            done, self._journal = self._journal, []
            if done:
                # Only after manifest.csv holds their rows; a crash in between leaves objects
                # whose rows are already in the file, read again harmlessly.
                try:
                    self._fs.rm(done)
                except FileNotFoundError:
                    pass

    def close(self) -> None:
        """Flush; the manifest stays readable in memory."""
        self.flush()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _append_local(self, rows: list[ManifestRow]) -> None:
        os.makedirs(self._root, exist_ok=True)
        new = not os.path.exists(self._path) or os.path.getsize(self._path) == 0
        with open(self._path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow(row.as_csv())
            # Handing the bytes to the OS is enough to survive a crash of this process; the
            # fsync against power loss is done once, on close, as it costs milliseconds each.
            fh.flush()

    def _rewrite_local(self, rows: list[ManifestRow]) -> None:
        """Replace the file with ``rows`` (temporary name, fsync, rename): drops a torn tail."""
        tmp = _staging_path(self._root, MANIFEST_NAME)
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
                writer.writeheader()
                for row in rows:
                    writer.writerow(row.as_csv())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            _remove_quietly(self._fs, tmp)
            raise

    def _write_journal(self, rows: list[ManifestRow]) -> None:
        """One object with ``rows`` under the journal folder (name sorts by time, then writer)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_csv())
        self._journal_seq += 1
        name = _join(self._root, f"{JOURNAL_DIR}/{time.time_ns():020d}-{self._journal_writer}-"
                                 f"{self._journal_seq:08d}.csv")
        self._fs.pipe_file(name, buf.getvalue().encode("utf-8"))
        self._journal.append(name)

    def _rewrite_remote(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self._rows.values():
            writer.writerow(row.as_csv())
        data = buf.getvalue().encode("utf-8")
        if _object_store(self._fs):
            # One PUT of the whole body: object stores show the old or the new object, never
            # a mix, so the temporary + copy would only double the traffic.
            self._fs.pipe_file(self._path, data)
            return
        tmp = _staging_path(self._root, MANIFEST_NAME)
        self._fs.pipe_file(tmp, data)
        self._fs.mv(tmp, self._path)

    # -- resume
    def is_done(self, row: ManifestRow | None, *, request: Mapping[str, Any] | None = None) -> bool:
        """True when ``row`` is ``done`` and its results verify.

        Verified: the FITS file (if the row has one) exists with the recorded size and sha256,
        and the zarr group (if the row has one) exists with its commit marker. A truncated or
        corrupted file is therefore not done. Rows with neither are never done. With
        ``request``, the group must also have been made for that request (as recorded by
        `write_dataset`): a rerun with another size or position is not a cache hit.
        """
        if row is None or row.status != "done" or not (row.fits_path or row.zarr_group):
            return False
        if request is not None and row.zarr_group:
            marker = read_commit_marker(self.out, row.zarr_group, self.storage_options)
            if marker is None:
                return False
            if marker.get("request", request) != json.loads(json.dumps(request)):
                log.info("%s/%s was made for %s; fetching again for %s", row.target_id, row.product,
                         marker.get("request"), request)
                return False
        if row.key in self._verified and self._rows.get(row.key) == row:
            return True
        if row.fits_path and self.verify == "size":
            size = file_size(self.out, row.fits_path, self.storage_options)
            if size is None or size != row.n_bytes:
                return False
        elif row.fits_path:
            got = file_digest(self.out, row.fits_path, self.storage_options)
            if got is None or got != (row.n_bytes, row.sha256):
                if got is not None:
                    log.info("%s/%s: stored FITS does not match the manifest; fetching again",
                             row.target_id, row.product)
                return False
        if row.zarr_group and not is_complete_group(self.out, row.zarr_group, self.storage_options):
            return False
        if self._rows.get(row.key) == row:
            self._verified.add(row.key)
        return True

    def should_skip(self, target_id: str, service: str, product: str = "", *, retry_failed: bool = False,
                    request: Mapping[str, Any] | None = None) -> bool:
        """Whether a run can leave this (target, service, product) alone.

        ``done`` rows are skipped when they verify (`is_done`, with ``request``); ``no_coverage`` and
        ``invalid`` rows are skipped unless ``retry_failed``; ``failed`` rows and unknown keys
        are always (re)done.
        """
        row = self.get(target_id, service, product)
        if row is None:
            return False
        if row.status == "done":
            return self.is_done(row, request=request)
        if row.status in ("no_coverage", "invalid"):
            return not retry_failed
        return False

    def done_products(self, target_id: str, service: str) -> list[str]:
        """Products of a target that are done and verify (e.g. to skip a sector on resume)."""
        return [r.product for r in self.rows_for(target_id, service) if r.status == "done" and self.is_done(r)]
