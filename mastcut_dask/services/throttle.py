"""Request budgets: at most N requests in flight and at most R starts per second.

`Throttle` is the one protocol every fetching function takes: ``with throttle.lease(): ...``
around the request and the body read (while bytes move), never around backoff sleeps,
decoding or writing. `LocalThrottle` enforces the budget inside one process for all of its
threads; `NullThrottle` enforces nothing. The cluster-wide implementation of the same protocol
is `mastcut_dask.pipeline.throttle.ClusterThrottle`.
"""

from __future__ import annotations

import contextlib
import heapq
import threading
import time
from typing import ContextManager, Iterator, Protocol, runtime_checkable

from ..exceptions import InvalidQueryError

__all__ = ["Throttle", "NullThrottle", "LocalThrottle"]


@runtime_checkable
class Throttle(Protocol):
    """Anything that can lend a request slot.

    ``lease()`` returns a context manager; the slot is held for the duration of the ``with``
    block and given back on exit, also on errors.
    """

    def lease(self) -> ContextManager[None]:
        """Wait for a slot, hold it inside the ``with`` block."""
        ...


class NullThrottle:
    """A throttle that never waits (for tests and single requests)."""

    def lease(self) -> ContextManager[None]:
        """A context manager that does nothing."""
        return contextlib.nullcontext()

    def __repr__(self) -> str:
        return "NullThrottle()"


class LocalThrottle:
    """Concurrency and start-rate limit shared by every thread of one process.

    Parameters
    ----------
    max_concurrency : int
        Requests in flight at once (MAST allows 10 per user).
    max_rate : float
        Request starts per second; 0 switches the rate limit off.
    settle : float
        Seconds a returned slot stays unusable. A server counts a request as finished a
        little after the client has read its last byte; without this margin a request
        started at once in the freed slot can find the server still at its limit (503).

    Notes
    -----
    Pickling gives a fresh throttle with the same limits: locks cannot cross processes, and a
    per-process budget is what this class promises. Use the cluster-wide throttle to share
    one budget between processes.
    """

    def __init__(self, max_concurrency: int = 10, max_rate: float = 0.0, settle: float = 0.0):
        if isinstance(max_concurrency, bool) or int(max_concurrency) < 1:
            raise InvalidQueryError(f"max_concurrency must be at least 1, got {max_concurrency!r}")
        if not max_rate >= 0:
            raise InvalidQueryError(f"max_rate must be >= 0 (0 = off), got {max_rate!r}")
        if not settle >= 0:
            raise InvalidQueryError(f"settle must be >= 0 seconds, got {settle!r}")
        self.max_concurrency = int(max_concurrency)
        self.max_rate = float(max_rate)
        self.settle = float(settle)
        self._cond = threading.Condition()
        self._cooling: list[float] = []   # monotonic times at which settling slots come back
        self._next_start = 0.0
        self._in_flight = 0
        self._max_in_flight = 0

    def __reduce__(self):
        return (type(self), (self.max_concurrency, self.max_rate, self.settle))

    def __repr__(self) -> str:
        return (f"LocalThrottle(max_concurrency={self.max_concurrency}, max_rate={self.max_rate}, "
                f"settle={self.settle})")

    @property
    def in_flight(self) -> int:
        """Leases held right now."""
        return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most leases ever held at once by this throttle."""
        return self._max_in_flight

    def _acquire(self) -> float:
        """Take a slot; returns how long to wait for the rate limit before starting."""
        with self._cond:
            while True:
                now = time.monotonic()
                while self._cooling and self._cooling[0] <= now:
                    heapq.heappop(self._cooling)
                if self._in_flight + len(self._cooling) < self.max_concurrency:
                    break
                self._cond.wait(self._cooling[0] - now if self._cooling else None)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            if self.max_rate <= 0:
                return 0.0
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.max_rate
            return start - now

    def _release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            if self.settle > 0:
                heapq.heappush(self._cooling, time.monotonic() + self.settle)
            self._cond.notify()

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Hold one of ``max_concurrency`` slots; starts are spaced by ``1 / max_rate`` seconds."""
        wait = self._acquire()
        try:
            # The slot is held while waiting for the rate limit, so that a burst of freed
            # slots cannot turn into a burst of request starts.
            if wait > 0:
                time.sleep(wait)
            yield
        finally:
            self._release()
