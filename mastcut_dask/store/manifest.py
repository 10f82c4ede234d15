"""The manifest: one current row per (target, service, product), the record of outcomes and the
basis of resume. The client owns it; workers never write it."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import posixpath
import time
import uuid
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable, Iterator, Mapping

from astropy.table import Table

from ..exceptions import InvalidQueryError, MastcutError
from .fits_files import file_digest, file_size
from .groups import is_complete_group, read_commit_marker
from .layout import (
    JOURNAL_DIR,
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    STATUSES,
    filesystem,
    forget_listings,
    is_local,
    is_object_store,
    join,
    remove_quietly,
    staging_path,
)

__all__ = ["ManifestRow", "Manifest", "rows_table"]

log = logging.getLogger(__name__)


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
        self._fs, self._root = filesystem(self.out, self.storage_options)
        self._path = join(self._root, MANIFEST_NAME)
        self._local = is_local(self._fs)
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
        forget_listings(self._fs, self._path)
        if self._fs.exists(self._path):
            with self._fs.open(self._path, "rb") as fh:
                self._read_rows(fh.read().decode("utf-8", errors="replace"), self._path)
        if not self._local:
            self._load_journal()

    def _load_journal(self) -> None:
        folder = join(self._root, JOURNAL_DIR)
        forget_listings(self._fs, folder)
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
        return rows_table(self.rows)

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
        tmp = staging_path(self._root, MANIFEST_NAME)
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
            remove_quietly(self._fs, tmp)
            raise

    def _write_journal(self, rows: list[ManifestRow]) -> None:
        """One object with ``rows`` under the journal folder (name sorts by time, then writer)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_csv())
        self._journal_seq += 1
        name = join(self._root, f"{JOURNAL_DIR}/{time.time_ns():020d}-{self._journal_writer}-"
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
        if is_object_store(self._fs):
            # One PUT of the whole body: object stores show the old or the new object, never
            # a mix, so the temporary + copy would only double the traffic.
            self._fs.pipe_file(self._path, data)
            return
        tmp = staging_path(self._root, MANIFEST_NAME)
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


def rows_table(rows: Iterable[ManifestRow]) -> Table:
    """Manifest rows as an astropy `~astropy.table.Table` with the manifest columns (``n_bytes``
    -1 where there is no file)."""
    rows = list(rows)
    cols = {name: [getattr(r, name) for r in rows] for name in MANIFEST_COLUMNS}
    cols["n_bytes"] = [-1 if v is None else v for v in cols["n_bytes"]]
    table = Table(cols, names=MANIFEST_COLUMNS, dtype=[str, str, str, str, str, str, "i8", str, str])
    table["n_bytes"].description = "size of the FITS file in bytes (-1 when none)"
    return table
