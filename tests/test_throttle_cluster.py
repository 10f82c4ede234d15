"""ClusterThrottle on a real multi-process LocalCluster: one budget for every worker and thread."""

from __future__ import annotations

import pickle
import time

import pytest

import dask
from mastcut_dask.exceptions import InvalidQueryError
from mastcut_dask.options import ThrottleOptions
from mastcut_dask.pipeline.throttle import ClusterThrottle
from mastcut_dask.services.throttle import Throttle

distributed = pytest.importorskip("distributed")


# The scheduler looks for stale leases every 10 s by default; checking every 0.1 s lets a test
# with a 1 s lease timeout see a lease expire (or not) within a few seconds.
_FAST_LEASE_CHECKS = {"distributed.scheduler.locks.lease-validation-interval": "100ms"}


@pytest.fixture(scope="module")
def client():
    # 2 processes x 8 threads: far more threads than leases, so only the scheduler can keep count.
    with dask.config.set(_FAST_LEASE_CHECKS):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=8, processes=True,
                                           dashboard_address=":0")
    with cluster, distributed.Client(cluster) as c:
        yield c


def _hold(i: int, throttle: ClusterThrottle, seconds: float) -> tuple[float, float, int]:
    """Inside a lease: note when it was entered and left (stands in for a request moving bytes)."""
    import os

    with throttle.lease():
        start = time.time()
        time.sleep(seconds)
        end = time.time()
    return start, end, os.getpid()


def _max_overlap(intervals) -> int:
    events = sorted([(s, 1) for s, e in intervals] + [(e, -1) for s, e in intervals])
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def _max_starts_per_second(starts) -> int:
    starts = sorted(starts)
    return max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)


def test_is_a_throttle_and_pickles_as_its_options():
    throttle = ClusterThrottle(ThrottleOptions(max_concurrency=3, max_rate=2.0, name="pickled"))
    assert isinstance(throttle, Throttle)
    copy = pickle.loads(pickle.dumps(throttle))
    assert copy.options == throttle.options
    assert copy.concurrency_name == throttle.concurrency_name


@pytest.mark.parametrize("options", [
    ThrottleOptions(max_concurrency=0),
    ThrottleOptions(max_concurrency=2.5),
    ThrottleOptions(max_rate=-1),
    ThrottleOptions(max_rate=float("nan")),
    ThrottleOptions(lease_timeout=0),
    ThrottleOptions(release_delay=-0.01),
    ThrottleOptions(release_delay=float("nan")),
    ThrottleOptions(release_delay="10ms"),
])
def test_bad_options_are_refused(options):
    with pytest.raises(InvalidQueryError):
        ClusterThrottle(options)


def test_rate_window_keeps_the_average_rate():
    leases, hold = ClusterThrottle(ThrottleOptions(max_rate=5)).rate_window
    assert leases == 5 and hold >= 1.0
    leases, hold = ClusterThrottle(ThrottleOptions(max_rate=0.5)).rate_window
    assert leases == 1 and hold >= 2.0
    assert ClusterThrottle(ThrottleOptions(max_rate=0)).rate_name is None


@pytest.mark.slow
def test_concurrency_is_cluster_wide(client):
    throttle = ClusterThrottle(ThrottleOptions(max_concurrency=4, max_rate=0, name="test-conc"))
    futures = client.map(_hold, range(48), throttle=throttle, seconds=0.05, pure=False)
    results = client.gather(futures)
    assert len({pid for _, _, pid in results}) == 2, "both worker processes took part"
    peak = _max_overlap([(s, e) for s, e, _ in results])
    assert peak <= 4
    # 16 threads competing for 4 leases: the budget is used fully, not only respected.
    assert peak == 4
    assert throttle.in_flight() == 0, "every lease was given back"


@pytest.mark.slow
def test_rate_is_cluster_wide(client):
    throttle = ClusterThrottle(ThrottleOptions(max_concurrency=10, max_rate=5, name="test-rate"))
    futures = client.map(_hold, range(16), throttle=throttle, seconds=0.01, pure=False)
    results = client.gather(futures)
    assert _max_starts_per_second([s for s, _, _ in results]) <= 5


def _pending_acquires(name: str, dask_scheduler=None) -> int:
    return int(dask_scheduler.extensions["semaphores"].metrics["pending"].get(name, 0))


@pytest.mark.slow
def test_client_and_workers_share_one_budget(client):
    options = ThrottleOptions(max_concurrency=2, max_rate=0, name="test-shared")
    here = ClusterThrottle(options)
    with here.lease(), here.lease():
        # The client holds the whole budget: a worker asking for a lease must queue on the scheduler.
        assert here.in_flight() == 2
        future = client.submit(_hold, 0, throttle=ClusterThrottle(options), seconds=0.0, pure=False)
        deadline = time.monotonic() + 30
        while client.run_on_scheduler(_pending_acquires, here.concurrency_name) < 1:
            if time.monotonic() > deadline or future.done():
                pytest.fail("the worker's lease request never waited on the scheduler")
            time.sleep(0.02)
        assert not future.done()
        released = time.time()
    start, _, _ = future.result()
    assert start >= released
    assert here.in_flight() == 0


def _fresh_throttle_lease(i: int, options: ThrottleOptions) -> int:
    with ClusterThrottle(options).lease():  # a new throttle per task, as the pipeline's tasks build them
        pass
    return i


def _semaphores_named(prefix: str, dask_worker=None) -> int:
    import gc

    gc.collect()
    return sum(1 for o in gc.get_objects()
               if isinstance(o, distributed.Semaphore) and str(getattr(o, "name", "")).startswith(prefix))


@pytest.mark.slow
def test_throttles_built_per_task_share_one_semaphore_per_worker(client):
    """Each distributed.Semaphore keeps a lease-refresh callback on its process's event loop
    for ever: building one per task would pile them up for the whole life of a worker."""
    options = ThrottleOptions(max_concurrency=3, max_rate=50, name="test-per-task")
    client.gather(client.map(_fresh_throttle_lease, range(40), options=options, pure=False))
    counts = client.run(_semaphores_named, "test-per-task")
    assert counts and all(n <= 2 for n in counts.values()), counts  # concurrency + rate, once per process


def _hold_after_signal(label: str, throttle: ClusterThrottle, seconds: float, entered: str | None = None,
                       wait_for: str | None = None) -> tuple[str, float, float]:
    """Wait for the named distributed Event ``wait_for`` (if any), then hold a lease for
    ``seconds``, setting the Event ``entered`` once inside it."""
    if wait_for is not None:
        distributed.Event(wait_for).wait()
    with throttle.lease():
        start = time.time()
        if entered is not None:
            distributed.Event(entered).set()
        time.sleep(seconds)
        end = time.time()
    return label, start, end


def _one_after_the_other(client, options: ThrottleOptions, hold_first: float) -> tuple[float, float]:
    """With one place: a first request holds it ``hold_first`` seconds, a second is queued on the
    scheduler meanwhile; returns (first's end, second's start)."""
    entered = f"{options.name}-in"
    first = client.submit(_hold_after_signal, "first", ClusterThrottle(options), hold_first, entered=entered,
                          pure=False)
    second = client.submit(_hold_after_signal, "second", ClusterThrottle(options), 0.0, wait_for=entered,
                           pure=False)
    (_, _, first_end), (_, second_start, _) = client.gather([first, second])
    return first_end, second_start


@pytest.mark.slow
def test_a_lease_outlives_its_timeout_while_its_holder_lives(client):
    """The lease timeout bounds how long a *dead* holder keeps its place, not how long a request
    may take: the holder's process refreshes its leases every timeout / 5. A request held three
    times longer than the timeout (the scheduler checking every 0.1 s) keeps its place, and the
    next request only starts once it has ended."""
    options = ThrottleOptions(max_concurrency=1, max_rate=0, name="test-outlives", lease_timeout=1.0)
    long_end, short_start = _one_after_the_other(client, options, hold_first=3.0)
    assert short_start >= long_end, "the scheduler took the lease from a live holder: two requests overlapped"
    assert ClusterThrottle(options).in_flight() == 0


@pytest.mark.slow
def test_release_delay_keeps_the_place_after_the_block(client):
    """With a release delay, the next request starts that long after the last one ended."""
    options = ThrottleOptions(max_concurrency=1, max_rate=0, name="test-release-delay", release_delay=0.5)
    first_end, second_start = _one_after_the_other(client, options, hold_first=0.0)
    assert second_start >= first_end + 0.5


def _die_holding_the_budget(marker: str, throttle: ClusterThrottle) -> str:
    """Take every lease, then kill this worker process without giving them back."""
    import os

    if os.path.exists(marker):
        return "rerun after the crash"  # the scheduler reruns the task on the restarted worker
    with throttle.lease(), throttle.lease():
        with open(marker, "w"):
            pass
        distributed.Event("test-dead-holder-in").set()
        os._exit(1)


@pytest.mark.slow
def test_a_dead_workers_leases_come_back_after_the_lease_timeout(tmp_path):
    """A worker that dies holding leases cannot give them back; the scheduler reclaims them
    after ``lease_timeout`` without a refresh and waiting requests go on. (With a timeout of
    minutes, the whole run waits that long: see ThrottleOptions.lease_timeout.)"""
    options = ThrottleOptions(max_concurrency=2, max_rate=0, name="test-dead-holder", lease_timeout=1.0)
    with dask.config.set(_FAST_LEASE_CHECKS):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=":0")
    with cluster, distributed.Client(cluster) as client:
        killer = client.submit(_die_holding_the_budget, str(tmp_path / "died"), ClusterThrottle(options), pure=False)
        distributed.Event("test-dead-holder-in", client=client).wait()
        waiter = client.submit(_hold_after_signal, "after", ClusterThrottle(options), 0.0, pure=False)
        assert waiter.result()[0] == "after"
        assert killer.result() == "rerun after the crash"
        assert (tmp_path / "died").exists()
        assert ClusterThrottle(options).in_flight() == 0

