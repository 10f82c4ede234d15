"""Seeded fault injection: every fault happens at its configured rate, reproducibly.

Each request is classified by what a client actually receives over a fresh connection
(status, headers, body, or the way the connection broke), never by asking the emulator.
"""

from __future__ import annotations

import http.client
import io
import json
import math
import socket
import zipfile
from urllib.parse import urlencode, urlsplit

import pytest

from mastcut_dask.emulator import MastEmulator
from mastcut_dask.emulator.faults import FAULT_NAMES, FaultPlan

RESOLVER_PATH = "/Santa-war/query?" + urlencode({"name": "M101", "outputFormat": "json"})
# A position the seed document cuts out (TESS sector 33 and others): it has data.
CUTOUT_PATH = "/tesscut/api/v0.1/astrocut?" + urlencode(
    {"ra": 107.18696, "dec": -70.50919, "x": 3, "y": 3, "units": "px", "sector": 33})


def _bounds(n: int, p: float, z: float = 4.5) -> tuple[float, float]:
    """A z-sigma binomial interval: with a fixed seed the count is fixed, this says it is sane."""
    mu = n * p
    sd = math.sqrt(n * p * (1 - p))
    return mu - z * sd, mu + z * sd


def _classify(emu: MastEmulator, path: str, timeout: float = 30.0) -> str:
    parts = urlsplit(emu.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    except http.client.IncompleteRead:
        return "truncate"
    except ConnectionResetError:
        return "reset"
    except (socket.timeout, TimeoutError):
        return "stall"
    finally:
        conn.close()
    if resp.status in (503, 504):
        return str(resp.status)
    if resp.status != 200:
        return f"status {resp.status}"
    ctype = resp.getheader("Content-Type", "")
    if ctype.startswith("text/html"):
        return "html200"
    if ctype == "application/json":
        payload = json.loads(body)
        if "No FFIs found" in payload.get("msg", ""):
            return "nodata_transient"
        return "ok"
    if ctype == "application/zip":
        try:
            zf = zipfile.ZipFile(io.BytesIO(body))
        except zipfile.BadZipFile:
            return "badzip"
        infos = zf.infolist()
        if any(i.filename.startswith("/") or ".." in i.filename.split("/") for i in infos):
            return "zipslip"
        if sum(i.file_size for i in infos) > 1 << 30:
            return "zipbomb"
        if zf.testzip() is not None:
            return "badzip"
        return "ok"
    return f"unexpected {ctype}"


@pytest.mark.parametrize("fault", ["503", "504", "html200", "truncate", "reset"])
def test_transport_faults_happen_at_their_rate(fault):
    n, p = 300, 0.2
    with MastEmulator(faults={fault: p}, seed=11) as emu:
        outcomes = [_classify(emu, RESOLVER_PATH) for _ in range(n)]
    stats = emu.stats()  # final once stop() has returned
    logged = [e["fault"] for e in emu.request_log()]
    observed = outcomes.count(fault)
    lo, hi = _bounds(n, p)
    assert lo <= observed <= hi
    assert outcomes.count("ok") == n - observed, set(outcomes)
    assert stats["fault_counts"] == {fault: observed}
    assert logged.count(fault) == observed


@pytest.mark.slow
def test_stall_happens_at_its_rate_and_then_answers():
    n, p = 48, 0.25
    with MastEmulator(faults={"stall": p}, seed=5, stall_seconds=1.0) as emu:
        outcomes = [_classify(emu, RESOLVER_PATH, timeout=0.25) for _ in range(n)]
        stats = emu.stats()  # faults are counted when injected, before any reply
    observed = outcomes.count("stall")
    lo, hi = _bounds(n, p)
    assert lo <= observed <= hi
    assert outcomes.count("ok") == n - observed
    assert stats["fault_counts"] == {"stall": observed}


@pytest.mark.parametrize("fault", ["nodata_transient", "badzip", "zipslip", "zipbomb"])
def test_archive_faults_happen_at_their_rate(fault):
    n, p = 150, 0.2
    with MastEmulator(faults={fault: p}, seed=3, max_cadences=4) as emu:
        outcomes = [_classify(emu, CUTOUT_PATH) for _ in range(n)]
    observed = outcomes.count(fault)
    lo, hi = _bounds(n, p)
    assert lo <= observed <= hi
    assert outcomes.count("ok") == n - observed, set(outcomes)


def test_nodata_transient_speaks_each_services_no_data_dialect():
    hap = "/hapcut/api/v0.1/astrocut?" + urlencode({"ra": 351.347812, "dec": 28.497808, "x": 5,
                                                    "y": 5})
    with MastEmulator(faults={"nodata_transient": 1.0}) as emu:
        parts = urlsplit(emu.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.request("GET", hap)
        reply = json.loads(conn.getresponse().read())
        conn.close()
    assert reply == {"msg": "Missing HAP files for input target. Cutout not performed.",
                     "results": []}


def test_zipslip_and_zipbomb_archives_are_what_they_claim():
    with MastEmulator(faults={"zipslip": 1.0}, max_cadences=4) as emu:
        parts = urlsplit(emu.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.request("GET", CUTOUT_PATH)
        names = zipfile.ZipFile(io.BytesIO(conn.getresponse().read())).namelist()
        conn.close()
    assert "../evil.fits" in names and "/abs/evil.fits" in names
    with MastEmulator(faults={"zipbomb": 1.0}, max_cadences=4) as emu:
        parts = urlsplit(emu.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.request("GET", CUTOUT_PATH)
        body = conn.getresponse().read()
        conn.close()
    zf = zipfile.ZipFile(io.BytesIO(body))
    assert len(body) < 8 << 20
    assert all(i.file_size > 1 << 30 for i in zf.infolist())
    with zf.open(zf.infolist()[0]) as member:  # the declared size is real, not just a header
        assert member.read(1 << 20) == bytes(1 << 20)


def test_archive_faults_leave_discovery_endpoints_alone():
    with MastEmulator(faults={"badzip": 1.0}) as emu:
        assert [_classify(emu, RESOLVER_PATH) for _ in range(5)] == ["ok"] * 5


def test_same_seed_same_faults_other_seed_other_faults():
    mix = {"503": 0.1, "504": 0.1, "html200": 0.1, "truncate": 0.1}

    def run(seed):
        with MastEmulator(faults=mix, seed=seed) as emu:
            return [_classify(emu, RESOLVER_PATH) for _ in range(60)]

    first, again, other = run(1), run(1), run(2)
    assert first == again
    assert first != other
    assert set(first) <= {"ok", "503", "504", "html200", "truncate"}


def test_reset_stats_restarts_the_fault_sequence():
    with MastEmulator(faults={"503": 0.3}, seed=9) as emu:
        first = [_classify(emu, RESOLVER_PATH) for _ in range(30)]
        emu.reset_stats()
        assert emu.stats()["requests"] == 0 and emu.request_log() == []
        again = [_classify(emu, RESOLVER_PATH) for _ in range(30)]
    assert first == again


@pytest.mark.parametrize("faults", [{"nope": 0.1}, {"503": 1.5}, {"503": 0.6, "504": 0.6},
                                    {"503": float("nan")}])
def test_invalid_fault_settings_are_refused(faults):
    with pytest.raises(ValueError):
        FaultPlan(faults)
    with pytest.raises(ValueError):
        MastEmulator(faults=faults)


def test_every_documented_fault_name_is_accepted():
    plan = FaultPlan({name: 0.1 for name in FAULT_NAMES})
    assert set(plan.probabilities) == set(FAULT_NAMES)
