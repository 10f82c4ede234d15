"""The public entry point: `fetch_cutouts` plans a run and returns a `CutoutRun`; nothing is
fetched until ``.compute()`` (or ``.persist()``).

The run is driven from the client (`mastcut_dask.pipeline.driver`): names without a position →
one resolve task per batch; each target without a named sector/survey → one discovery task;
each (target, product) → one fetch task that writes the FITS files as delivered, then decodes
and stores each one (`mastcut_dask.pipeline.tasks`); with light curves, one photometry task
per target at the end. docs/architecture.md has the reasons.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from typing import Any, Mapping

from ..exceptions import InvalidQueryError
from ..options import ServiceOptions, ThrottleOptions
from ..services import SERVICE_NAMES, check_size, endpoint_url
from ..targets import parse_size
from .cluster import client_for
from .driver import Driver
from .plan import Plan, normalise_out, plan_targets, wants_lightcurve
from .settings import RunSettings
from .throttle import ClusterThrottle

__all__ = ["fetch_cutouts", "CutoutRun"]

log = logging.getLogger(__name__)


class CutoutRun:
    """A planned run: nothing is fetched until `compute` or `persist`.

    Attributes
    ----------
    settings : RunSettings
    plan
        The validated targets and the rows refused as ``invalid``.
    """

    def __init__(self, plan: Plan, settings: RunSettings, *, client=None, lightcurve=None,
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
        with client_for(self) as client:
            driver = Driver(self, client)
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
    if service not in SERVICE_NAMES:
        raise InvalidQueryError(f"Unknown service {service!r}; use one of {', '.join(SERVICE_NAMES)}.")
    if out is None or not str(out).strip():
        raise InvalidQueryError("out= is required: a local folder or an fsspec URL such as s3://bucket/run.")
    if sector is not None and service != "tesscut":
        raise InvalidQueryError("sector= applies to service='tesscut' only.")
    if survey is not None and service != "zcut":
        raise InvalidQueryError("survey= applies to service='zcut' only.")
    if wants_lightcurve(lightcurve) and service != "tesscut":
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

    endpoint_url(service_options.base_url, service, "astrocut")  # a malformed base URL fails here, not per task
    settings = RunSettings(service=service, out=normalise_out(str(out)),
                           storage_options=tuple(sorted(dict(storage_options or {}).items())),
                           service_options=service_options, throttle_options=throttle_options)
    if size is not None:
        # A call-level size too large for the service would make every row invalid: refuse the call.

        check_size(service, parse_size(size, pixel_arcsec=None, max_pixels=math.inf))
    plan = plan_targets(targets, service=service, size=size, sector=sector, survey=survey,
                 storage_options=storage_options)
    return CutoutRun(plan, settings, client=client, lightcurve=lightcurve, retry_failed=retry_failed, refresh=refresh,
                     progress=progress, n_workers=n_workers, threads_per_worker=threads_per_worker)
