"""The cluster-wide request budget: distributed's named Semaphores, shared by every worker and
thread of a run (see docs/architecture.md, "The throttle")."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import weakref
from typing import Iterator

import dask
from distributed import Semaphore, get_client, get_worker

from ..exceptions import InvalidQueryError
from ..options import ThrottleOptions

__all__ = ["ClusterThrottle"]


_CLUSTER_REGISTER_LOCK = threading.Lock()
# Time added to each rate lease on top of its share of the second: covers the gap between the
# scheduler granting a start slot and the server noting the request's arrival, so that jitter
# there (thread wake-ups, connection set-up, a busy server) cannot squeeze one start too many
# into a one-second window as the server counts it. Measured on a loaded 2-core machine, that
# jitter reached ~70 ms; the price is a sustained rate of max_rate / (1 + 0.2 * max_rate / k).
_RATE_MARGIN_S = 0.2


class ClusterThrottle:
    """Cluster-wide request budget on the scheduler's own `distributed.Semaphore`.

    Every worker (and the client) that builds a ``ClusterThrottle`` from the same
    `~mastcut_dask.options.ThrottleOptions` shares two named semaphores held by the scheduler:

    * concurrency: ``max_concurrency`` leases, one held per request while its bytes move (and
      ``options.release_delay`` more), so the service never sees more requests in flight,
      whatever the number of workers and threads;
    * rate: ``k = max(1, floor(max_rate))`` leases, each taken when a request starts and given
      back ``k / max_rate`` seconds later (plus a small margin), a sliding window that lets at
      most ``max_rate`` requests start in any second. Off when ``max_rate`` is 0.

    Both are plain distributed primitives: nothing custom runs on the scheduler, and a worker
    that dies gives its leases back after the lease timeout (``options.lease_timeout`` for
    the concurrency semaphore). Only the options are pickled, so the object can be sent to
    workers inside a task.

    The lease timeout does not limit how long a request may take: the holder's process
    refreshes its leases every ``lease_timeout / 5`` seconds for as long as its event loop
    runs. It is how long the whole cluster waits for the places of a holder that is gone (a
    worker that died or was removed, a release the scheduler never received); meanwhile every
    request waits behind them. It must only exceed the longest stall of a worker's event loop.

    ``lease()`` blocks the calling thread while it waits. Callers inside Dask tasks should run
    the whole request seceded from the worker's thread pool (``distributed.secede``, as
    `mastcut_dask.pipeline.tasks` does) so that waiting for a lease never keeps decode and
    store work from running.

    Parameters
    ----------
    options : ThrottleOptions
        The budget and the name of the primitives.

    Raises
    ------
    InvalidQueryError
        When ``max_concurrency`` is not a positive integer or ``max_rate`` is negative or not finite.
    """

    def __init__(self, options: ThrottleOptions | None = None):
        options = options if options is not None else ThrottleOptions()
        if isinstance(options.max_concurrency, bool) or not isinstance(options.max_concurrency, int) \
                or options.max_concurrency < 1:
            raise InvalidQueryError(f"max_concurrency must be a positive integer, got {options.max_concurrency!r}.")
        try:
            rate = float(options.max_rate)
        except (TypeError, ValueError):
            raise InvalidQueryError(f"max_rate must be a number, got {options.max_rate!r}.") from None
        if not math.isfinite(rate) or rate < 0:
            raise InvalidQueryError(f"max_rate must be a finite number >= 0 (0 = no limit), got {options.max_rate!r}.")
        if isinstance(options.lease_timeout, bool) or not isinstance(options.lease_timeout, (int, float)) \
                or not math.isfinite(options.lease_timeout) or options.lease_timeout <= 0:
            raise InvalidQueryError(f"lease_timeout must be a positive number of seconds, got {options.lease_timeout!r}.")
        if isinstance(options.release_delay, bool) or not isinstance(options.release_delay, (int, float)) \
                or not 0 <= options.release_delay < 60:
            raise InvalidQueryError(f"release_delay must be a number of seconds in [0, 60), got {options.release_delay!r}.")
        self.options = options
        self._lock = threading.Lock()
        self._concurrency = None
        self._rate = None

    # The limits are part of the names: a scheduler refuses a semaphore registered twice with
    # different sizes, and two runs with different budgets must not share one.
    @property
    def concurrency_name(self) -> str:
        """Name of the scheduler's concurrency semaphore."""
        return f"{self.options.name}-concurrency-{self.options.max_concurrency}"

    @property
    def rate_name(self) -> str | None:
        """Name of the scheduler's rate semaphore, None when the rate limit is off."""
        if not self.options.max_rate:
            return None
        return f"{self.options.name}-rate-{float(self.options.max_rate):g}"

    @property
    def rate_window(self) -> tuple[int, float]:
        """``(leases, seconds)``: each start holds one of ``leases`` for ``seconds``."""
        rate = float(self.options.max_rate)
        if not rate:
            return 0, 0.0
        leases = max(1, int(math.floor(rate)))
        return leases, leases / rate + _RATE_MARGIN_S

    def __getstate__(self):
        # Semaphore handles are bound to one process's event loop: only the options travel.
        return {"options": self.options}

    def __setstate__(self, state):
        self.__init__(state["options"])

    def __repr__(self) -> str:
        return (f"ClusterThrottle(max_concurrency={self.options.max_concurrency}, "
                f"max_rate={self.options.max_rate}, name={self.options.name!r})")

    def _semaphores(self):
        with self._lock:
            if self._concurrency is None:
                self._concurrency = _register_semaphore(self.concurrency_name, self.options.max_concurrency,
                                                        self.options.lease_timeout)
                if self.rate_name is not None:
                    leases, hold = self.rate_window
                    # A rate lease is only ever held for `hold` seconds; reclaim a dead
                    # worker's quickly so one crash cannot slow the run for long.
                    self._rate = _register_semaphore(self.rate_name, leases, hold + 30.0)
            return self._concurrency, self._rate

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Hold one request's place in the cluster-wide budget.

        Waits (blocking this thread) for a concurrency lease, then for a start slot when a
        rate limit is set; the concurrency lease is given back on exit, the start slot after
        its share of the second.
        """
        concurrency, rate = self._semaphores()
        concurrency.acquire()
        try:
            if rate is not None:
                rate.acquire()
                # Released on a timer, not on exit: the slot measures starts, not durations.
                timer = threading.Timer(self.rate_window[1], _release_quietly, args=(rate,))
                timer.daemon = True
                timer.start()
            yield
        finally:
            if self.options.release_delay:
                time.sleep(self.options.release_delay)  # for a server that counts late (see options)
            _release_quietly(concurrency)

    def in_flight(self) -> int:
        """Requests holding a concurrency lease right now, cluster-wide (asks the scheduler)."""
        concurrency, _ = self._semaphores()
        return int(concurrency.get_value())


# Semaphore handles of this process, per Worker or Client they talk through. Each
# distributed.Semaphore keeps a lease-refresh callback on that event loop for as long as the
# loop runs (the callback holds the object, so it is never collected): tasks that each build a
# ClusterThrottle must share one handle per name, not add one per task. A handle is only a
# connection; the budget itself lives on the scheduler.
_SEMAPHORE_HANDLES: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def _register_semaphore(name: str, max_leases: int, lease_timeout: float):
    """A `distributed.Semaphore` registered on the scheduler with this lease timeout (one
    handle per process and Worker/Client for each name, limits and timeout)."""
    try:
        owner = get_worker()
    except ValueError:
        try:
            owner = get_client()
        except ValueError:
            owner = None  # no cluster here: Semaphore raises its own error when used
    key = (name, max_leases, lease_timeout)
    # The lease timeout is read from dask's config when the semaphore is built and registered;
    # dask.config.set is process-wide, so registrations are serialised.
    with _CLUSTER_REGISTER_LOCK:
        handles = _SEMAPHORE_HANDLES.setdefault(owner, {}) if owner is not None else {}
        sem = handles.get(key)
        if sem is None:
            with dask.config.set({"distributed.scheduler.locks.lease-timeout": f"{lease_timeout}s"}):
                sem = Semaphore(max_leases=max_leases, name=name)
                sem.register()
            handles[key] = sem
    return sem


def _release_quietly(sem) -> None:
    """Give a lease back; a failure is logged (the scheduler reclaims it after its timeout)."""
    log = logging.getLogger(__name__)
    try:
        released = sem.release()
    except Exception:  # noqa: BLE001 - a release must never mask the request's own outcome
        loop = getattr(sem, "_loop", None)
        if loop is not None and loop.asyncio_loop.is_closed():
            # A start slot's timer that fired after its worker or client closed: nothing is lost
            # that the scheduler (gone, or reclaiming on its timeout) needs back from here.
            log.debug("lease of %s not released: its event loop is closed", sem.name)
            return
        log.warning("could not release a lease of %s; the scheduler will reclaim it", sem.name, exc_info=True)
        return
    if released is False:
        # distributed's release() has already dropped the lease from its refresh list, so the
        # place stays taken until the scheduler's lease timeout: say so, that stall is ours.
        log.warning("the scheduler did not receive the release of a lease of %s; it stays taken until the "
                    "lease timeout", sem.name)


__all__.append("ClusterThrottle")
