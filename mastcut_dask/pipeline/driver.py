"""The client side of a run: the driver that grows the graph as results arrive.

What a run fetches is only known at run time (names resolve, discovery answers), so the
driver submits tasks with futures and reads outcomes with `distributed.as_completed`, writes
each outcome to the manifest as it arrives, and keeps a bounded window of network tasks
submitted. docs/architecture.md explains why.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from dask.base import tokenize
from distributed import as_completed

from ..exceptions import MastcutError
from ..services.catalog import RESOLVER_BATCH_SIZE
from ..store import Manifest, ManifestRow, is_complete_group, rows_table, zarr_group
from ..store.layout import LIGHTCURVE_PRODUCT
from .progress import Progress
from .settings import FetchRequest, FetchResult, request_record
from .plan import wants_lightcurve
from .tasks import Failed, describe_error, discover, fetch_and_store, guarded, lightcurve, make_throttle, resolve_batch

__all__ = ["Driver"]

log = logging.getLogger(__name__)

#: Queue priority of network tasks: they only start a request and leave the thread pool, and a
#: lease must never sit idle while decode/store work waits for a thread.
_NETWORK_PRIORITY = 10


def _token(*parts: Any) -> str:
    return tokenize(*parts)


@dataclass
class _TargetState:
    target: Any
    record: str = ""              # request_record of the target as listed (JSON)
    outstanding: int = 0          # discovery, fetch and light-curve tasks not yet answered
    groups: list[str] = field(default_factory=list)
    stored_now: bool = False      # a product was (re)written in this run


class Driver:
    """Runs one plan on a distributed Client, growing the graph as results arrive."""

    def __init__(self, run, client):
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
        self.progress = Progress(run.progress)
        # Part of every task key: within a run the same request is one task, but a key from an
        # earlier run (whose result the cluster may still hold) must never stand for a new
        # request, or a rerun (retry_failed, a refetch) would get the old answer unasked.
        self.run_id = uuid.uuid4().hex
        self.throttle = make_throttle(self.settings)  # only asked for the progress bar's in-flight count

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
        self._row(ManifestRow(target_id, self.settings.service, product, status, error=error, **kw))

    # -- submission
    def _submit(self, kind: str, fn: Callable, *args, key: str, ctx: Any, network: bool = False) -> None:
        if key in self.by_key:
            # The same request twice is one task: the second context waits on the first future.
            self.meta[self.by_key[key]][1].append(ctx)
            return
        # Network tasks jump the workers' queues: they only start a request and secede, and a
        # lease must never sit idle while decode/store work waits for a thread.
        fut = self.client.submit(guarded, fn, *args, key=key, pure=True, retries=0,
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
        for i in range(0, len(names), RESOLVER_BATCH_SIZE):
            self.queue.append(("resolve", tuple(names[i:i + RESOLVER_BATCH_SIZE])))

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
        if self.settings.source.needs_discovery(target):
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
        if state.outstanding or not wants_lightcurve(self.run.lightcurve) or not state.groups:
            return

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
                    self._outcome(tid, "failed", error=describe_error(error))
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
            self._outcome(tid, "failed", error=describe_error(error))
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
            reason = describe_error(error) if error is not None else result.no_data
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
            log.warning("light curve of %s failed: %s", target_id, describe_error(error))
            self._outcome(target_id, "failed", LIGHTCURVE_PRODUCT, error=describe_error(error))
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
        """This run's outcomes as an astropy Table with the manifest columns (``meta["counts"]``:
        rows per status, ``meta["out"]``: the store)."""
        table = rows_table(self.rows.values())
        table.meta["counts"] = dict(Counter(str(status) for status in table["status"]))
        table.meta["out"] = self.settings.out
        return table


def _in_scope(request, product: str) -> bool:
    """Whether ``product`` answers a target or request that may name one sector or survey."""
    if request.sector is not None:
        return product.startswith(f"s{request.sector:04d}-")
    if request.survey is not None:
        return product == request.survey
    return True
