"""The emulator as a real HTTP server: routes, parameters, 400s, limits, stats, shutdown, CLI."""

from __future__ import annotations

import http.client
import io
import json
import signal
import subprocess
import sys
import threading
import zipfile
from collections import Counter
from urllib.parse import urlsplit

import pytest
import requests

from mastcut_dask.emulator import MastEmulator

TESS = "/tesscut/api/v0.1/"
ZCUT = "/zcut/api/v0.1/"
HAPCUT = "/hapcut/api/v0.1/"


def _recorded_resolver():
    from pathlib import Path

    path = Path(__file__).parent / "data" / "resolver.json"
    return json.loads(path.read_text())["resolvedCoordinate"]


# ---- resolver --------------------------------------------------------------------------------
def test_resolver_answers_recorded_names_as_santa_did(emulator):
    recorded = _recorded_resolver()
    names = sorted({e["searchString"] for e in recorded})
    r = requests.get(emulator.resolver_url,
                     params={"name": names, "outputFormat": "json", "resolveAll": "True"},
                     timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == ""
    got = {(e["searchString"], e["resolver"]): (e["ra"], e["decl"]) for e in body["resolvedCoordinate"]}
    want = {(e["searchString"], e["resolver"]): (e["ra"], e["decl"]) for e in recorded}
    assert got == want


def test_resolver_first_entry_only_unless_resolve_all(emulator):
    r = requests.get(emulator.resolver_url, params={"name": "M101", "outputFormat": "json",
                                                    "resolveAll": "False"}, timeout=10)
    entries = r.json()["resolvedCoordinate"]
    assert [(e["searchString"], e["resolver"]) for e in entries] == [("m101", "SIMBAD")]
    r = requests.get(emulator.resolver_url, params={"name": "M101", "outputFormat": "json",
                                                    "resolveAll": "False", "resolver": "NED"},
                     timeout=10)
    assert [e["resolver"] for e in r.json()["resolvedCoordinate"]] == ["NED"]


def test_resolver_unknown_and_moving_names_give_no_entry(emulator):
    r = requests.get(emulator.resolver_url, params={"name": ["Eleonora", "no such thing"],
                                                    "outputFormat": "json"}, timeout=10)
    assert r.status_code == 200
    assert r.json()["resolvedCoordinate"] == []


def test_resolver_tic_names_use_the_sky_position(emulator):
    from mastcut_dask.emulator import tess

    r = requests.get(emulator.resolver_url, params={"name": "TIC 32449963", "outputFormat": "json",
                                                    "resolveAll": "False"}, timeout=10)
    (entry,) = r.json()["resolvedCoordinate"]
    assert entry["resolver"] == "TIC" and entry["searchString"] == "tic 32449963"
    assert (entry["ra"], entry["decl"]) == pytest.approx(tess.tic_position(32449963, seed=0))


def test_resolver_without_name_is_400(emulator):
    r = requests.get(emulator.resolver_url, params={"outputFormat": "json"}, timeout=10)
    assert r.status_code == 400 and "name" in r.json()["msg"]


# ---- discovery and cutouts -------------------------------------------------------------------
def test_sector_reply_is_all_strings_and_matches_the_sky(emulator):
    from mastcut_dask.emulator import tess

    r = requests.post(emulator.url + TESS + "sector",
                      data={"ra": 135.1408, "dec": -5.1915, "radius": 0}, timeout=10)
    assert r.status_code == 200
    rows = r.json()["results"]
    assert rows, "the seed document's position must be covered"
    for row in rows:
        assert set(row) == {"sectorName", "sector", "camera", "ccd"}
        assert all(isinstance(v, str) for v in row.values())
    want = [(c.sector, c.camera, c.ccd) for c in tess.sectors_at(135.1408, -5.1915, 0.0, seed=0)]
    assert [(int(r["sector"]), int(r["camera"]), int(r["ccd"])) for r in rows] == want
    assert rows[0]["sectorName"] == "tess-s{:04d}-{}-{}".format(*want[0])


@pytest.mark.parametrize("radius, degrees", [("0.5d", 0.5), ("30m", 0.5), ("1800s", 0.5),
                                             ("10px", 10 * 21 / 3600)])
def test_radius_unit_suffixes(emulator, radius, degrees):
    from mastcut_dask.emulator import tess

    r = requests.get(emulator.url + TESS + "sector",
                     params={"ra": 135.1408, "dec": -5.1915, "radius": radius}, timeout=10)
    assert r.status_code == 200
    want = [c.sector for c in tess.sectors_at(135.1408, -5.1915, degrees, seed=0)]
    assert [int(x["sector"]) for x in r.json()["results"]] == want


def test_cutout_zip_get_and_post_agree_and_sector_lists(emulator):
    query = {"ra": 107.18696, "dec": -70.50919, "x": 3, "y": 4, "units": "px"}
    r_get = requests.get(emulator.url + TESS + "astrocut", params=query, timeout=60)
    r_post = requests.post(emulator.url + TESS + "astrocut", data=query, timeout=60)
    assert r_get.status_code == r_post.status_code == 200
    assert r_get.headers["Content-Type"] == "application/zip"
    assert int(r_get.headers["Content-Length"]) == len(r_get.content)
    assert r_get.content == r_post.content  # deterministic: same request, same bytes
    names = zipfile.ZipFile(io.BytesIO(r_get.content)).namelist()
    assert names and all(n.endswith("_3x4_astrocut.fits") for n in names)
    sectors = sorted({int(n.split("-")[1][1:]) for n in names})
    if len(sectors) >= 2:
        # repeated keys and the literal list form select the same sectors
        pair = sectors[:2]
        a = requests.get(emulator.url + TESS + "astrocut", params={**query, "sector": pair},
                         timeout=60)
        b = requests.get(emulator.url + TESS + "astrocut",
                         params={**query, "sector": f"[{pair[0]}, {pair[1]}]"}, timeout=60)
        assert a.content == b.content
        got = {int(n.split("-")[1][1:]) for n in zipfile.ZipFile(io.BytesIO(a.content)).namelist()}
        assert got == set(pair)


def test_fault_seed_does_not_change_the_sky_but_sky_seed_does():
    query = {"ra": 107.18696, "dec": -70.50919, "x": 3, "y": 3, "sector": 33}

    def body(**kw):
        with MastEmulator(max_cadences=5, **kw) as emu:
            r = requests.get(emu.url + TESS + "astrocut", params=query, timeout=60)
            assert r.status_code == 200
            return r.content

    base = body()
    assert body(seed=7) == base
    assert body(sky_seed=7) != base


def test_no_data_replies(emulator):
    from mastcut_dask.emulator import tess

    # find an uncovered position deterministically
    for i in range(2000):
        ra, dec = (i * 7.31) % 360, -89 + (i * 3.77) % 178
        if not tess.sectors_at(ra, dec, 0.0, seed=0):
            break
    else:
        pytest.skip("the procedural sky covers every probed position")
    r = requests.get(emulator.url + TESS + "astrocut", params={"ra": ra, "dec": dec, "x": 5, "y": 5},
                     timeout=30)
    assert r.status_code == 200
    assert r.json() == {"msg": "Cutout Error: No FFIs found for input target. Cutout not performed."}
    r = requests.post(emulator.url + HAPCUT + "astrocut",
                      json={"ra": 102.7, "dec": 70.5, "x": 5.0, "y": 5.0, "units": "px"}, timeout=30)
    assert r.status_code == 200
    assert r.json() == {"msg": "Missing HAP files for input target. Cutout not performed.",
                        "results": []}


@pytest.mark.parametrize("path, params, fragment", [
    (TESS + "sector", {"ra": 10, "dec": 20, "radius": "3q"}, "unit"),
    (TESS + "sector", {"ra": 10}, "position"),
    (TESS + "sector", {"ra": 10, "dec": 95}, "declination"),
    (TESS + "astrocut", {"ra": 10, "dec": 20, "x": 5, "y": 5, "units": "furlong"}, "units"),
    (TESS + "astrocut", {"ra": 10, "dec": 20, "x": 101, "y": 100}, "too large"),
    (TESS + "astrocut", {"ra": 10, "dec": 20, "x": 0.6, "y": 0.6, "units": "d"}, "too large"),
    (TESS + "astrocut", {"dec": 20, "x": 5, "y": 5}, "position"),
    (TESS + "astrocut", {"ra": "abc", "dec": 20}, "ra"),
    (TESS + "astrocut", {"ra": 10, "dec": 20, "sector": "eight"}, "sector"),
    (TESS + "moving_target/astrocut", {"x": 5, "y": 5}, "obj_id"),
    (TESS + "astrocut", {"ra": 10, "dec": 20, "product": "TICA"}, "spoc"),
    (ZCUT + "survey", {"ra": 10, "dec": 20, "radius": "1parsec"}, "unit"),
    (ZCUT + "astrocut", {"ra": 189.49206, "dec": 62.20615, "survey": "no_such_survey"}, "survey"),
    (ZCUT + "astrocut", {"ra": 189.49206, "dec": 62.20615, "format": "gif"}, "format"),
    (ZCUT + "astrocut", {"ra": 189.49206, "dec": 62.20615, "cutout_format": "jpg",
                         "stretch": "cubic"}, "stretch"),
    (HAPCUT + "astrocut", {"ra": 351.347812, "dec": 28.497808, "x": 200, "y": 200}, "too large"),
])
def test_invalid_input_is_400_with_msg(emulator, path, params, fragment):
    r = requests.get(emulator.url + path, params=params, timeout=30)
    assert r.status_code == 400
    assert fragment in r.json()["msg"].lower()


def test_unknown_path_is_404_and_stats_endpoint(emulator):
    before = emulator.stats()
    r = requests.get(emulator.url + "/tesscut/api/v0.2/sector", timeout=10)
    assert r.status_code == 404
    stats = requests.get(emulator.url + "/emulator/stats", timeout=10).json()
    assert stats["requests"] == before["requests"] + 1  # the stats call itself is not counted
    assert stats["status_counts"]["404"] == before["status_counts"].get(404, 0) + 1
    assert {"requests", "max_in_flight", "status_counts", "bytes_sent"} <= set(stats)
    entry = emulator.request_log()[-1]
    assert entry["path"] == "/tesscut/api/v0.2/sector" and entry["status"] == 404
    assert {"start", "end", "method", "params", "bytes"} <= set(entry)


def test_oversized_body_is_refused():
    with MastEmulator() as emu:
        r = requests.post(emu.resolver_url, data=b"name=" + b"x" * (2 << 20), timeout=30)
        assert r.status_code == 413


# ---- limits ----------------------------------------------------------------------------------
def _fire_together(url, n, params):
    barrier = threading.Barrier(n)
    statuses: list[int] = []
    lock = threading.Lock()

    def one():
        with requests.Session() as s:
            barrier.wait()
            r = s.get(url, params=params, timeout=60)
        with lock:
            statuses.append(r.status_code)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Counter(statuses)


def test_concurrency_limit_rejects_exactly_the_excess():
    # The admitted requests hold their slot for the latency, far longer than it takes the
    # other requests to arrive on loopback, so exactly 25 - 10 are refused.
    with MastEmulator(latency=1.5, max_concurrency=10) as emu:
        counts = _fire_together(emu.resolver_url, 25, {"name": "M1", "outputFormat": "json"})
        stats = emu.stats()
    assert counts == {200: 10, 503: 15}
    assert stats["max_in_flight"] == 10
    assert stats["status_counts"] == {200: 10, 503: 15}
    assert stats["rejected"] == 15


def test_503_page_and_reason_phrase():
    with MastEmulator(latency=1.0, max_concurrency=1) as emu:
        host, port = urlsplit(emu.url).hostname, urlsplit(emu.url).port
        holder = threading.Thread(target=requests.get, args=(emu.resolver_url,),
                                  kwargs={"params": {"name": "M1"}, "timeout": 30})
        holder.start()
        # wait (on the server's own counter, not the clock) until the first request is in flight
        while emu.stats()["in_flight"] < 1:
            threading.Event().wait(0.01)
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/Santa-war/query?name=M1")
        resp = conn.getresponse()
        assert resp.status == 503
        assert resp.reason == "Service Temporarily Unavailable"
        assert b"Service Temporarily Unavailable" in resp.read()
        conn.close()
        holder.join()


def test_a_request_stops_counting_once_its_last_byte_is_out(monkeypatch):
    """A client that has read a whole reply may start its next request at once, however long
    the server's handler thread then takes to finish (on a loaded machine: the GIL, the CPU)."""
    handler_done = threading.Event()
    record = MastEmulator._record

    def slow_record(self, *args):
        handler_done.wait(5)  # the handler is held up after its last byte, until released below
        record(self, *args)

    monkeypatch.setattr(MastEmulator, "_record", slow_record)
    with MastEmulator(max_concurrency=1) as emu:
        first = requests.get(emu.resolver_url, params={"name": "M1"}, timeout=10)  # all bytes read
        with requests.Session() as other:  # another connection: its own handler thread
            second = other.get(emu.resolver_url, params={"name": "M1"}, timeout=10)
        handler_done.set()
    assert (first.status_code, second.status_code) == (200, 200)


def test_retry_after_on_503_when_asked():
    with MastEmulator(max_rate=0.2, retry_after=2.5) as emu:
        first = requests.get(emu.resolver_url, params={"name": "M1"}, timeout=10)
        second = requests.get(emu.resolver_url, params={"name": "M1"}, timeout=10)
    assert first.status_code == 200 and "Retry-After" not in first.headers
    assert second.status_code == 503 and second.headers["Retry-After"] == "2.5"
    with MastEmulator(faults={"503": 1.0}) as emu:
        r = requests.get(emu.resolver_url, params={"name": "M1"}, timeout=10)
    assert r.status_code == 503 and "Retry-After" not in r.headers


def test_max_rate_window_counts_exactly():
    # 0.2 per second = one start per 5 s window: of six quick requests exactly one gets in.
    with MastEmulator(max_rate=0.2) as emu:
        with requests.Session() as s:
            codes = [s.get(emu.resolver_url, params={"name": "M1"}, timeout=10).status_code
                     for _ in range(6)]
    assert codes == [200, 503, 503, 503, 503, 503]


def test_max_rate_never_exceeded_in_any_second():
    with MastEmulator(max_rate=5) as emu:
        counts = _fire_together(emu.resolver_url, 30, {"name": "M1"})
        log = emu.request_log()
    assert counts[503] > 0
    starts = sorted(e["start"] for e in log if e["status"] == 200)
    for i, t in enumerate(starts):
        assert sum(1 for u in starts[i:] if u < t + 1.0) <= 5


def test_stop_is_prompt_with_a_stalled_request():
    emu = MastEmulator(faults={"stall": 1.0}, stall_seconds=600).start()
    outcome: list[object] = []

    def stalled():
        try:
            outcome.append(requests.get(emu.resolver_url, params={"name": "M1"}, timeout=300))
        except requests.RequestException as err:
            outcome.append(err)

    t = threading.Thread(target=stalled)
    t.start()
    while emu.stats()["in_flight"] < 1:
        threading.Event().wait(0.01)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(emu.resolver_url, params={"name": "M1"}, timeout=0.5)
    emu.stop()
    t.join(timeout=20)
    assert not t.is_alive(), "stop() left a stalled request hanging"
    assert isinstance(outcome[0], requests.RequestException)


def test_two_hundred_connections_are_all_answered():
    with MastEmulator(latency=0.5, max_concurrency=10) as emu:
        counts = _fire_together(emu.resolver_url, 200, {"name": "M1"})
        after = requests.get(emu.resolver_url, params={"name": "M1"}, timeout=10)
    assert sum(counts.values()) == 200
    assert set(counts) <= {200, 503} and counts[200] >= 10 and counts[503] >= 1
    assert after.status_code == 200


# ---- CLI -------------------------------------------------------------------------------------
def _mastcut_command() -> list[str]:
    """The installed console script when there is one (a fresh install has it), else -m."""
    import shutil
    from pathlib import Path

    script = shutil.which("mastcut", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "mastcut_dask.cli"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_mastcut_emulate_subprocess(sig):
    proc = subprocess.Popen([*_mastcut_command(), "emulate", "--port", "0", "--max-cadences", "5",
                             "--fault", "503=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = proc.stdout.readline().strip()
        resolver = proc.stdout.readline().strip()
        assert base.startswith("MAST emulator base URL: http://127.0.0.1:")
        base_url = base.rsplit(" ", 1)[1]
        assert resolver == f"resolver URL: {base_url}/Santa-war/query"
        r = requests.get(resolver.rsplit(" ", 1)[1], params={"name": "M101", "outputFormat": "json"},
                         timeout=10)
        assert r.json()["resolvedCoordinate"][0]["canonicalName"] == "M 101"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "served 1 requests" in out


@pytest.mark.slow
def test_mastcut_emulate_refuses_unknown_fault():
    proc = subprocess.run([*_mastcut_command(), "emulate", "--fault", "meteor=0.1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown fault 'meteor'" in proc.stderr


# ---- request parsing (pure functions) --------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mastcut_dask.emulator.errors import BadRequest  # noqa: E402
from mastcut_dask.emulator.params import parse_request  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(value=st.floats(min_value=0, max_value=1e4, allow_nan=False),
       unit=st.sampled_from(["", "d", "m", "s", "px"]))
def test_radius_suffixes_scale_correctly(value, unit):
    factor = {"": 1.0, "d": 1.0, "m": 1 / 60, "s": 1 / 3600, "px": 21 / 3600}[unit]
    params = parse_request(f"radius={value!r}{unit}", b"", None)
    assert params.radius_deg() == pytest.approx(value * factor, rel=1e-12, abs=1e-300)


@settings(max_examples=200, deadline=None)
@given(sectors=st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=6),
       form=st.sampled_from(["repeated", "literal", "comma"]))
def test_sector_lists_in_every_wire_form(sectors, form):
    if form == "repeated":
        query = "&".join(f"sector={s}" for s in sectors)
    elif form == "literal":
        query = "sector=" + str(sectors)  # what astroquery's GET path sends for a list
    else:
        query = "sector=" + ",".join(map(str, sectors))
    assert parse_request(query, b"", None).sectors() == sorted(set(sectors))


def test_form_and_json_bodies_and_query_merge():
    p = parse_request("ra=1", b"dec=2&sector=3&sector=4", "application/x-www-form-urlencoded")
    assert p.position() == (1.0, 2.0) and p.sectors() == [3, 4]
    p = parse_request("", b'{"ra": 351.3, "dec": 28.4, "x": 5.0, "y": 3.0, "units": "px"}',
                      "application/json")
    size = p.size()
    assert p.position() == (351.3, 28.4) and (size.x, size.y, size.units) == (5.0, 3.0, "px")
    with pytest.raises(BadRequest):
        parse_request("", b"[1, 2]", "application/json")
    assert parse_request("sector=All", b"", None).sectors() is None


def test_moving_target_name_cannot_inject_response_headers(emulator):
    # The object name reaches Content-Disposition; quotes and CR/LF must not survive.
    name = 'a"b\r\nX-Injected: yes'
    r = requests.get(emulator.url + TESS + "moving_target/astrocut",
                     params={"obj_id": name, "x": 3, "y": 3, "units": "px", "sector": 2}, timeout=60)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/zip"
    assert "X-Injected" not in r.headers
    disposition = r.headers["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition
    assert disposition.count('"') == 2


def test_the_reply_is_built_while_the_latency_runs(monkeypatch):
    """A request takes `latency` seconds from arrival to reply, the emulator's own work
    included: the product is built during the wait, not after it."""
    from mastcut_dask.emulator import server

    built = threading.Event()
    route, is_archive = server.ROUTES["/Santa-war/query"]

    def watched(emu, params):
        built.set()
        return route(emu, params)

    monkeypatch.setitem(server.ROUTES, "/Santa-war/query", (watched, is_archive))
    with MastEmulator(latency=2.0) as emu:
        answers = []
        client = threading.Thread(target=lambda: answers.append(
            requests.get(emu.resolver_url, params={"name": "M1", "outputFormat": "json"}, timeout=30)))
        client.start()
        assert built.wait(1.5), "the reply was not built until the latency was over"
        assert not answers  # ... and it is not sent before
        client.join()
        (entry,) = emu.request_log()
    assert answers[0].status_code == 200
    assert entry["end"] - entry["start"] >= 2.0
