"""What came back from a cutout service, checked before it is trusted.

Every body is hostile until proven otherwise:

* `sniff_file` / `sniff_bytes` tell a zip archive from the known JSON replies (a "no data"
  message, sector and survey lists); anything else (an HTML page, truncated bytes) raises
  `UnexpectedResponseError`.
* `verify_zip` checks an archive's members before anything is written: absolute names,
  ``..`` components, links and other special files raise `UnsafeArchiveError`; so do more
  members, more uncompressed bytes or a higher compression ratio than `ArchiveLimits` allows
  (zip bombs). It also reads every member once (bounded), so a corrupt or truncated archive
  is caught here, where the HTTP layer can still retry it.
* `extract_zip` writes members under a destination folder only, each to a temporary name
  that is renamed into place; `read_zip_members` does the same in memory.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO, Any, Iterable

from ..exceptions import UnexpectedResponseError, UnsafeArchiveError

__all__ = [
    "ArchiveLimits",
    "NoData",
    "CutoutArchive",
    "sniff_bytes",
    "sniff_file",
    "no_data_message",
    "verify_zip",
    "extract_zip",
    "read_zip_members",
]

log = logging.getLogger(__name__)

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # local file header; empty archive
_CHUNK = 1 << 20
_MAX_JSON_BYTES = 64 * 1024 * 1024
# Below this size a member cannot be a bomb, whatever its ratio: a moving target's FFI-sized,
# mostly-zero APERTURE (2136 x 2078 int32, 17 MiB) legitimately deflates about 1000:1.
_RATIO_FLOOR = 32 * 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what one archive may unpack to.

    Attributes
    ----------
    max_bytes : int
        Total uncompressed bytes of all members.
    max_members : int
        Number of members.
    max_ratio : float
        Uncompressed / compressed size, per member and overall.
    """

    max_bytes: int = 4 * 1024**3
    max_members: int = 10_000
    max_ratio: float = 1000.0

    @classmethod
    def from_options(cls, options: Any) -> "ArchiveLimits":
        """The limits carried by a `~mastcut_dask.options.ServiceOptions`."""
        return cls(max_bytes=options.max_archive_bytes, max_members=options.max_archive_members,
                   max_ratio=options.max_compression_ratio)


@dataclass(frozen=True)
class NoData:
    """The service's JSON "no data" reply (e.g. "No FFIs found for input target...").

    Attributes
    ----------
    message : str
        The server's ``msg``, verbatim.
    url : str or None
        The request it answered.
    results_empty : bool
        True unless the reply carried a non-empty ``results`` list (HAPCut treats that as an error).
    """

    message: str
    url: str | None = None
    results_empty: bool = True


@dataclass(frozen=True)
class CutoutArchive:
    """A verified zip on disk and its member names, in archive order.

    Attributes
    ----------
    path : str
        Where the zip lies (under the destination folder, a unique name).
    members : tuple of str
        File member names.
    url : str or None
        The request it answered.
    n_bytes : int
        Size of the zip file.
    """

    path: str
    members: tuple[str, ...]
    url: str | None = None
    n_bytes: int = 0


def _kind_of_json(obj: Any, url: str | None) -> str:
    if isinstance(obj, dict):
        if isinstance(obj.get("msg"), str) and not isinstance(obj.get("surveys"), list):
            return "nodata"
        if isinstance(obj.get("results"), list):
            return "results"
        if isinstance(obj.get("surveys"), list):
            return "surveys"
        if "resolvedCoordinate" in obj:
            return "resolver"
    raise UnexpectedResponseError(
        f"Unexpected JSON from {url or 'the service'}: none of msg/results/surveys/resolvedCoordinate "
        f"({str(obj)[:120]!r})", url=url)


def sniff_bytes(head: bytes, *, url: str | None = None) -> str:
    """Classify the first bytes of a body.

    Returns
    -------
    str
        ``"zip"``, or ``"json"`` when the body starts like a JSON object (its shape is checked by `parse_json`).

    Raises
    ------
    UnexpectedResponseError
        HTML, plain text, empty or otherwise unknown bodies.
    """
    if head[:4] in _ZIP_MAGIC:
        return "zip"
    stripped = head.lstrip()
    if stripped[:1] == b"{":
        return "json"
    preview = head[:80].decode("latin-1", "replace")
    raise UnexpectedResponseError(
        f"{url or 'The service'} answered with neither a zip archive nor JSON "
        f"({len(head)} bytes starting {preview!r})", url=url)


def parse_json(data: bytes, *, url: str | None = None) -> tuple[str, Any]:
    """Parse a JSON body and name its shape: ``"nodata"``, ``"results"``, ``"surveys"`` or ``"resolver"``.

    Raises
    ------
    UnexpectedResponseError
        Truncated or malformed JSON, or an unknown shape.
    """
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UnexpectedResponseError(
            f"{url or 'The service'} sent malformed or truncated JSON ({len(data)} bytes)", url=url) from None
    return _kind_of_json(obj, url), obj


def sniff_file(path: str, *, url: str | None = None) -> str:
    """Classify a downloaded body on disk: ``"zip"`` or ``"json"`` (see `sniff_bytes`)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    return sniff_bytes(head, url=url)


def no_data_message(path_or_bytes: str | bytes, *, url: str | None = None) -> NoData:
    """Read a JSON "no data" body into a `NoData`.

    Raises
    ------
    UnexpectedResponseError
        When the JSON is not a ``msg`` reply.
    """
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data = bytes(path_or_bytes)
    else:
        if os.path.getsize(path_or_bytes) > _MAX_JSON_BYTES:
            raise UnexpectedResponseError(f"JSON reply from {url} is implausibly large", url=url)
        with open(path_or_bytes, "rb") as fh:
            data = fh.read()
    kind, obj = parse_json(data, url=url)
    if kind != "nodata":
        raise UnexpectedResponseError(f"{url or 'The service'} sent JSON without a 'msg' where a zip was expected",
                                      url=url)
    results = obj.get("results")
    return NoData(message=obj["msg"], url=url, results_empty=not results)


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member must not be written, or None."""
    name = info.filename
    if not name or "\x00" in name:
        return "an empty or NUL-containing name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "an absolute path"
    parts = norm[:-1].split("/") if info.is_dir() else norm.split("/")
    if ".." in parts:
        return "a '..' component"
    if any(part in ("", ".") for part in parts):
        # "a//b", "a/." or "." name no file of their own; "." would even replace the folder.
        return "an empty or '.' path component"
    mode = info.external_attr >> 16
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "a link or special file"
    if info.flag_bits & 0x1:
        return "encryption"
    return None


def verify_zip(source: str | IO[bytes], limits: ArchiveLimits = ArchiveLimits(), *,
               url: str | None = None) -> tuple[str, ...]:
    """Check an archive completely before anything is written from it.

    Parameters
    ----------
    source : str or binary file
        Path of the zip, or a seekable file object.
    limits : ArchiveLimits
    url : str, optional
        The request the archive answered (for error messages).

    Returns
    -------
    tuple of str
        The file member names, in archive order (directories are skipped).

    Raises
    ------
    UnsafeArchiveError
        Unsafe names or types, duplicate names, or bounds exceeded (zip bombs).
    UnexpectedResponseError
        Not a readable zip: corrupt, truncated, CRC mismatch.
    """
    return tuple(name for name, _ in _scan(source, limits, url, keep=False))


def _scan(source: str | IO[bytes], limits: ArchiveLimits, url: str | None, *,
          keep: bool) -> list[tuple[str, bytes]]:
    """Check names and bounds, then read every file member once (bounded); contents kept if ``keep``."""
    try:
        with zipfile.ZipFile(source) as zf:
            infos = zf.infolist()
            _check_infos(infos, limits, url)
            out: list[tuple[str, bytes]] = []
            total = 0
            for info in infos:
                if info.is_dir():
                    continue
                # Read every byte: declared sizes may lie, and CRC errors must surface here,
                # while the download can still be retried.
                parts: list[bytes] = []
                read = 0
                with zf.open(info) as fh:
                    while chunk := fh.read(_CHUNK):
                        read += len(chunk)
                        total += len(chunk)
                        if read > info.file_size or total > limits.max_bytes:
                            raise UnsafeArchiveError(
                                f"Archive from {url or 'the service'} refused: it unpacks beyond its declared or "
                                f"allowed size (member {info.filename!r})", url=url)
                        if keep:
                            parts.append(chunk)
                out.append((info.filename, b"".join(parts)))
            return out
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, ValueError, OSError,
            zlib.error) as err:
        # OSError: a seek past the end of a truncated file lands here too.
        raise UnexpectedResponseError(f"Corrupt or truncated zip from {url or 'the service'}: {err}", url=url) from None


def _check_infos(infos: list[zipfile.ZipInfo], limits: ArchiveLimits, url: str | None) -> None:
    where = url or "the service"
    if len(infos) > limits.max_members:
        raise UnsafeArchiveError(f"Archive from {where} has {len(infos)} members (limit {limits.max_members})",
                                 url=url)
    seen: set[str] = set()
    files: dict[str, str] = {}
    folders: set[str] = set()
    total = 0
    compressed = 0
    for info in infos:
        problem = _member_problem(info)
        if problem:
            raise UnsafeArchiveError(f"Archive from {where} refused: member {info.filename!r} has {problem}", url=url)
        key = posixpath.normpath(info.filename.replace("\\", "/")).lower()
        if key in seen:
            raise UnsafeArchiveError(f"Archive from {where} refused: duplicate member {info.filename!r}", url=url)
        seen.add(key)
        if not info.is_dir():
            files[key] = info.filename
        parent = posixpath.dirname(key)
        while parent:
            folders.add(parent)
            parent = posixpath.dirname(parent)
        total += info.file_size
        compressed += info.compress_size
        if total > limits.max_bytes:
            raise UnsafeArchiveError(
                f"Archive from {where} would unpack to more than {limits.max_bytes} bytes", url=url)
        if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise UnsafeArchiveError(
                f"Archive from {where} refused: member {info.filename!r} compresses "
                f"{info.file_size / max(info.compress_size, 1):.0f}:1 (limit {limits.max_ratio:.0f}:1)", url=url)
    clash = next((files[k] for k in files if k in folders), None)
    if clash is not None:
        # "a" and "a/b": one member would have to be both a file and a folder.
        raise UnsafeArchiveError(f"Archive from {where} refused: member {clash!r} is also a folder of other members",
                                 url=url)
    if total > _RATIO_FLOOR and total > limits.max_ratio * max(compressed, 1):
        raise UnsafeArchiveError(f"Archive from {where} refused: compression ratio above {limits.max_ratio:.0f}:1",
                                 url=url)


def _inside(dest_real: str, candidate: str) -> bool:
    return os.path.commonpath([dest_real, os.path.realpath(candidate)]) == dest_real


def extract_zip(zip_path: str, dest_dir: str, members: Iterable[str] | None = None,
                limits: ArchiveLimits = ArchiveLimits(), *, url: str | None = None) -> list[str]:
    """Extract verified members under ``dest_dir``; each is written to a temporary name, then renamed.

    Parameters
    ----------
    zip_path : str
    dest_dir : str
        Destination folder (must exist).
    members : iterable of str, optional
        Names to extract (default: every file member). Call `verify_zip` first.
    limits : ArchiveLimits
    url : str, optional

    Returns
    -------
    list of str
        The path of each member as written under ``dest_dir`` (a ``\\`` in a name separates folders).

    Raises
    ------
    UnsafeArchiveError
        A name that would land outside ``dest_dir`` (checked again here, after symlinks
        already on disk are resolved), or bounds exceeded while writing.
    """
    dest_real = os.path.realpath(dest_dir)
    written: list[str] = []
    total = 0
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
        _check_infos(infos, limits, url)
        wanted = None if members is None else set(members)
        for info in infos:
            if info.is_dir() or (wanted is not None and info.filename not in wanted):
                continue
            rel = info.filename.replace("\\", "/")
            target = os.path.join(dest_dir, *rel.split("/"))
            parent = os.path.dirname(target)
            if not _inside(dest_real, parent) or not _inside(dest_real, target):
                raise UnsafeArchiveError(
                    f"Archive member {info.filename!r} would be written outside {dest_dir!r}", url=url)
            os.makedirs(parent, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".", suffix=".part", dir=parent)
            try:
                with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                    while chunk := src.read(_CHUNK):
                        total += len(chunk)
                        if total > limits.max_bytes:
                            raise UnsafeArchiveError(
                                f"Archive from {url or 'the service'} unpacks beyond {limits.max_bytes} bytes",
                                url=url)
                        out.write(chunk)
                os.replace(tmp, target)
            except BaseException:
                _remove_quietly(tmp)
                raise
            written.append(target)
            log.debug("extracted %s", target)
    return written


def read_zip_members(source: str | IO[bytes], limits: ArchiveLimits = ArchiveLimits(), *,
                     url: str | None = None) -> list[tuple[str, bytes]]:
    """Verify an archive and return ``(name, bytes)`` for each file member, in archive order.

    Raises
    ------
    UnsafeArchiveError, UnexpectedResponseError
        As `verify_zip`.
    """
    return _scan(source, limits, url, keep=True)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
