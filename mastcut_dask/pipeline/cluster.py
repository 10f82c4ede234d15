"""The Dask cluster a run uses: the one given, the current one, or a `local_cluster` of its own."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import dask
from distributed import Client, LocalCluster

from ..exceptions import MastcutError
from ..options import ThrottleOptions

__all__ = ["local_cluster", "client_for"]


@contextlib.contextmanager
def client_for(run: Any) -> Iterator[Client]:
    """The given Client, the current one, or a `local_cluster` closed at the end."""
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
    * workers start with `mastcut_dask.pipeline.worker_preload` (the decoding stack imported as they
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
    options = {"n_workers": n_workers if n_workers is not None else min(4, os.cpu_count() or 1),
               "threads_per_worker": threads_per_worker if threads_per_worker is not None else 1, "processes": True,
               "dashboard_address": ":0", "preload": ["mastcut_dask.pipeline.worker_preload"]}
    options.update(kwargs)
    lease = lease_timeout if lease_timeout is not None else ThrottleOptions().lease_timeout
    # Workers copy the config they are started with; the lease timeout is read by the scheduler.
    with dask.config.set({"distributed.scheduler.locks.lease-timeout": f"{lease}s",
                          "distributed.worker.profile.enabled": bool(profile)}):
        return LocalCluster(**options)
