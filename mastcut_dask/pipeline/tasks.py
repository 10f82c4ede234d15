"""The worker side of a run: each function is one task, plain and usable without Dask.

Network tasks (resolve, discover, fetch) leave the worker's thread pool while they wait for a
lease and move bytes; `fetch_and_store` then decodes and stores its files under one of the
worker's CPU places. Expected failures come home as `Failed` values, not exceptions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import xarray as xr

from ..decode import aperture_photometry, image_to_xarray, stitch, tpf_to_xarray
from ..exceptions import MastcutError
from ..services.resolver import resolve_names_detailed
from ..services.source import Product
from ..store import store_url, write_dataset, write_fits
from ..store.layout import LIGHTCURVE_PRODUCT, ZARR_NAME
from .settings import FetchRequest, FetchResult, RunSettings, StoredFits, request_record
from .throttle import ClusterThrottle
from .worker_threads import cpu_place, secede_if_in_task, seceded

__all__ = ["resolve_batch", "discover", "fetch_and_store", "read_stored_fits", "store_dataset", "lightcurve",
           "Failed", "guarded", "describe_error", "make_throttle"]

log = logging.getLogger(__name__)


def make_throttle(settings: RunSettings) -> ClusterThrottle:
    """The run's cluster-wide request budget, as seen from this process."""
    return ClusterThrottle(settings.throttle_options)


def resolve_batch(names: tuple[str, ...], settings: RunSettings) -> dict[str, Any]:
    """Resolve object names through SANTA.

    Returns
    -------
    dict
        Name → ``(ra, dec)`` in degrees, or → the reason (str) when the resolver cannot place it.
    """
    with seceded():
        positions, errors = resolve_names_detailed(names, settings.service_options, throttle=make_throttle(settings))
    answer: dict[str, Any] = {name: (float(ra), float(dec)) for name, (ra, dec) in positions.items()}
    answer.update({name: str(err) for name, err in errors.items()})
    return answer


def discover(target, settings: RunSettings) -> tuple[Product, ...]:
    """What the run's source has for one target (see `mastcut_dask.services.source.Source.discover`).

    Returns
    -------
    tuple of (key, product)
        TESSCut: ``(sector, "s0008-1-1")`` per sector/camera/CCD; ZCut: ``(survey, survey)``.
        Empty when the position is not covered.
    """
    throttle = make_throttle(settings)
    with seceded():
        return settings.source.discover(target, throttle)


def fetch_and_store(request: FetchRequest, settings: RunSettings) -> FetchResult:
    """Fetch one request's files and store them under ``OUT/fits`` as delivered, then decode and
    store each one as a zarr group: one task per request.

    The whole task runs outside the worker's thread pool (waiting for a lease blocks no CPU
    work); decoding and storing then take one of the worker's CPU places (`cpu_place`), so a
    worker never decodes more cutouts at once than it has threads. One task instead of three
    per product spares two scheduler round trips per cutout, and the decoded dataset never
    leaves the worker that downloaded the file.

    Returns
    -------
    FetchResult
        Each file with its ``zarr_group``, or the ``error`` that kept it from being stored.
    """
    secede_if_in_task()
    fetched = _fetch_fits(request, settings)
    if not fetched.files:
        return fetched
    with cpu_place():
        return dataclasses.replace(fetched, files=_decode_and_store(fetched.files, request, settings))


def _fetch_fits(request: FetchRequest, settings: RunSettings) -> FetchResult:
    """The request's files from the source, each written to ``OUT/fits`` (lease held by the HTTP
    layer only while bytes move)."""
    target = request.target
    with settings.source.fetch(target, sector=request.sector, survey=request.survey,
                               throttle=make_throttle(settings)) as delivery:
        if delivery.no_data is not None:
            return FetchResult(no_data=delivery.no_data)
        stored = []
        for item in delivery.files:
            with item.open() as fh:
                rel, n_bytes, sha = write_fits(settings.out, settings.service, target.target_id, item.filename,
                                               fh, settings.storage)
            stored.append(StoredFits(item.filename, item.product, rel, n_bytes, sha))
    return FetchResult(files=tuple(stored))


def _decode_and_store(files: tuple[StoredFits, ...], request: FetchRequest, settings: RunSettings) -> tuple[StoredFits, ...]:
    stored = []
    record = json.loads(request.record) if request.record else request_record(settings.service, request.target)
    for item in files:
        try:
            group = store_dataset(read_stored_fits(item.fits_path, settings), request.target.target_id, item.product,
                                  settings, request=record)
        except MastcutError as err:
            log.info("%s: decode/store failed: %s", item.fits_path, err)
            stored.append(dataclasses.replace(item, error=describe_error(err)))
        except Exception as err:  # noqa: BLE001 - a bug on one file must not fail its siblings
            # Logged with its traceback (a decoder bug wants fixing), and recorded as this
            # product's failure: the request's other files are stored all the same.
            log.warning("%s: decode/store failed unexpectedly", item.fits_path, exc_info=True)
            stored.append(dataclasses.replace(item, error=describe_error(err)))
        else:
            stored.append(dataclasses.replace(item, zarr_group=group))
    return tuple(stored)


def read_stored_fits(fits_path: str, settings: RunSettings) -> xr.Dataset:
    """Read one stored FITS file back from ``OUT`` as an xarray Dataset."""
    url = store_url(settings.out, fits_path)
    decoder = tpf_to_xarray if settings.service == "tesscut" else image_to_xarray
    return decoder(url, storage_options=settings.storage or None)


def store_dataset(ds: xr.Dataset, target_id: str, product: str, settings: RunSettings,
                  request: Mapping[str, Any] | None = None) -> str:
    """Write one decoded dataset as the zarr group ``<target_id>/<product>``; returns the group.

    ``request`` (see `request_record`) goes into the group's commit marker for resume.
    """
    return write_dataset(settings.out, target_id, product, ds, settings.storage, request=request)


def lightcurve(target_id: str, groups: tuple[str, ...], settings: RunSettings,
               aperture: Any = None) -> str:
    """Aperture photometry on each stored TPF of a target, stitched across sectors, stored as
    the group ``<target_id>/lightcurve``."""
    curves = []
    for group in sorted(groups):
        url = store_url(settings.out, f"{ZARR_NAME}/{group}")
        opts = settings.storage or None
        with xr.open_dataset(url, engine="zarr", consolidated=False, zarr_format=3,
                             backend_kwargs={"storage_options": opts} if opts else None) as ds:
            ds = ds.load()
        kwargs = {} if aperture is None else {"aperture": aperture}
        curves.append(aperture_photometry(ds, **kwargs))
    stitched = stitch(curves)
    return write_dataset(settings.out, target_id, LIGHTCURVE_PRODUCT, stitched, settings.storage)


# ---- task wrappers: expected failures come home as data ------------------------------------
@dataclass(frozen=True)
class Failed:
    """A stage that ended in a `MastcutError` (bad answer, service down after retries...).

    Returned rather than raised so that an expected outcome does not show up as a worker
    error in the logs; anything else (a bug) still raises.
    """

    error: str


def guarded(fn: Callable, *args: Any) -> Any:
    """``fn(*args)``, with a `MastcutError` returned as `Failed` (what the driver submits)."""
    try:
        return fn(*args)
    except MastcutError as err:
        log.info("%s failed: %s", getattr(fn, "__name__", fn), err)
        return Failed(describe_error(err))


def describe_error(err: BaseException) -> str:
    """An error as a manifest's ``error`` text (the type is named unless it is one of ours)."""
    text = str(err) or type(err).__name__
    return text if isinstance(err, MastcutError) else f"{type(err).__name__}: {text}"
