"""Where a cutout file's bytes come from: an open ``HDUList``, bytes, a local path or an fsspec
URL (gzipped or not), opened once and remembered for lazy, chunked reads."""

from __future__ import annotations

import gzip
import io
import dataclasses
import logging
import os
import zlib
from dataclasses import dataclass
from typing import Any

import fsspec
from astropy.io import fits

from ..exceptions import DecodeError

__all__ = ["Source", "FileLocation", "OpenedSource", "open_source", "MAX_GUNZIPPED_BYTES"]

log = logging.getLogger(__name__)

#: What ``src`` may be for the decoders.
Source = Any  # fits.HDUList | bytes | str | os.PathLike (annotated loosely: fsspec URLs are str)

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_FITS_MAGIC = b"SIMPLE  ="
_GZIP_MAGIC = b"\x1f\x8b"
#: largest decompressed size accepted for a gzipped FITS file (guards against gzip bombs)
MAX_GUNZIPPED_BYTES = 4 * 2**30


@dataclass(frozen=True)
class FileLocation:
    """Where the bytes of a decoded file can be read again (for lazy, chunked reads).

    Attributes
    ----------
    url : str
        A local path or an fsspec URL.
    storage_options : tuple of (str, object) pairs
        Passed to ``fsspec.open`` (frozen as pairs so the object stays hashable and picklable).
    version : tuple
        What identifies this version of the file (local: size and mtime; remote: size and
        ETag or modification time, where the filesystem says). Part of the lazy arrays' dask
        keys, so a file rewritten under the same name (a refetch) never answers from a
        result computed on the old one.
    """

    url: str
    storage_options: tuple = ()
    version: tuple = ()

    @property
    def is_local(self) -> bool:
        return "://" not in self.url or self.url.startswith("file://")

    @property
    def local_path(self) -> str:
        return self.url[len("file://"):] if self.url.startswith("file://") else self.url

    def open(self):
        """Open the file for binary reading (a plain file for local paths, else fsspec)."""
        if self.is_local:
            return open(self.local_path, "rb")

        return fsspec.open(self.url, "rb", **dict(self.storage_options)).open()


@dataclass
class OpenedSource:
    """An ``HDUList`` (or raw image bytes) with where it came from."""

    hdul: fits.HDUList | None
    raw: bytes | None  # JPG/PNG bytes (hdul is None then)
    location: FileLocation | None  # None: in memory only
    name: str  # the file name, for attrs["source_file"]
    _closers: tuple = ()
    fits_bytes: bytes | None = None  # the whole FITS file, when it was read into memory

    def close(self) -> None:
        for closer in self._closers:
            closer.close()


def open_source(src: Source, *, lazy: bool = False, storage_options: dict | None = None) -> OpenedSource:
    """Open ``src`` as FITS (or sniff a JPG/PNG) without reading data arrays.

    Parameters
    ----------
    src : HDUList, bytes, str or os.PathLike
        An open ``HDUList``, the file's bytes, a local path or an fsspec URL.
    lazy : bool
        Keep remote files open instead of reading them whole, so headers can be parsed
        without fetching the data (the caller must ``close()``).
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    OpenedSource

    Raises
    ------
    DecodeError
        If ``src`` is none of the accepted kinds, or is not FITS, JPEG or PNG.
    """
    opts = tuple(sorted((storage_options or {}).items()))
    if isinstance(src, fits.HDUList):
        # the caller's HDUList may have been edited in memory: read it through astropy only,
        # never from the file it came from
        filename = src.filename()
        return OpenedSource(src, None, None, os.path.basename(filename) if isinstance(filename, str) else "")
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _open_bytes(bytes(src), None, "")
    if isinstance(src, (str, os.PathLike)):
        text = os.fspath(src)
        loc = FileLocation(text, opts)
        name = os.path.basename(text.rstrip("/").split("?")[0])
        if loc.is_local:
            # absolute, so lazy reads (and the dask keys named after the location) still mean
            # this file after a change of directory or on a worker with another cwd
            path = os.path.abspath(loc.local_path)
            if not os.path.isfile(path):
                raise DecodeError(f"no such file: {path}")
            stat = os.stat(path)
            loc = FileLocation(path, opts, (stat.st_size, stat.st_mtime_ns))
            with open(path, "rb") as fh:
                head = fh.read(16)
            if not head.startswith(_FITS_MAGIC):
                with open(path, "rb") as fh:
                    # gzipped files are decompressed in memory: lazy reads need plain FITS
                    return _open_bytes(fh.read(), None if head.startswith(_GZIP_MAGIC) else loc, name)
            # memmap: column reads touch only the pages they need, nothing is read up front
            hdul = fits.open(path, memmap=True, lazy_load_hdus=True)
            return OpenedSource(hdul, None, loc, name, (hdul,))
        fh = loc.open()
        details = getattr(fh, "details", None) or {}
        loc = dataclasses.replace(loc, version=tuple(
            str(details[k]) for k in ("size", "ETag", "LastModified", "mtime") if k in details))
        head = fh.read(16)
        fh.seek(0)
        if lazy and head.startswith(_FITS_MAGIC):
            hdul = fits.open(fh, lazy_load_hdus=True)
            return OpenedSource(hdul, None, loc, name, (hdul, fh))
        try:
            data = fh.read()
        finally:
            fh.close()
        return _open_bytes(data, loc, name)
    raise DecodeError(f"cannot decode a {type(src).__name__}: pass an HDUList, bytes, a path or an fsspec URL")


def _gunzip(data: bytes, name: str) -> bytes:
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
        try:
            out = gz.read(MAX_GUNZIPPED_BYTES + 1)
        except (OSError, EOFError, zlib.error) as err:  # a damaged deflate stream raises zlib.error
            raise DecodeError(f"{name or 'input'}: corrupt gzip data ({err})") from err
    if len(out) > MAX_GUNZIPPED_BYTES:
        raise DecodeError(f"{name or 'input'}: gzip data expands beyond {MAX_GUNZIPPED_BYTES} bytes")
    return out


def _open_bytes(data: bytes, loc: FileLocation | None, name: str) -> OpenedSource:
    if data.startswith(_GZIP_MAGIC):
        data = _gunzip(data, name)
        loc = None  # byte offsets refer to the decompressed stream, not the file
    if data.startswith(_JPEG_MAGIC) or data.startswith(_PNG_MAGIC):
        return OpenedSource(None, data, loc, name)
    if not data.startswith(_FITS_MAGIC):
        raise DecodeError(f"{name or 'input'} is not a FITS, JPEG or PNG file "
                          f"(starts with {data[:16]!r})")
    hdul = fits.open(io.BytesIO(data), lazy_load_hdus=True)
    return OpenedSource(hdul, None, loc, name, (hdul,), fits_bytes=data)
