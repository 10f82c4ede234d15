"""How network tasks share a worker: they leave its thread pool while they wait, and take one
of its CPU places for decoding and storing.

Outside a Dask worker (a plain call) both helpers simply run the block.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any, Iterator

from distributed import get_worker, secede
from distributed.worker import thread_state

__all__ = ["secede_if_in_task", "seceded", "cpu_place"]


def secede_if_in_task() -> bool:
    """Leave the worker's thread pool when inside a Dask task; True if this thread did.

    Network tasks spend their time waiting for a lease and for bytes; seceding hands their
    thread slot to CPU work meanwhile. Resolve and discovery tasks never rejoin: rejoining
    waits for a free slot, and a small answer waiting behind CPU work would hold back the
    next requests. The seceded thread simply ends with the task.
    """
    if getattr(thread_state, "execution_state", None) is None:
        return False  # called directly, not as a task
    secede()
    return True


@contextlib.contextmanager
def seceded() -> Iterator[None]:
    """Run the block outside the worker's thread pool (see `secede_if_in_task`), never rejoining."""
    secede_if_in_task()
    yield


# Per worker (weakly keyed): a semaphore with one permit per worker thread, taken by a seceded
# task for its CPU work. See `cpu_place`.
_CPU_SLOTS: "weakref.WeakKeyDictionary[Any, threading.BoundedSemaphore]" = weakref.WeakKeyDictionary()
_CPU_SLOTS_LOCK = threading.Lock()


@contextlib.contextmanager
def cpu_place() -> Iterator[None]:
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
        worker = get_worker()
    except ValueError:  # not on a worker
        yield
        return
    with _CPU_SLOTS_LOCK:
        slots = _CPU_SLOTS.get(worker)
        if slots is None:
            slots = _CPU_SLOTS[worker] = threading.BoundedSemaphore(max(1, int(worker.state.nthreads)))
    with slots:
        yield
