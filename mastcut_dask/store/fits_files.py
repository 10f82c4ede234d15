"""FITS files as the service delivered them: written atomically under ``OUT/fits``, with their
size and sha256 (what resume verifies)."""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
from typing import IO, Any, Iterator, Mapping

from ..exceptions import InvalidQueryError
from .layout import filesystem, fits_path, forget_listings, join, remove_quietly, staging_path

__all__ = ["write_fits", "file_size", "file_digest"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


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
    fs, root = filesystem(out, storage_options)
    final = join(root, rel)
    tmp = staging_path(root, filename)
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
        remove_quietly(fs, tmp)
        raise
    log.debug("stored %s (%d bytes)", rel, n_bytes)
    return rel, n_bytes, digest.hexdigest()


def file_size(out: str, relpath: str, storage_options: Mapping[str, Any] | None = None) -> int | None:
    """Size in bytes of a stored file, or None when it does not exist (no data is read)."""
    fs, root = filesystem(out, storage_options)
    path = join(root, relpath)
    forget_listings(fs, path)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    return int(info["size"]) if info.get("type") == "file" else None


def file_digest(out: str, relpath: str, storage_options: Mapping[str, Any] | None = None) -> tuple[int, str] | None:
    """``(n_bytes, sha256)`` of a stored file, or None when it does not exist."""
    fs, root = filesystem(out, storage_options)
    path = join(root, relpath)
    forget_listings(fs, path)
    if not fs.isfile(path):
        return None
    digest = hashlib.sha256()
    n_bytes = 0
    with fs.open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
            n_bytes += len(chunk)
    return n_bytes, digest.hexdigest()
