"""The Dask wiring: target lists → throttled tasks → FITS + zarr + manifest, with resume.

``fetch_cutouts`` plans a run and returns a `CutoutRun`; nothing is fetched until
``.compute()`` (or ``.persist()``). The run is driven from the client with futures and
`distributed.as_completed`: what a run must fetch is only known once names are resolved and
sectors or surveys discovered, so the graph grows as results arrive:

* names without a position → one resolve task per batch of up to 30 names;
* each target without a named sector/survey → one discovery task (TESSCut sectors or ZCut
  surveys; HAPCut has none);
* each (target, product) → one fetch task (one TESS sector, one ZCut survey, one HAPCut
  request) that writes the FITS files as delivered and then, back in the worker's thread pool,
  decodes each one and stores it as a zarr group (`fetch_and_store`: the three stages as one
  task, so a cutout costs one scheduler round trip and its dataset never leaves the worker);
  with light curves, one photometry task per target at the end.

Keys are tokenised from the request (never from the clock) and the run, so the same request
twice in a run is one task, and no run reuses an earlier run's result. Network tasks (resolve,
discover, fetch) take a lease from the cluster-wide `~mastcut_dask.throttle.ClusterThrottle`
only while bytes move, and wait and download *seceded* from the worker's thread pool, so
waiting for a lease never keeps decode, store or photometry work from running;
the driver keeps a bounded window of network tasks submitted, so workers never hold
whole-run state. The manifest is written by the client as each outcome arrives.

This module and `mastcut_dask.throttle` are the only importers of dask/distributed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import posixpath
import re
import tempfile
import threading
import time
import uuid
import weakref
import zipfile
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .exceptions import InvalidQueryError, MastcutError
from .options import ServiceOptions, ThrottleOptions

__all__ = ["fetch_cutouts", "local_cluster", "CutoutRun", "RunSettings"]

log = logging.getLogger(__name__)

SERVICES = ("tesscut", "zcut", "hapcut")
#: Names per resolver request (SANTA's batch size, as astroquery).
RESOLVE_BATCH = 30
#: Product name of a target's stitched light curve in the zarr store.
LIGHTCURVE_PRODUCT = "lightcurve"
_NETWORK_PRIORITY = 10


# ---- what crosses to workers ---------------------------------------------------------------
@dataclass(frozen=True)
class RunSettings:
    """Everything a worker needs for one run, as plain values.

    Attributes
    ----------
    service : {"tesscut", "zcut", "hapcut"}
    out : str
        The store: local path or fsspec URL.
    storage_options : tuple of (str, value) pairs
        fsspec options for ``out`` (a tuple, so the record stays hashable).
    service_options : ServiceOptions
    throttle_options : ThrottleOptions
    """

    service: str
    out: str
    storage_options: tuple[tuple[str, Any], ...] = ()
    service_options: ServiceOptions = ServiceOptions()
    throttle_options: ThrottleOptions = ThrottleOptions()

    @property
    def storage(self) -> dict[str, Any]:
        """``storage_options`` as a dict."""
        return dict(self.storage_options)


@dataclass(frozen=True)
class FetchRequest:
    """One fetch: a target and, where known, the one sector or survey to ask for.

    Attributes
    ----------
    target : Target
        Resolved (a position, or a moving target's name).
    sector : int or None
        TESSCut sector (None: every sector the service has).
    survey : str or None
        ZCut survey (None: every survey).
    products : tuple of str
        Products discovery announced for this request (empty when unknown in advance).
    record : str
        `request_record` of the target as listed (JSON), kept with each stored group.
    """

    target: Any
    sector: int | None = None
    survey: str | None = None
    products: tuple[str, ...] = ()
    record: str = ""


@dataclass(frozen=True)
class StoredFits:
    """A FITS file a fetch task stored under ``OUT/fits``, and what became of its dataset.

    ``zarr_group`` is set once the decoded dataset is stored; ``error`` says why decoding or
    storing failed (the FITS file is kept either way).
    """

    filename: str
    product: str
    fits_path: str
    n_bytes: int
    sha256: str
    zarr_group: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class FetchResult:
    """What a fetch task brings home: the stored files, or the service's "no data" message."""

    files: tuple[StoredFits, ...] = ()
    no_data: str | None = None


# ---- stage functions (plain; run on workers, also usable without Dask) ---------------------
def _secede() -> bool:
    """Leave the worker's thread pool when inside a Dask task; True if this thread did.

    Network tasks spend their time waiting for a lease and for bytes; seceding hands their
    thread slot to CPU work meanwhile. Resolve and discovery tasks never rejoin: rejoining
    waits for a free slot, and a small answer waiting behind CPU work would hold back the
    next requests. The seceded thread simply ends with the task.
    """
    try:
        from distributed import secede
        from distributed.worker import thread_state
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    if getattr(thread_state, "execution_state", None) is None:
        return False  # called directly, not as a task
    secede()
    return True


@contextlib.contextmanager
def _seceded() -> Any:
    """Run the block outside the worker's thread pool (see `_secede`), never rejoining."""
    _secede()
    yield


# Per worker (weakly keyed): a semaphore with one permit per worker thread, taken by a seceded
# task for its CPU work. See `_cpu_slot`.
_CPU_SLOTS: "weakref.WeakKeyDictionary[Any, threading.BoundedSemaphore]" = weakref.WeakKeyDictionary()
_CPU_SLOTS_LOCK = threading.Lock()


@contextlib.contextmanager
def _cpu_slot() -> Any:
    """Hold one of this worker's CPU places (as many as it has threads) for the block.

    A fetch task decodes and stores its files still seceded, under this semaphore, rather than
    `rejoin`-ing the thread pool: a rejoining thread takes the pool's next free turn ahead of
    queued tasks, so while decode work is backed up the next fetch tasks could not even start
    waiting for their lease, and places at the service went unused (measured: a free place sat
    empty for a whole request in one turn of ten). This keeps the pool free for tasks that only
    start and secede, while decode and store still run no more at once than the worker has threads.
    Outside a worker the block simply runs.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        yield
        return
    with _CPU_SLOTS_LOCK:
        slots = _CPU_SLOTS.get(worker)
        if slots is None:
            slots = _CPU_SLOTS[worker] = threading.BoundedSemaphore(max(1, int(worker.state.nthreads)))
    with slots:
        yield


def _throttle(settings: RunSettings):
    from .throttle import ClusterThrottle

    return ClusterThrottle(settings.throttle_options)


def resolve_batch(names: tuple[str, ...], settings: RunSettings) -> dict[str, Any]:
    """Resolve object names through SANTA.

    Returns
    -------
    dict
        Name → ``(ra, dec)`` in degrees, or → the reason (str) when the resolver cannot place it.
    """
    from . import resolve

    with _seceded():
        positions, errors = resolve.resolve_names_detailed(names, settings.service_options,
                                                           throttle=_throttle(settings))
    answer: dict[str, Any] = {name: (float(ra), float(dec)) for name, (ra, dec) in positions.items()}
    answer.update({name: str(err) for name, err in errors.items()})
    return answer


def discover(target, settings: RunSettings) -> tuple[tuple[Any, str], ...]:
    """What the service has for one target.

    Returns
    -------
    tuple of (key, product)
        TESSCut: ``(sector, "s0008-1-1")`` per sector/camera/CCD; ZCut: ``(survey, survey)``.
        Empty when the position is not covered.
    """
    from . import clients
    from .store import product_from_sector_name

    throttle = _throttle(settings)
    with _seceded():
        if settings.service == "tesscut":
            if target.moving:
                rows = clients.query_sectors(settings.service_options, obj_id=target.name,
                                             obj_type=target.mt_type, throttle=throttle)
            else:
                rows = clients.query_sectors(settings.service_options, ra=target.ra, dec=target.dec,
                                             throttle=throttle)
            return tuple((int(r["sector"]), product_from_sector_name(r["sectorName"])) for r in rows)
        if settings.service == "zcut":
            surveys = clients.query_surveys(settings.service_options, ra=target.ra, dec=target.dec,
                                            throttle=throttle)
            return tuple((str(s), str(s)) for s in surveys)
    raise InvalidQueryError(f"{settings.service} has no discovery step")


def fetch(request: FetchRequest, settings: RunSettings) -> FetchResult:
    """Download one cutout archive and store its FITS files under ``OUT/fits`` as delivered.

    The archive goes to a private temporary folder on the worker and is removed afterwards;
    the lease is held by the HTTP layer only while the bytes move.
    """
    with _seceded():
        return _download(request, settings)


def fetch_and_store(request: FetchRequest, settings: RunSettings) -> FetchResult:
    """`fetch`, then `decode` and `store` each FITS file it brought: one task per request.

    The whole task runs outside the worker's thread pool (waiting for a lease blocks no CPU
    work); decoding and storing then take one of the worker's CPU places (`_cpu_slot`), so a
    worker never decodes more cutouts at once than it has threads. One
    task instead of three per product spares two scheduler round trips per cutout, and the
    decoded dataset never leaves the worker that downloaded the file.

    Returns
    -------
    FetchResult
        Each file with its ``zarr_group``, or the ``error`` that kept it from being stored.
    """
    _secede()
    fetched = _download(request, settings)
    if not fetched.files:
        return fetched
    with _cpu_slot():
        return dataclasses.replace(fetched, files=_decode_and_store(fetched.files, request, settings))


def _decode_and_store(files: tuple[StoredFits, ...], request: FetchRequest, settings: RunSettings) -> tuple[StoredFits, ...]:
    stored = []
    record = json.loads(request.record) if request.record else request_record(settings.service, request.target)
    for item in files:
        try:
            group = store(decode(item.fits_path, settings), request.target.target_id, item.product, settings,
                          request=record)
        except MastcutError as err:
            log.info("%s: decode/store failed: %s", item.fits_path, err)
            stored.append(dataclasses.replace(item, error=_describe_error(err)))
        except Exception as err:  # noqa: BLE001 - a bug on one file must not fail its siblings
            # Logged with its traceback (a decoder bug wants fixing), and recorded as this
            # product's failure: the request's other files are stored all the same.
            log.warning("%s: decode/store failed unexpectedly", item.fits_path, exc_info=True)
            stored.append(dataclasses.replace(item, error=_describe_error(err)))
        else:
            stored.append(dataclasses.replace(item, zarr_group=group))
    return tuple(stored)


def _download(request: FetchRequest, settings: RunSettings) -> FetchResult:
    from . import clients
    from .archive import NoData
    from .store import check_name, product_name, write_fits
    from .targets import CutoutRequest
    from .exceptions import UnsafeArchiveError

    target = request.target
    wire = dataclasses.replace(
        CutoutRequest.for_target(settings.service, target),
        sector=request.sector, survey=request.survey,
        cutout_format="fits" if settings.service == "zcut" else None)
    with tempfile.TemporaryDirectory(prefix="mastcut-") as tmp:
        got = clients.download_cutout_archive(settings.service_options, wire, tmp, throttle=_throttle(settings))
        if isinstance(got, NoData):
            return FetchResult(no_data=got.message or "no data")
        stored = []
        seen = set()
        with zipfile.ZipFile(got.path) as zf:
            for member in got.members:
                filename = posixpath.basename(member)
                if not filename.lower().endswith((".fits", ".fits.gz", ".fit")):
                    continue
                check_name(filename, "file name from the server", error=UnsafeArchiveError)
                if filename in seen:
                    raise UnsafeArchiveError(f"archive from {got.url} holds {filename!r} twice", url=got.url)
                seen.add(filename)
                product = product_name(settings.service, filename)
                if settings.service == "tesscut" and not _TESS_PRODUCT.match(product):
                    # Moving-target TPFs are named after the object and its time span; their
                    # header says which sector/camera/CCD they are, as discovery announced them.
                    with zf.open(member) as fh:
                        product = _tess_product_from_header(fh) or product
                with zf.open(member) as fh:
                    rel, n_bytes, sha = write_fits(settings.out, settings.service, target.target_id, filename,
                                                   fh, settings.storage)
                stored.append(StoredFits(filename, product, rel, n_bytes, sha))
    if not stored:
        return FetchResult(no_data="the archive held no FITS file")
    return FetchResult(files=tuple(stored))


_TESS_PRODUCT = re.compile(r"^s\d{4}-\d-\d$")


def _tess_product_from_header(fh) -> str | None:
    """``sNNNN-c-d`` from a TPF's primary header (SECTOR, CAMERA, CCD), or None."""
    from astropy.io import fits

    try:
        header = fits.Header.fromfile(fh)
        sector, camera, ccd = (int(header[k]) for k in ("SECTOR", "CAMERA", "CCD"))
    except (KeyError, ValueError, TypeError, OSError):
        return None
    if not (0 < sector < 10_000 and 0 < camera < 10 and 0 < ccd < 10):
        return None
    return f"s{sector:04d}-{camera}-{ccd}"


def decode(fits_path: str, settings: RunSettings):
    """Read one stored FITS file back from ``OUT`` as an xarray Dataset."""
    from . import decode as dec
    from .store import store_url

    url = store_url(settings.out, fits_path)
    if settings.service == "tesscut":
        return dec.tpf_to_xarray(url, storage_options=settings.storage or None)
    return dec.image_to_xarray(url, storage_options=settings.storage or None)


def store(ds, target_id: str, product: str, settings: RunSettings, request: Mapping[str, Any] | None = None) -> str:
    """Write one decoded dataset as the zarr group ``<target_id>/<product>``; returns the group.

    ``request`` (see `request_record`) goes into the group's commit marker for resume.
    """
    from .store import write_dataset

    return write_dataset(settings.out, target_id, product, ds, settings.storage, request=request)


def request_record(service: str, target) -> dict[str, Any]:
    """What a stored cutout was made from, beyond its product: size, and position or name.

    Kept with each zarr group, so that rerunning into the same OUT with another size, or with a
    target moved under the same id, fetches again instead of taking the old cutout as done.
    A target listed by name is recorded by its name (as listed, before resolution), so that a
    rerun can tell its cutouts are current without asking the resolver again.
    """
    size = target.size
    record: dict[str, Any] = {"service": service, "size": [size.y, size.x, size.units]}
    if target.moving:
        record.update(object=target.name, object_type=target.mt_type)
    elif target.resolved:
        record.update(ra=float(target.ra), dec=float(target.dec))
    else:
        record.update(name=target.name)
    return record


def lightcurve(target_id: str, groups: tuple[str, ...], settings: RunSettings,
               aperture: Any = None) -> str:
    """Aperture photometry on each stored TPF of a target, stitched across sectors, stored as
    the group ``<target_id>/lightcurve``."""
    import xarray as xr

    from . import photometry
    from .store import ZARR_NAME, store_url, write_dataset

    curves = []
    for group in sorted(groups):
        url = store_url(settings.out, f"{ZARR_NAME}/{group}")
        opts = settings.storage or None
        with xr.open_dataset(url, engine="zarr", consolidated=False, zarr_format=3,
                             backend_kwargs={"storage_options": opts} if opts else None) as ds:
            ds = ds.load()
        kwargs = {} if aperture is None else {"aperture": aperture}
        curves.append(photometry.aperture_photometry(ds, **kwargs))
    stitched = photometry.stitch(curves)
    return write_dataset(settings.out, target_id, LIGHTCURVE_PRODUCT, stitched, settings.storage)


# ---- task wrappers: expected failures come home as data ------------------------------------
@dataclass(frozen=True)
class Failed:
    """A stage that ended in a `MastcutError` (bad answer, service down after retries...).

    Returned rather than raised so that an expected outcome does not show up as a worker
    error in the logs; anything else (a bug) still raises.
    """

    error: str


def _guarded(fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except MastcutError as err:
        log.info("%s failed: %s", getattr(fn, "__name__", fn), err)
        return Failed(_describe_error(err))


# ---- the driver ----------------------------------------------------------------------------
def _token(*parts: Any) -> str:
    from dask.base import tokenize

    return tokenize(*parts)


class _Progress:
    """Counts outcomes; shows a tqdm bar on stderr unless quiet.

    The number of products is only known as discovery answers, so the bar counts outcomes
    and their rate rather than a fraction of a total.
    """

    def __init__(self, enabled: bool):
        self.counts: Counter[str] = Counter()
        self.in_flight = 0
        self.pending = 0
        self.last_poll = 0.0
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=None, unit="cutout", desc="mastcut", dynamic_ncols=True)

    def record(self, status: str) -> None:
        self.counts[status] += 1
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()

    def poll(self, pending: int, in_flight: Callable[[], int]) -> None:
        """Note the network tasks waiting or running, and (at most 4 times a second) ask the
        scheduler how many requests hold a lease right now."""
        self.pending = pending
        if self.bar is None:
            return
        now = time.monotonic()
        if now - self.last_poll >= 0.25:
            self.last_poll = now
            try:
                self.in_flight = in_flight()
            except Exception:  # noqa: BLE001 - a progress figure must never stop a run
                log.debug("could not read the number of requests in flight", exc_info=True)
            self._postfix()
            self.bar.refresh()

    def _postfix(self) -> None:
        c = self.counts
        self.bar.set_postfix_str(f"done={c['done']} no_cov={c['no_coverage']} failed={c['failed']} "
                                 f"invalid={c['invalid']} in_flight={self.in_flight} queued={self.pending}",
                                 refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _describe_error(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if isinstance(err, MastcutError) else f"{type(err).__name__}: {text}"


@dataclass
class _TargetState:
    target: Any
    record: str = ""              # request_record of the target as listed (JSON)
    outstanding: int = 0          # discovery, fetch and light-curve tasks not yet answered
    groups: list[str] = field(default_factory=list)
    stored_now: bool = False      # a product was (re)written in this run


class _Driver:
    """Runs one plan on a distributed Client, growing the graph as results arrive."""

    def __init__(self, run: "CutoutRun", client):
        from distributed import as_completed

        from .store import Manifest

        self.run = run
        self.client = client
        self.settings = run.settings
        self.manifest = Manifest(self.settings.out, self.settings.storage)
        self.ac = as_completed(with_results=False)
        self.meta: dict[Any, tuple[str, list]] = {}
        self.by_key: dict[str, Any] = {}
        self.queue: deque[tuple[str, Any]] = deque()
        self.net_in_flight = 0
        # Enough network tasks submitted to keep every lease busy while results travel home,
        # few enough that no worker holds a large share of the run.
        self.window = max(4, 3 * self.settings.throttle_options.max_concurrency)
        self.rows: dict[tuple[str, str, str], Any] = {}
        self.states: dict[str, _TargetState] = {}
        self.waiting: dict[str, list] = {}
        self.progress = _Progress(run.progress)
        # Part of every task key: within a run the same request is one task, but a key from an
        # earlier run (whose result the cluster may still hold) must never stand for a new
        # request, or a rerun (retry_failed, a refetch) would get the old answer unasked.
        self.run_id = uuid.uuid4().hex
        self.throttle = _throttle(self.settings)  # only asked for the progress bar's in-flight count

    # -- outcomes
    def _row(self, row, *, write: bool = True) -> None:
        self.rows[row.key] = row
        # An outcome already on record as is (e.g. an invalid row on a rerun) is not rewritten:
        # a rerun with nothing new changes no file.
        if write and self.manifest.get(*row.key) != row:
            self.manifest.append(row)  # a product row supersedes the target's target-level row
        elif row.product:
            # Resumed products supersede a stale target-level outcome (say, a discovery that
            # failed in an earlier run while these products were already stored).
            self.manifest.discard(row.target_id, row.service, "")
        self.progress.record(row.status)

    def _outcome(self, target_id: str, status: str, product: str = "", error: str = "", **kw) -> None:
        from .store import ManifestRow

        self._row(ManifestRow(target_id, self.settings.service, product, status, error=error, **kw))

    # -- submission
    def _submit(self, kind: str, fn: Callable, *args, key: str, ctx: Any, network: bool = False) -> None:
        if key in self.by_key:
            # The same request twice is one task: the second context waits on the first future.
            self.meta[self.by_key[key]][1].append(ctx)
            return
        # Network tasks jump the workers' queues: they only start a request and secede, and a
        # lease must never sit idle while decode/store work waits for a thread.
        fut = self.client.submit(_guarded, fn, *args, key=key, pure=True, retries=0,
                                 priority=_NETWORK_PRIORITY if network else 0)
        self.by_key[key] = fut
        self.meta[fut] = (kind, [ctx])
        if network:
            self.net_in_flight += 1
        self.ac.add(fut)

    def _fill(self) -> None:
        while self.queue and self.net_in_flight < self.window:
            kind, payload = self.queue.popleft()
            if kind == "resolve":
                self._submit("resolve", resolve_batch, payload, self.settings,
                             key=f"mastcut-resolve-{_token(self.run_id, payload, self.settings.service_options)}",
                             ctx=payload, network=True)
            elif kind == "discover":
                self._submit("discover", discover, payload, self.settings,
                             key=f"mastcut-discover-{_token(self.run_id, payload, self.settings)}", ctx=payload, network=True)
            else:
                request = payload
                key = f"mastcut-fetch-{_token(self.run_id, request.target, request.sector, request.survey, self.settings)}"
                self._submit("fetch", fetch_and_store, request, self.settings, key=key, ctx=request, network=True)
        self.progress.poll(self.net_in_flight, self.throttle.in_flight)

    # -- planning
    def start(self) -> None:
        for row in self.run.plan.invalid:
            self._row(row)
        names: list[str] = []
        for target in self.run.plan.targets:
            if target.target_id in self.states or self._target_level_skip(target):
                continue  # a repeated id is one target
            record = json.dumps(request_record(self.settings.service, target), sort_keys=True)
            self.states[target.target_id] = _TargetState(target, record)
            if self._resume_target(target):
                continue
            if target.resolved:
                self._plan_target(target)
            else:
                if target.name not in self.waiting:
                    names.append(target.name)
                self.waiting.setdefault(target.name, []).append(target)
        for i in range(0, len(names), RESOLVE_BATCH):
            self.queue.append(("resolve", tuple(names[i:i + RESOLVE_BATCH])))

    def _target_level_skip(self, target) -> bool:
        """A target whose last outcome was ``no_coverage``/``invalid`` is left alone on resume.

        ``invalid`` stands only for a target that still needs the resolver (its verdict on the
        name): a target that reached here passed this run's checks of its row, so an earlier
        ``invalid`` for it was a bad row since corrected.
        """
        rows = self.manifest.rows_for(target.target_id, self.settings.service)
        # Only when that is the target's latest outcome: a later run (e.g. with retry_failed)
        # may have found products since.
        row = rows[-1] if rows else None
        skip = ("no_coverage",) if target.resolved else ("no_coverage", "invalid")
        if row is not None and row.product == "" and row.status in skip and not self.run.retry_failed:
            self._row(row, write=False)
            return True
        return False

    def _resume_target(self, target) -> bool:
        """A target whose stored products all verify for this request is not asked about again.

        Neither the resolver nor discovery is asked: the products an earlier run found are on
        record, and a rerun of a long list would otherwise spend its request budget learning
        what it already knows. ``refresh=True`` asks again (e.g. for sectors observed since).
        """
        if self.run.refresh:
            return False
        tid = target.target_id
        state = self.states[tid]
        rows = self._stored_rows(tid, target, state.record)
        if not rows:
            return False
        for row in rows:
            self._row(row, write=False)
            if row.status == "done" and row.zarr_group:
                state.groups.append(row.zarr_group)
        state.outstanding += 1
        self._finish(tid)  # its light curve, if asked and not stored yet
        return True

    def _plan_target(self, target) -> None:
        service = self.settings.service
        state = self.states[target.target_id]
        state.outstanding += 1
        if (service == "tesscut" and target.sector is None) or (service == "zcut" and target.survey is None):
            self.queue.append(("discover", target))
            return
        products = (target.survey,) if service == "zcut" else ()
        self._plan_fetch(FetchRequest(target, sector=target.sector, survey=target.survey, products=products,
                                      record=state.record))
        self._finish(target.target_id)

    def _finish(self, target_id: str) -> None:
        """One piece of a target's work has ended; after the last, its light curve (if asked)."""
        state = self.states[target_id]
        state.outstanding -= 1
        if state.outstanding or not _wants_lightcurve(self.run.lightcurve) or not state.groups:
            return
        from .store import is_complete_group, zarr_group

        if not state.stored_now and is_complete_group(self.settings.out, zarr_group(target_id, LIGHTCURVE_PRODUCT),
                                                      self.settings.storage):
            # Nothing new since the stored light curve was made: it stands, as its row does.
            row = self.manifest.get(target_id, self.settings.service, LIGHTCURVE_PRODUCT)
            if row is not None:
                self._row(row, write=False)
            return
        groups = tuple(sorted(set(state.groups)))
        aperture = None if self.run.lightcurve is True else self.run.lightcurve
        state.outstanding += 1
        self._submit("lightcurve", lightcurve, target_id, groups, self.settings, aperture,
                     key=f"mastcut-lightcurve-{_token(self.run_id, target_id, groups, aperture, self.settings)}", ctx=target_id)

    def _resume_hit(self, request: FetchRequest) -> list:
        """The verified manifest rows that make this request unnecessary, or []."""
        service = self.settings.service
        tid = request.target.target_id
        retry = self.run.retry_failed
        record = json.loads(request.record)
        if request.products:
            if all(self.manifest.should_skip(tid, service, p, retry_failed=retry, request=record)
                   for p in request.products):
                return [self.manifest.get(tid, service, p) for p in request.products]
            return []
        # Products not known in advance (a named sector, HAPCut): the verified products this
        # request produced before stand for it, unless one of its products failed (e.g. its
        # decoding): that one is only fetched again with the whole request.
        return self._stored_rows(tid, request, request.record)

    def _stored_rows(self, target_id: str, scope, record: str) -> list:
        """The target's product rows within ``scope`` (its named sector or survey, if any), if
        there are any and every one of them can be left alone for ``record``; else []."""
        rows = [r for r in self.manifest.rows_for(target_id, self.settings.service)
                if r.product and r.product != LIGHTCURVE_PRODUCT and _in_scope(scope, r.product)]
        request = json.loads(record)
        if rows and all(self.manifest.should_skip(*r.key, retry_failed=self.run.retry_failed, request=request)
                        for r in rows):
            return rows
        return []

    def _plan_fetch(self, request: FetchRequest) -> None:
        hit = self._resume_hit(request)
        state = self.states[request.target.target_id]
        if hit:
            for row in hit:
                self._row(row, write=False)
                if row.status == "done" and row.zarr_group:
                    state.groups.append(row.zarr_group)
            return
        state.outstanding += 1
        self.queue.append(("fetch", request))

    # -- results
    def handle(self, fut) -> None:
        kind, ctxs = self.meta.pop(fut)
        self.by_key.pop(fut.key, None)
        if kind in ("resolve", "discover", "fetch"):
            self.net_in_flight -= 1
        error = result = None
        if fut.status == "error":
            error = fut.exception()
        elif fut.status == "cancelled":
            error = MastcutError("the task was cancelled (a worker lost?)")
        else:
            result = fut.result()
            if isinstance(result, Failed):
                error, result = MastcutError(result.error), None
        fut.release()
        for ctx in ctxs:
            getattr(self, f"_on_{kind}")(ctx, result, error)

    def _on_resolve(self, names, result, error) -> None:
        for name in names:
            for target in self.waiting.pop(name, []):
                tid = target.target_id
                pos = None if error is not None else result.get(name)
                if error is not None:
                    # The resolver itself failed (after retries): a service failure, retried next run.
                    self._outcome(tid, "failed", error=_describe_error(error))
                elif not isinstance(pos, tuple):
                    # The resolver answered but cannot place this name: bad input.
                    self._outcome(tid, "invalid", error=str(pos or f'Could not resolve "{name}" to a sky position.'))
                else:
                    resolved = dataclasses.replace(target, ra=float(pos[0]), dec=float(pos[1]))
                    self.states[tid].target = resolved
                    self._plan_target(resolved)

    def _on_discover(self, target, result, error) -> None:
        tid = target.target_id
        if error is not None:
            self._outcome(tid, "failed", error=_describe_error(error))
        elif not result:
            what = "sector" if self.settings.service == "tesscut" else "survey"
            self._outcome(tid, "no_coverage", error=f"no {what} covers this target")
        else:
            by_request: dict[Any, set[str]] = {}
            for key, product in result:
                by_request.setdefault(key, set()).add(product)
            for key, products in sorted(by_request.items()):
                if self.settings.service == "tesscut":
                    self._plan_fetch(FetchRequest(target, sector=int(key), products=tuple(sorted(products)),
                                                  record=self.states[tid].record))
                else:
                    self._plan_fetch(FetchRequest(target, survey=str(key), products=tuple(sorted(products)),
                                                  record=self.states[tid].record))
        self._finish(tid)

    def _on_fetch(self, request: FetchRequest, result: FetchResult | None, error) -> None:
        tid = request.target.target_id
        state = self.states[tid]
        if error is not None or result.no_data is not None:
            status = "failed" if error is not None else "no_coverage"
            reason = _describe_error(error) if error is not None else result.no_data
            for product in request.products or ("",):
                self._outcome(tid, status, product, error=reason)
            self._finish(tid)
            return
        got = {f.product for f in result.files}
        for product in request.products:
            if product not in got:
                self._outcome(tid, "no_coverage", product, error="the service sent no file for this product")
        for stored in result.files:
            common = dict(fits_path=stored.fits_path, n_bytes=stored.n_bytes, sha256=stored.sha256)
            if stored.error is not None:
                self._outcome(tid, "failed", stored.product, error=stored.error, **common)
            else:
                self._outcome(tid, "done", stored.product, zarr_group=stored.zarr_group, **common)
                state.groups.append(stored.zarr_group)
                state.stored_now = True
        self._finish(tid)

    def _on_lightcurve(self, target_id, result, error) -> None:
        if error is not None:
            log.warning("light curve of %s failed: %s", target_id, _describe_error(error))
            self._outcome(target_id, "failed", LIGHTCURVE_PRODUCT, error=_describe_error(error))
        else:
            self._outcome(target_id, "done", LIGHTCURVE_PRODUCT, zarr_group=result)
        self.states[target_id].outstanding -= 1

    # -- the loop
    def drive(self) -> None:
        self.start()
        self._fill()
        try:
            for fut in self.ac:
                self.handle(fut)
                self._fill()
        finally:
            self.progress.close()
            self.manifest.close()  # fsync (local) or the last write (remote), also after an error

    def table(self):
        """This run's outcomes as an astropy Table with the manifest columns."""
        from astropy.table import Table

        from .store import MANIFEST_COLUMNS

        rows = list(self.rows.values())
        cols = {name: [getattr(r, name) for r in rows] for name in MANIFEST_COLUMNS}
        cols["n_bytes"] = [-1 if v is None else v for v in cols["n_bytes"]]
        table = Table(cols, names=MANIFEST_COLUMNS, dtype=[str, str, str, str, str, str, "i8", str, str])
        table.meta["counts"] = dict(Counter(cols["status"]))
        table.meta["out"] = self.settings.out
        return table


def _in_scope(request, product: str) -> bool:
    """Whether ``product`` answers a target or request that may name one sector or survey."""
    if request.sector is not None:
        return product.startswith(f"s{request.sector:04d}-")
    if request.survey is not None:
        return product == request.survey
    return True


# ---- the plan and the public entry point ----------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    targets: tuple
    invalid: tuple


class CutoutRun:
    """A planned run: nothing is fetched until `compute` or `persist`.

    Attributes
    ----------
    settings : RunSettings
    plan
        The validated targets and the rows refused as ``invalid``.
    """

    def __init__(self, plan: _Plan, settings: RunSettings, *, client=None, lightcurve=None,
                 retry_failed: bool = False, refresh: bool = False, progress: bool = True,
                 n_workers: int | None = None,
                 threads_per_worker: int | None = None):
        self.plan = plan
        self.settings = settings
        self.client = client
        self.lightcurve = lightcurve
        self.retry_failed = retry_failed
        self.refresh = refresh
        self.progress = progress
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self._thread: threading.Thread | None = None
        self._result = None
        self._error: BaseException | None = None
        self.elapsed: float | None = None

    def __repr__(self) -> str:
        return (f"CutoutRun(service={self.settings.service!r}, targets={len(self.plan.targets)}, "
                f"invalid={len(self.plan.invalid)}, out={self.settings.out!r})")

    def _execute(self) -> None:
        t0 = time.monotonic()
        with _client_for(self) as client:
            driver = _Driver(self, client)
            driver.drive()
            self._result = driver.table()
        self.elapsed = time.monotonic() - t0
        counts = self._result.meta["counts"]
        log.info("run finished in %.1f s: %s", self.elapsed, ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))

    def persist(self) -> "CutoutRun":
        """Start the run in the background and return at once; `compute` then waits for it."""
        if self._thread is None and self._result is None:
            def target():
                try:
                    self._execute()
                except BaseException as err:  # noqa: BLE001 - handed to compute()
                    self._error = err

            self._thread = threading.Thread(target=target, name="mastcut-run", daemon=True)
            self._thread.start()
        return self

    def done(self) -> bool:
        """True once the run has finished (successfully or not)."""
        return self._result is not None or self._error is not None

    def compute(self):
        """Run (or wait for the persisted run) and return the manifest of this run.

        Returns
        -------
        astropy.table.Table
            One row per (target, product) with the columns target_id, service, product,
            status, fits_path, zarr_group, n_bytes, sha256, error; ``meta["counts"]`` holds
            the number of rows per status.
        """
        if self._result is None:
            if self._thread is None:
                self._execute()
            else:
                self._thread.join()
                if self._error is not None:
                    raise self._error
        return self._result


@contextlib.contextmanager
def _client_for(run: CutoutRun):
    """The given Client, the current one, or a `local_cluster` closed at the end."""
    from distributed import Client

    if isinstance(run.client, str):  # a scheduler address: connect for this run only
        try:
            client = Client(run.client)
        except (OSError, ValueError) as err:  # refused, timed out, not an address
            raise MastcutError(f"cannot use the Dask scheduler at {run.client!r}: {err}") from None
        with client:
            yield client
        return
    if run.client is not None:
        yield run.client
        return
    try:
        yield Client.current()
        return
    except ValueError:
        pass
    cluster = local_cluster(run.n_workers, run.threads_per_worker,
                            lease_timeout=run.settings.throttle_options.lease_timeout)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def local_cluster(n_workers: int | None = None, threads_per_worker: int | None = None, *,
                  lease_timeout: float | None = None, profile: bool = False, **kwargs: Any):
    """A `distributed.LocalCluster` set up for cutout runs (the one `fetch_cutouts` and
    ``mastcut fetch`` start when given no scheduler).

    * processes, one thread each by default: network tasks run outside the thread pool anyway,
      and decode and store scale with processes (one GIL each), not threads;
    * workers start with `mastcut_dask.worker_preload` (the decoding stack imported as they
      start, not on their first cutout while requests are in flight);
    * Dask's statistical profiler is off unless ``profile=True``: it samples every thread's
      stack every 10 ms, and a run keeps dozens of threads per worker waiting on the network
      (its cost on a 2-core machine: ``benchmarks/throughput.py --dask-profiler``).

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (default: the number of cores, at most 4).
    threads_per_worker : int, optional
        Default 1.
    lease_timeout : float, optional
        Scheduler-side timeout of the throttle's leases (default `ThrottleOptions.lease_timeout`).
    profile : bool
        Keep Dask's statistical profiler on (the dashboard's Profile page).
    **kwargs
        Passed to ``LocalCluster`` (``dashboard_address=":8787"``, ``memory_limit``...).
    """
    import dask
    from distributed import LocalCluster

    options = {"n_workers": n_workers if n_workers is not None else min(4, os.cpu_count() or 1),
               "threads_per_worker": threads_per_worker if threads_per_worker is not None else 1, "processes": True,
               "dashboard_address": ":0", "preload": ["mastcut_dask.worker_preload"]}
    options.update(kwargs)
    lease = lease_timeout if lease_timeout is not None else ThrottleOptions().lease_timeout
    # Workers copy the config they are started with; the lease timeout is read by the scheduler.
    with dask.config.set({"distributed.scheduler.locks.lease-timeout": f"{lease}s",
                          "distributed.worker.profile.enabled": bool(profile)}):
        return LocalCluster(**options)


def _plan(targets: Any, *, service: str, size: Any, sector: int | None, survey: str | None,
          storage_options: Mapping[str, Any] | None) -> _Plan:
    from .services import check_size
    from .store import ManifestRow
    from .targets import read_targets

    listing = read_targets(targets, storage_options=storage_options)
    listing = listing.with_defaults(size=size, sector=sector, survey=survey)
    invalid = [ManifestRow(bad.target_id, service, "", "invalid", error=bad.reason) for bad in listing.invalid]
    good = []
    for target in listing.targets:
        # Rows that are fine as rows but wrong for this service: refused here, before any request.
        try:
            check_size(service, target.size)
        except InvalidQueryError as err:
            invalid.append(ManifestRow(target.target_id, service, "", "invalid", error=f"size: {err}"))
            continue
        if target.moving and service != "tesscut":
            reason = f"moving target {target.name!r}: only TESSCut serves moving targets"
        elif target.sector is not None and service != "tesscut":
            reason = f"sector {target.sector} given, but {service} has no sectors"
        elif target.survey is not None and service != "zcut":
            reason = f"survey {target.survey!r} given, but {service} has no surveys"
        else:
            good.append(target)
            continue
        invalid.append(ManifestRow(target.target_id, service, "", "invalid", error=reason))
    return _Plan(tuple(good), tuple(invalid))


def fetch_cutouts(targets: Any, *, service: str = "tesscut", size: Any = 5, sector: int | None = None,
                  survey: str | None = None, out: str, base_url: str | None = None,
                  resolver_url: str | None = None, max_concurrency: int = 10, max_rate: float = 5.0,
                  client: Any = None, lightcurve: Any = None, retry_failed: bool = False, refresh: bool = False,
                  progress: bool = True, storage_options: Mapping[str, Any] | None = None,
                  n_workers: int | None = None, threads_per_worker: int | None = None,
                  service_options: ServiceOptions | None = None,
                  lease_timeout: float | None = None, release_delay: float | None = None) -> CutoutRun:
    """Plan a survey-scale cutout run on Dask; nothing is fetched until ``.compute()``.

    Parameters
    ----------
    targets : str, path, Table, DataFrame or list of dict
        A CSV/Parquet target list or the same in memory (see `read_targets`): columns ``name``
        (object names, "TIC n") or ``ra``/``dec`` (deg), optional ``id``, ``size``, ``sector``,
        ``survey``, ``moving`` (+ ``mt_type``). Per-row values override the call's.
    service : {"tesscut", "zcut", "hapcut"}
    size : int, pair or Quantity
        Cutout size, as astroquery (default 5×5 pixels).
    sector : int, optional
        TESS sector for every row that names none (skips discovery).
    survey : str, optional
        ZCut survey for every row that names none (skips discovery).
    out : str
        Where to write: local path or fsspec URL (``s3://bucket/run``).
    base_url, resolver_url : str, optional
        The services (default: MAST, or ``$MASTCUT_MAST_URL``/``$MASTCUT_RESOLVER_URL``).
    max_concurrency : int
        Requests in flight, cluster-wide.
    max_rate : float
        Request starts per second, cluster-wide; 0 = no rate limit.
    lease_timeout : float, optional
        Seconds the cluster waits for the request places of a worker that died before giving
        them to others (default `ThrottleOptions.lease_timeout`, 60 s). Live workers refresh
        their places, so this does not bound a request's length.
    release_delay : float, optional
        Seconds a request's place stays taken after its reply is read (default 0; see
        `ThrottleOptions.release_delay`), for a service that counts finished requests late.
    client : distributed.Client or str, optional
        A Client, or a scheduler address (``"tcp://host:8786"``) to connect to for this run.
        Default: the current Client, else a LocalCluster of processes started and closed by the run.
    lightcurve : bool or aperture, optional
        Also store per-target light curves (TESS): aperture photometry on each sector,
        stitched, as the group ``<target_id>/lightcurve``. True uses the default aperture;
        anything else is passed as ``aperture=`` to `aperture_photometry`.
    retry_failed : bool
        Also retry targets recorded as ``no_coverage`` or ``invalid`` (``failed`` ones always are).
    refresh : bool
        Ask the resolver and the service again even for targets whose stored products all
        verify (finds TESS sectors observed since the last run). By default a rerun sends no
        request at all for them.
    progress : bool
        Show a progress bar on stderr.
    storage_options : dict, optional
        fsspec options for ``out`` (e.g. ``{"endpoint_url": ...}`` for S3).
    n_workers, threads_per_worker : int, optional
        Size of the LocalCluster started when no Client is given or current.
    service_options : ServiceOptions, optional
        Timeouts and retries (``base_url``/``resolver_url`` still win when given).

    Returns
    -------
    CutoutRun
        ``.compute()`` runs and returns the manifest rows of this run as an astropy Table;
        ``.persist()`` starts it in the background.

    Raises
    ------
    InvalidQueryError
        Bad service, size, sector, survey, limits or output location (before anything is sent).
    """
    if service not in SERVICES:
        raise InvalidQueryError(f"Unknown service {service!r}; use one of {', '.join(SERVICES)}.")
    if out is None or not str(out).strip():
        raise InvalidQueryError("out= is required: a local folder or an fsspec URL such as s3://bucket/run.")
    if sector is not None and service != "tesscut":
        raise InvalidQueryError("sector= applies to service='tesscut' only.")
    if survey is not None and service != "zcut":
        raise InvalidQueryError("survey= applies to service='zcut' only.")
    if _wants_lightcurve(lightcurve) and service != "tesscut":
        raise InvalidQueryError("light curves need TESS target pixel files: use service='tesscut'.")
    for label, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        # A LocalCluster without workers or threads would leave the run waiting for ever.
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidQueryError(f"{label} must be a positive whole number, got {value!r}.")
    throttle_options = ThrottleOptions(max_concurrency=max_concurrency, max_rate=max_rate)
    if lease_timeout is not None:
        throttle_options = dataclasses.replace(throttle_options, lease_timeout=lease_timeout)
    if release_delay is not None:
        throttle_options = dataclasses.replace(throttle_options, release_delay=release_delay)
    from .throttle import ClusterThrottle

    ClusterThrottle(throttle_options)  # validates the limits on the client, before anything runs
    urls = ServiceOptions.from_user(base_url, resolver_url)
    if service_options is None:
        service_options = urls
    else:
        # Explicit URLs win over the ones inside the given options.
        changes = {}
        if base_url:
            changes["base_url"] = urls.base_url
        if resolver_url:
            changes["resolver_url"] = urls.resolver_url
        service_options = dataclasses.replace(service_options, **changes)
    from .services import endpoint_url

    endpoint_url(service_options.base_url, service, "astrocut")  # a malformed base URL fails here, not per task
    settings = RunSettings(service=service, out=_normalise_out(str(out)),
                           storage_options=tuple(sorted(dict(storage_options or {}).items())),
                           service_options=service_options, throttle_options=throttle_options)
    if size is not None:
        # A call-level size too large for the service would make every row invalid: refuse the call.
        from .services import check_size
        from .targets import parse_size

        check_size(service, parse_size(size, pixel_arcsec=None, max_pixels=math.inf))
    plan = _plan(targets, service=service, size=size, sector=sector, survey=survey,
                 storage_options=storage_options)
    return CutoutRun(plan, settings, client=client, lightcurve=lightcurve, retry_failed=retry_failed, refresh=refresh,
                     progress=progress, n_workers=n_workers, threads_per_worker=threads_per_worker)


def _wants_lightcurve(lightcurve: Any) -> bool:
    # Not ``bool(lightcurve)``: an aperture may be a numpy mask, which has no truth value.
    return lightcurve is not None and lightcurve is not False


def _normalise_out(out: str) -> str:
    # Workers may run elsewhere: a relative local path is made absolute on the client
    # (file:// URLs become plain paths).
    from .store import resolve_out

    path = resolve_out(out)
    if "://" in path or "::" in path:
        return path.rstrip("/")
    # A local OUT that cannot be a folder would otherwise only fail at the first manifest row,
    # deep inside the run: refuse it here, before anything is sent.
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InvalidQueryError(f"out={out!r}: {parent} is not a folder; choose another output location.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidQueryError(f"out={out!r}: the folder {parent} is not writable; choose another output location.")
    return path
