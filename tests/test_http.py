"""The HTTP layer against the emulator's faults: retries, timeouts, clear errors, atomic downloads."""

from __future__ import annotations

import os
import pickle
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mastcut_dask.services.clients import SLOT_SETTLE
from mastcut_dask.services.queries import query_sectors
from mastcut_dask.emulator import MastEmulator
from mastcut_dask.exceptions import (
    InvalidQueryError,
    ServiceUnavailableError,
    UnexpectedResponseError,
)
from mastcut_dask.services.http import backoff_delay, perform
from mastcut_dask.options import ServiceOptions
from mastcut_dask.services.catalog import endpoint_url
from mastcut_dask.services.throttle import LocalThrottle, NullThrottle

POS = dict(ra=135.1408, dec=-5.1915)


def fast(emu, **kw) -> ServiceOptions:
    base = dict(base_url=emu.url, resolver_url=emu.resolver_url, backoff_base=0.01, backoff_cap=0.05,
                connect_timeout=2.0, read_timeout=5.0, max_retries=6)
    base.update(kw)
    return ServiceOptions(**base)


@pytest.fixture(scope="module")
def clean_rows(emulator):
    return query_sectors(fast(emulator), **POS)


def test_clean_request(emulator, clean_rows):
    assert [r["sectorName"] for r in clean_rows][:1] == ["tess-s0008-1-1"]
    assert all(isinstance(r["sector"], int) for r in clean_rows)


@pytest.mark.parametrize("fault", ["503", "504", "truncate", "reset", "html200"])
def test_transient_faults_are_retried_and_result_intact(fault, clean_rows):
    with MastEmulator(faults={fault: 0.5}, seed=3) as emu:
        opts = fast(emu, max_retries=10)
        for _ in range(6):
            assert query_sectors(opts, **POS) == clean_rows
        stats = emu.stats()
    assert stats["fault_counts"].get(fault, 0) > 0          # the fault really happened...
    assert stats["requests"] > 6                            # ...and was retried


def test_persistent_503_names_url_status_and_attempts():
    with MastEmulator(faults={"503": 1.0}) as emu:
        opts = fast(emu, max_retries=3)
        with pytest.raises(ServiceUnavailableError) as info:
            query_sectors(opts, **POS)
        assert emu.stats()["requests"] == 4
    err = info.value
    assert err.attempts == 4 and err.status == 503
    assert "/tesscut/api/v0.1/sector" in err.url and emu.url in err.url
    assert "4 tries" in str(err) and "503" in str(err) and err.url in str(err)


def test_stall_times_out_then_retries():
    with MastEmulator(faults={"stall": 0.5}, stall_seconds=20, seed=1) as emu:
        opts = fast(emu, read_timeout=0.3, max_retries=8)
        rows = [query_sectors(opts, **POS) for _ in range(3)]
        # A stalled request is only logged when it ends; the retry shows in the request count.
        stats = emu.stats()
        assert stats["requests"] > 3 and stats["in_flight"] >= 1
    assert all(r == rows[0] for r in rows) and rows[0]


def test_stall_every_time_is_a_timeout_error():
    with MastEmulator(faults={"stall": 1.0}, stall_seconds=20) as emu:
        with pytest.raises(ServiceUnavailableError, match="timed out") as info:
            query_sectors(fast(emu, read_timeout=0.2, max_retries=1), **POS)
    assert info.value.attempts == 2 and info.value.status is None


def test_html_with_200_is_unexpected_response():
    with MastEmulator(faults={"html200": 1.0}) as emu:
        with pytest.raises(UnexpectedResponseError, match="neither a zip archive nor JSON") as info:
            query_sectors(fast(emu, max_retries=2), **POS)
        assert emu.stats()["requests"] == 3
    assert info.value.attempts == 3 and info.value.status == 200


def test_bad_request_is_not_retried(emulator):
    before = emulator.stats()["requests"]
    with pytest.raises(InvalidQueryError, match="declination|Dec"):
        query_sectors(fast(emulator), ra=10.0, dec=95.0)   # bypasses the client's own checks on purpose
    assert emulator.stats()["requests"] == before + 1


def test_connection_refused_is_retried_then_reported():
    with MastEmulator() as emu:
        url = emu.url
    opts = ServiceOptions(base_url=url, backoff_base=0.01, backoff_cap=0.02, max_retries=2, connect_timeout=1)
    with pytest.raises(ServiceUnavailableError, match="connection failed") as info:
        query_sectors(opts, **POS)
    assert info.value.attempts == 3


def test_local_throttle_keeps_30_threads_to_10_in_flight():
    throttle = LocalThrottle(max_concurrency=10, settle=SLOT_SETTLE)
    with MastEmulator(latency=0.05, max_concurrency=10) as emu:
        opts = fast(emu)
        with ThreadPoolExecutor(30) as pool:
            results = list(pool.map(lambda _: query_sectors(opts, throttle=throttle, **POS), range(60)))
        stats = emu.stats()
    assert len(results) == 60 and all(r == results[0] for r in results)
    assert stats["max_in_flight"] <= 10
    assert 503 not in stats["status_counts"]
    assert throttle.max_in_flight <= 10


def test_local_throttle_blocks_the_eleventh_lease_and_pickles():
    throttle = LocalThrottle(max_concurrency=5)
    entered = threading.Semaphore(0)
    go = threading.Event()
    peak = []

    def hold():
        with throttle.lease():
            peak.append(throttle.in_flight)
            entered.release()
            go.wait()

    threads = [threading.Thread(target=hold) for _ in range(12)]
    for t in threads:
        t.start()
    for _ in range(5):
        entered.acquire()
    assert throttle.in_flight == 5
    assert not entered.acquire(timeout=0.2)        # nobody else got in while five are held
    go.set()
    for t in threads:
        t.join()
    assert max(peak) <= 5 and len(peak) == 12 and throttle.in_flight == 0
    clone = pickle.loads(pickle.dumps(LocalThrottle(3, 2.0, settle=0.1)))
    assert (clone.max_concurrency, clone.max_rate, clone.settle, clone.in_flight) == (3, 2.0, 0.1, 0)


def test_unthrottled_threads_do_meet_503s():
    """The control experiment: without the throttle the emulator's limit is hit."""
    with MastEmulator(latency=0.05, max_concurrency=10) as emu:
        opts = fast(emu, max_retries=0)
        with ThreadPoolExecutor(30) as pool:
            futures = [pool.submit(query_sectors, opts, throttle=NullThrottle(), **POS) for _ in range(30)]
        errors = [f.exception() for f in futures if f.exception() is not None]
    assert errors and all(isinstance(e, ServiceUnavailableError) for e in errors)


def test_streamed_downloads_are_unique_and_atomic(tmp_path, emulator):
    opts = fast(emulator)
    url = endpoint_url(emulator.url, "tesscut", "sector")
    params = [("ra", "135.1408"), ("dec", "-5.1915"), ("radius", "0")]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: perform("POST", url, options=opts, data=params, dest_dir=str(tmp_path),
                                                  tmp_prefix="sect"), range(16)))
    paths = {r.path for r in results}
    assert len(paths) == 16
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths)
    assert len({open(p, "rb").read() for p in paths}) == 1


def test_interrupted_download_leaves_nothing(tmp_path):
    with MastEmulator(faults={"reset": 1.0}) as emu:
        url = endpoint_url(emu.url, "tesscut", "sector")
        with pytest.raises(ServiceUnavailableError):
            perform("POST", url, options=fast(emu, max_retries=1), data=[("ra", "1"), ("dec", "2")],
                    dest_dir=str(tmp_path), final_name="result.json")
    assert os.listdir(tmp_path) == []


def test_retry_after_is_honoured(loopback):
    with loopback([loopback.Reply(429, headers={"Retry-After": "0.2"}),
                   loopback.Reply(200, b'{"results": []}', {"Content-Type": "application/json"})]) as server:
        url = f"{server.url}/x"
        opts = ServiceOptions(backoff_base=0.0, backoff_cap=5.0, max_retries=2)
        result = perform("GET", url, options=opts, params=[("a", "1")])
        assert result.status == 200 and result.attempts == 2 and len(server.requests) == 2


def test_backoff_delay_is_capped_full_jitter():
    opts = ServiceOptions(backoff_base=0.5, backoff_cap=4.0)
    rng = random.Random(0)
    delays = [backoff_delay(n, opts, rng=rng) for n in range(10) for _ in range(50)]
    assert min(delays) >= 0 and max(delays) <= 4.0
    assert max(backoff_delay(0, opts, rng=rng) for _ in range(50)) <= 0.5
    assert backoff_delay(0, opts, retry_after=3.0, rng=rng) == 3.0     # Retry-After wins when longer
    # ...also beyond the cap, which bounds our own guesses, not what the server asked for...
    assert backoff_delay(0, opts, retry_after=60.0, rng=rng) == 60.0
    # ...up to max_retry_after (perform does not even retry beyond it)
    assert backoff_delay(0, opts, retry_after=500.0, rng=rng) == opts.max_retry_after == 120.0


def test_malformed_url_is_the_callers_mistake_not_retried():
    opts = ServiceOptions(max_retries=3, backoff_base=0.01)
    with pytest.raises(InvalidQueryError, match="No scheme"):
        perform("GET", "mast.stsci.edu/tesscut", options=opts)


ENCODED_BODY = b'{"results": []}' * 50


def _encoded_reply(loopback, content_length: str | None = None):
    """A reply the way a web server with compression on sends it: Content-Length counts wire
    bytes (``content_length`` overrides the announced length)."""
    import gzip

    wire = gzip.compress(ENCODED_BODY)
    return loopback.Reply(200, wire, {"Content-Type": "application/json", "Content-Encoding": "gzip",
                                      "Content-Length": content_length or str(len(wire))})


@pytest.mark.parametrize("to_disk", [False, True])
def test_compressed_body_is_not_mistaken_for_a_truncated_one(tmp_path, to_disk, loopback):
    # Content-Length counts the gzip bytes on the wire, not the decoded body: comparing it with
    # the decoded size made every compressed reply look "truncated" and fail after all retries.
    with loopback([_encoded_reply(loopback)]) as server:
        url = f"{server.url}/x"
        opts = ServiceOptions(max_retries=1, backoff_base=0.0, backoff_cap=0.0)
        result = perform("GET", url, options=opts, dest_dir=str(tmp_path) if to_disk else None)
        assert result.attempts == 1 and result.n_bytes == len(ENCODED_BODY)
        assert (result.content if not to_disk else open(result.path, "rb").read()) == ENCODED_BODY


def test_non_ascii_digit_content_length_does_not_escape_as_valueerror(loopback):
    # "\xb2" (superscript two) passes str.isdigit() but not int(); hostile headers must not crash.
    with loopback([_encoded_reply(loopback, content_length="\xb2")]) as server:
        url = f"{server.url}/x"
        opts = ServiceOptions(max_retries=0, backoff_base=0.0, backoff_cap=0.0)
        result = perform("GET", url, options=opts)
        assert result.content == ENCODED_BODY


# ---- Retry-After beyond the backoff cap --------------------------------------------------------
def test_retry_after_longer_than_the_cap_is_honoured_not_cut_to_the_cap():
    # Waiting only backoff_cap when the server asked for longer hammers a server that asked us
    # to wait. The sleep is recorded, not slept.
    slept: list[float] = []
    with MastEmulator(faults={"503": 0.5}, retry_after=7, seed=5) as emu:
        opts = fast(emu, backoff_cap=0.05, max_retries=20)
        for _ in range(4):
            result = perform("POST", endpoint_url(emu.url, "tesscut", "sector"), options=opts,
                             data=[("ra", "135.1408"), ("dec", "-5.1915")], sleep=slept.append)
            assert result.status == 200
        n_503 = emu.stats()["status_counts"].get(503, 0)
    assert n_503 > 0 and len(slept) == n_503
    assert slept == [7.0] * n_503


def test_retry_after_beyond_max_retry_after_fails_at_once_with_a_clear_error():
    slept: list[float] = []
    with MastEmulator(faults={"503": 1.0}, retry_after=3600) as emu:
        opts = fast(emu, max_retries=5, max_retry_after=120)
        with pytest.raises(ServiceUnavailableError) as info:
            perform("POST", endpoint_url(emu.url, "tesscut", "sector"), options=opts,
                    data=[("ra", "135.1408"), ("dec", "-5.1915")], sleep=slept.append)
        assert emu.stats()["requests"] == 1          # not retried: the server asked for an hour
    assert slept == []
    err = info.value
    assert err.status == 503 and err.attempts == 1 and "/tesscut/api/v0.1/sector" in err.url
    assert "3600s (Retry-After)" in str(err) and "max_retry_after=120s" in str(err) and "later" in str(err)


def test_retry_after_as_an_http_date_is_honoured(loopback):
    # Retry-After may be an HTTP date; 30 s ahead lands between the cap and max_retry_after.
    import email.utils
    import time

    def script(request):
        if request.index == 0:      # the date is taken when the request arrives, as a server would
            return loopback.Reply(503, headers={"Retry-After": email.utils.formatdate(time.time() + 30,
                                                                                      usegmt=True)})
        return loopback.Reply(200, b'{"results": []}')

    slept: list[float] = []
    with loopback(script) as server:
        url = f"{server.url}/x"
        opts = ServiceOptions(backoff_base=0.0, backoff_cap=1.0, max_retries=2)
        assert perform("GET", url, options=opts, sleep=slept.append).attempts == 2
    assert len(slept) == 1 and 20.0 < slept[0] <= 30.0


# ---- the total deadline of one try ---------------------------------------------------------------
DRIP_PARAMS = [("ra", "107.18696"), ("dec", "-70.50919"), ("x", "5"), ("y", "5"), ("units", "px"),
               ("sector", "33")]


@pytest.fixture(scope="module")
def dripping():
    """An emulator that sends each 64 KiB of a ~150 KB cutout zip two seconds apart: every socket
    read gets bytes well within a 5 s read timeout, yet the reply takes about 4 s."""
    with MastEmulator(max_cadences=200, bandwidth=32 * 1024) as emu:
        yield emu


@pytest.mark.slow
def test_a_dripping_reply_passes_the_read_timeout(dripping):
    # The control: without a tight deadline the slow reply is read in full, so the read timeout
    # alone could never stop a server that drips for ever.
    opts = fast(dripping, read_timeout=5.0, request_timeout=60.0, max_retries=0)
    result = perform("GET", endpoint_url(dripping.url, "tesscut", "astrocut"), options=opts, params=DRIP_PARAMS)
    assert result.attempts == 1 and result.n_bytes > 2 * 64 * 1024 and result.head(4) == b"PK\x03\x04"


@pytest.mark.parametrize("to_disk", [False, True])
def test_request_timeout_cuts_a_dripping_reply_retries_and_frees_the_lease(dripping, tmp_path, to_disk):
    throttle = LocalThrottle(max_concurrency=1)
    before = len(dripping.request_log())
    opts = fast(dripping, read_timeout=5.0, request_timeout=0.5, max_retries=1)
    with pytest.raises(ServiceUnavailableError, match="request_timeout=0.5s") as info:
        perform("GET", endpoint_url(dripping.url, "tesscut", "astrocut"), options=opts, params=DRIP_PARAMS,
                throttle=throttle, dest_dir=str(tmp_path) if to_disk else None)
    err = info.value
    assert err.attempts == 2 and err.status == 200 and "timed out" in str(err)   # retried as a timeout
    # Cut while blocked inside the read of the second 64 KiB (which comes 2 s after the first),
    # not merely noticed once that read returned: the deadline wakes a blocked read.
    assert "(slow reply, 65536 bytes received)" in str(err)
    assert len(dripping.request_log()) - before == 2
    assert throttle.in_flight == 0                    # each try gave its lease back
    assert os.listdir(tmp_path) == []                 # no .part file left behind
    # the single slot is free for the next request
    quick = fast(dripping, max_retries=0)
    assert query_sectors(quick, throttle=throttle, **POS)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), "600", True])
def test_request_timeout_is_validated(bad):
    with pytest.raises(InvalidQueryError, match="request_timeout"):
        ServiceOptions(request_timeout=bad)


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan"), "120", None])
def test_max_retry_after_is_validated(bad):
    with pytest.raises(InvalidQueryError, match="max_retry_after"):
        ServiceOptions(max_retry_after=bad)


def test_sessions_are_lent_per_try_and_reused_across_threads():
    """Dask runs each network task in a fresh (seceded) thread: a session kept per thread would
    open a new connection for nearly every request. Sessions are lent per try instead."""
    import threading

    from mastcut_dask.services.http import borrowed_session

    def borrow_in_a_new_thread(box):
        def run():
            with borrowed_session() as session:
                box.append(session)
        t = threading.Thread(target=run)
        t.start()
        t.join()

    first, second = [], []
    borrow_in_a_new_thread(first)
    borrow_in_a_new_thread(second)
    assert second[0] is first[0], "a later thread reuses the idle session (and its connections)"
    with borrowed_session() as a, borrowed_session() as b:
        assert a is not b, "two tries at once never share a session"
    with pytest.raises(RuntimeError), borrowed_session() as broken:
        raise RuntimeError("the try failed")
    with borrowed_session() as after:
        assert after is not broken, "a session whose try failed is not lent again"
