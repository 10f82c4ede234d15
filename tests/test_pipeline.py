"""The distributed pipeline end to end: a multi-process LocalCluster against the emulator.

Expected outcomes come from the emulator's own sky (``sectors_at``, ``moving_sectors``,
``zcut_surveys_at``, ``hapcut_cutout_files``), never from the code under test.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest
import xarray as xr

import mastcut_dask as mc
from mastcut_dask.emulator import MastEmulator
from mastcut_dask.emulator.hapcut import hapcut_cutout_files
from mastcut_dask.emulator.tess import moving_sectors, sectors_at, tic_position
from mastcut_dask.emulator.zcut import zcut_surveys_at
from mastcut_dask.options import ServiceOptions, ThrottleOptions
from mastcut_dask.services.resolver import resolve_name
from mastcut_dask.services.products import product_name
from mastcut_dask.store.manifest import Manifest
from mastcut_dask.pipeline.throttle import ClusterThrottle

distributed = pytest.importorskip("distributed")

UNCOVERED = (165.0, -70.0)     # a gap between the emulator's TESS sectors
HAP_GOOD = (351.347812, 28.497808)
HAP_NONE = (102.7, 70.50)
GOODS_N = (189.228621, 62.238572)


@pytest.fixture(scope="module")
def emu():
    with MastEmulator(max_cadences=20) as e:
        yield e


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as c:
        yield c


def _one_sector_targets(tic: int, n: int, prefix: str) -> list[dict]:
    """``n`` positions 3.6" apart near an emulator star, each naming its first sector (one request each)."""
    position = tic_position(tic)
    sector = sectors_at(*position)[0].sector
    return [{"id": f"{prefix}{i}", "ra": position[0], "dec": position[1] + i * 1e-3, "sector": sector}
            for i in range(n)]


def _products(ccds) -> set[str]:
    return {f"s{c.sector:04d}-{c.camera}-{c.ccd}" for c in ccds}


def _rows(table) -> dict[tuple[str, str], dict]:
    return {(r["target_id"], r["product"]): {k: r[k] for k in table.colnames} for r in table}


def _snapshot(root) -> dict[str, tuple[int, str]]:
    """Every file under ``root``: size and sha256 (and so whether anything changed)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = (os.path.getsize(path), hashlib.sha256(fh.read()).hexdigest(),
                                                    os.stat(path).st_mtime_ns)
    return out


def _cutout_requests(emulator) -> list[dict]:
    return [e for e in emulator.request_log() if e["path"].endswith("/astrocut")]


def _check_done_rows(table, out, decode, expected: dict[str, set[str]]) -> None:
    """Each expected (target, product) is done, its FITS file is where the manifest says, and the
    zarr group reads back equal to decoding that FITS file."""
    rows = _rows(table)
    tree = mc.open_cutouts(out)
    for tid, products in expected.items():
        got = {p for (t, p), r in rows.items() if t == tid and r["status"] == "done"}
        assert got == products, tid
        for product in products:
            row = rows[(tid, product)]
            path = os.path.join(out, row["fits_path"])
            with open(path, "rb") as fh:
                data = fh.read()
            assert row["n_bytes"] == len(data)
            assert row["sha256"] == hashlib.sha256(data).hexdigest()
            assert row["zarr_group"] == f"{tid}/{product}"
            stored = tree[row["zarr_group"]].to_dataset()
            xr.testing.assert_equal(stored, decode(path))


@pytest.mark.slow
def test_mixed_tesscut_list(emu, client, tmp_path):
    tic = 307210830
    m1 = resolve_name("M1", ServiceOptions(base_url=emu.url, resolver_url=emu.resolver_url))
    position = tic_position(12345)
    targets = [
        {"name": f"TIC {tic}"},
        {"name": "M1", "id": "crab"},
        {"id": "field_a", "ra": position[0], "dec": position[1]},
        {"name": "Eleonora", "moving": True},
        {"id": "gap", "ra": UNCOVERED[0], "dec": UNCOVERED[1]},
        {"id": "broken", "ra": "north-ish", "dec": 12.5},
        {"name": "No Such Object 4711"},
    ]
    assert not sectors_at(*UNCOVERED)
    out = str(tmp_path / "run")
    run = mc.fetch_cutouts(targets, service="tesscut", size=5, out=out, base_url=emu.url,
                           resolver_url=emu.resolver_url, max_rate=0, client=client, lightcurve=True,
                           progress=False)
    table = run.compute()
    rows = _rows(table)

    expected = {
        f"tic_{tic}": _products(sectors_at(*tic_position(tic))),
        "crab": _products(sectors_at(*m1)),
        "field_a": _products(sectors_at(*position)),
        "eleonora": _products(moving_sectors("Eleonora")),
    }
    # One light-curve row per target with TPFs: done, pointing at its zarr group.
    curves = table[table["product"] == "lightcurve"]
    assert sorted(curves["target_id"]) == sorted(expected)
    assert set(curves["status"]) == {"done"}
    assert all(r["zarr_group"] == f"{r['target_id']}/lightcurve" for r in curves)
    _check_done_rows(table[table["product"] != "lightcurve"], out, mc.tpf_to_xarray, expected)
    assert rows[("gap", "")]["status"] == "no_coverage"
    assert rows[("broken", "")]["status"] == "invalid"
    assert "north-ish" in rows[("broken", "")]["error"]
    assert rows[("no_such_object_4711", "")]["status"] == "invalid"
    assert "Could not resolve" in rows[("no_such_object_4711", "")]["error"]
    assert set(table["status"]) == {"done", "no_coverage", "invalid"}
    n_products = sum(len(p) for p in expected.values())
    assert len(table) == n_products + len(expected) + 3

    # The manifest on disk says the same as the returned table.
    from astropy.table import Table

    on_disk = Table.read(os.path.join(out, "manifest.csv"), format="ascii.csv")
    assert sorted(on_disk["status"]) == sorted(table["status"])

    # Stitched light curves: one per target with TPFs, on time, sector-labelled.
    tree = mc.open_cutouts(out)
    for tid, products in expected.items():
        lc = tree[f"{tid}/lightcurve"].to_dataset()
        assert set(int(s) for s in set(lc["sector"].values.tolist())) == {int(p[1:5]) for p in products}
        assert lc.sizes["time"] > 0


@pytest.mark.slow
def test_second_identical_run_fetches_nothing_and_changes_nothing(emu, client, tmp_path):
    position = tic_position(4242)
    targets = [{"name": "TIC 307210830"}, {"id": "field_b", "ra": position[0], "dec": position[1]},
               {"id": "gap", "ra": UNCOVERED[0], "dec": UNCOVERED[1]}, {"ra": "x", "dec": 1}]
    out = str(tmp_path / "run")
    kwargs = dict(service="tesscut", size=5, out=out, base_url=emu.url, resolver_url=emu.resolver_url,
                  max_rate=0, client=client, progress=False, lightcurve=True)
    first = mc.fetch_cutouts(targets, **kwargs).compute()
    assert "done" in set(first["status"])
    before = _snapshot(out)
    emu.reset_stats()
    second = mc.fetch_cutouts(targets, **kwargs).compute()
    assert emu.request_log() == [], "a rerun asks nothing: no cutout, no sector list, no name"
    assert _snapshot(out) == before, "a rerun changes no file"
    assert sorted(map(tuple, second.as_array().tolist())) == sorted(map(tuple, first.as_array().tolist()))

    # A damaged file is noticed (size/sha256) and fetched again, and only that one.
    done = [r for r in first if r["status"] == "done"]
    victim = os.path.join(out, done[0]["fits_path"])
    with open(victim, "r+b") as fh:
        fh.write(b"XXXX")
    emu.reset_stats()
    third = mc.fetch_cutouts(targets, **kwargs).compute()
    assert len(_cutout_requests(emu)) == 1
    assert _rows(third)[(done[0]["target_id"], done[0]["product"])]["sha256"] == done[0]["sha256"]


@pytest.mark.slow
def test_a_failed_light_curve_is_a_manifest_row(emu, client, tmp_path):
    import numpy as np

    position = tic_position(6001)
    out = str(tmp_path / "lc")
    wrong_shape = np.ones((2, 2), dtype=bool)  # the cutouts are 5x5
    table = mc.fetch_cutouts([{"id": "star", "ra": position[0], "dec": position[1]}], size=5, out=out,
                             base_url=emu.url, resolver_url=emu.resolver_url, max_rate=0, client=client,
                             progress=False, lightcurve=wrong_shape).compute()
    rows = _rows(table)
    assert rows[("star", "lightcurve")]["status"] == "failed"
    assert "aperture" in rows[("star", "lightcurve")]["error"]
    assert {p for (t, p), r in rows.items() if r["status"] == "done"} == _products(sectors_at(*position))
    on_disk = Manifest(out).get("star", "tesscut", "lightcurve")
    assert on_disk is not None and on_disk.status == "failed"


def _csv_keys(out) -> list[tuple[str, str]]:
    import csv

    with open(os.path.join(out, "manifest.csv"), newline="") as fh:
        return [(r["target_id"], r["product"]) for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_products_supersede_an_earlier_target_level_failure(emu, client, tmp_path, loopback):
    """A target whose discovery failed once (service down) and has products now is not also
    'failed' in manifest.csv, whichever run came first."""
    position = tic_position(6002)
    products = _products(sectors_at(*position))
    out = str(tmp_path / "s")
    targets = [{"id": "star", "ra": position[0], "dec": position[1]}]
    ok = dict(out=out, base_url=emu.url, resolver_url=emu.resolver_url, max_rate=0, client=client, progress=False)
    down = dict(ok, base_url=f"http://127.0.0.1:{loopback.closed_port()}",   # refused: "service down"
                service_options=ServiceOptions(max_retries=0))

    assert list(mc.fetch_cutouts(targets, **down).compute()["status"]) == ["failed"]
    assert _csv_keys(out) == [("star", "")]
    mc.fetch_cutouts(targets, **ok).compute()
    assert sorted(_csv_keys(out)) == sorted(("star", p) for p in products)

    # Products first, then a failed discovery (refresh: asked although all is stored), then a
    # run that only resumes: the stale target-level row goes, and nothing is fetched again.
    assert list(mc.fetch_cutouts(targets, **down).compute()["status"]) == ["done"]  # nothing asked
    assert list(mc.fetch_cutouts(targets, refresh=True, **down).compute()["status"]) == ["failed"]
    assert ("star", "") in _csv_keys(out)
    emu.reset_stats()
    again = mc.fetch_cutouts(targets, **ok).compute()
    assert _cutout_requests(emu) == []
    assert set(again["status"]) == {"done"}
    assert sorted(_csv_keys(out)) == sorted(("star", p) for p in products)
    assert Manifest(out).get("star", "tesscut") is None


@pytest.mark.slow
def test_a_rerun_with_another_size_fetches_again(emu, client, tmp_path):
    position = tic_position(6003)
    products = _products(sectors_at(*position))
    targets = [{"id": "star", "ra": position[0], "dec": position[1]}]
    kwargs = dict(out=str(tmp_path / "z"), base_url=emu.url, resolver_url=emu.resolver_url, max_rate=0,
                  client=client, progress=False)
    mc.fetch_cutouts(targets, size=5, **kwargs).compute()
    emu.reset_stats()
    table = mc.fetch_cutouts(targets, size=(7, 6), **kwargs).compute()
    assert len(_cutout_requests(emu)) == len(products)
    tree = mc.open_cutouts(kwargs["out"])
    for product in products:
        assert dict(tree[f"star/{product}"].to_dataset().sizes)["y"] == 7
        assert dict(tree[f"star/{product}"].to_dataset().sizes)["x"] == 6
    assert set(table["status"]) == {"done"}
    emu.reset_stats()
    mc.fetch_cutouts(targets, size=(7, 6), **kwargs).compute()
    assert _cutout_requests(emu) == [], "the same size again is a cache hit"


@pytest.mark.slow
def test_refresh_asks_again_but_fetches_nothing_new(emu, client, tmp_path):
    targets = [{"name": "TIC 307210830"}]
    kwargs = dict(out=str(tmp_path / "r"), base_url=emu.url, resolver_url=emu.resolver_url, max_rate=0,
                  client=client, progress=False)
    first = mc.fetch_cutouts(targets, **kwargs).compute()
    emu.reset_stats()
    again = mc.fetch_cutouts(targets, refresh=True, **kwargs).compute()
    asked = sorted({e["path"].rsplit("/", 1)[-1] for e in emu.request_log()})
    assert _cutout_requests(emu) == [] and "sector" in asked
    assert sorted(map(tuple, again.as_array().tolist())) == sorted(map(tuple, first.as_array().tolist()))


@pytest.mark.slow
def test_zcut_run(emu, client, tmp_path):
    targets = [{"id": "goodsn", "ra": GOODS_N[0], "dec": GOODS_N[1]},
               {"id": "nowhere", "ra": 10.0, "dec": 10.0}]
    assert not zcut_surveys_at(10.0, 10.0)
    out = str(tmp_path / "zrun")
    table = mc.fetch_cutouts(targets, service="zcut", size=8, out=out, base_url=emu.url,
                             resolver_url=emu.resolver_url, max_rate=0, client=client, progress=False).compute()
    expected = {"goodsn": {s.lower() for s in zcut_surveys_at(*GOODS_N)}}
    _check_done_rows(table, out, mc.image_to_xarray, expected)
    assert _rows(table)[("nowhere", "")]["status"] == "no_coverage"


@pytest.mark.slow
def test_hapcut_run(emu, client, tmp_path):
    targets = [{"id": "hap_good", "ra": HAP_GOOD[0], "dec": HAP_GOOD[1]},
               {"id": "hap_none", "ra": HAP_NONE[0], "dec": HAP_NONE[1]}]
    out = str(tmp_path / "hrun")
    table = mc.fetch_cutouts(targets, service="hapcut", size=6, out=out, base_url=emu.url,
                             resolver_url=emu.resolver_url, max_rate=0, client=client, progress=False).compute()
    files = hapcut_cutout_files(*HAP_GOOD, 6, 6, "px")
    assert files, "the emulator covers the HAPCut example position"
    expected = {"hap_good": {product_name("hapcut", name) for name, _ in files}}
    _check_done_rows(table, out, mc.image_to_xarray, expected)
    assert _rows(table)[("hap_none", "")]["status"] == "no_coverage"

    # HAPCut announces no products in advance: the stored ones stand for the request on a rerun.
    emu.reset_stats()
    again = mc.fetch_cutouts(targets, service="hapcut", size=6, out=out, base_url=emu.url,
                             resolver_url=emu.resolver_url, max_rate=0, client=client, progress=False).compute()
    assert _cutout_requests(emu) == []
    assert sorted(again["sha256"]) == sorted(table["sha256"])


@pytest.mark.slow
def test_retry_failed_asks_again_for_no_coverage(emu, client, tmp_path):
    targets = [{"id": "gap", "ra": UNCOVERED[0], "dec": UNCOVERED[1]}]
    kwargs = dict(out=str(tmp_path / "r"), base_url=emu.url, resolver_url=emu.resolver_url, max_rate=0,
                  client=client, progress=False)
    assert list(mc.fetch_cutouts(targets, **kwargs).compute()["status"]) == ["no_coverage"]
    emu.reset_stats()
    assert list(mc.fetch_cutouts(targets, **kwargs).compute()["status"]) == ["no_coverage"]
    assert emu.request_log() == [], "no_coverage is not asked again by default"
    mc.fetch_cutouts(targets, retry_failed=True, **kwargs).compute()
    assert [e["path"].rsplit("/", 1)[-1] for e in emu.request_log()] == ["sector"]


def _pending_acquires(name: str, dask_scheduler=None) -> int:
    return int(dask_scheduler.extensions["semaphores"].metrics["pending"].get(name, 0))


@pytest.mark.slow
def test_waiting_for_a_lease_leaves_the_worker_thread_free(emu, tmp_path):
    """One worker with one thread: while fetch tasks wait for leases, other tasks still run."""
    targets = _one_sector_targets(777, 3, "t")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as c:
        budget = ClusterThrottle(ThrottleOptions(max_concurrency=2, max_rate=0))
        with budget.lease(), budget.lease():  # the whole budget is held here, on the client
            run = mc.fetch_cutouts(targets, out=str(tmp_path / "r"), base_url=emu.url,
                                   resolver_url=emu.resolver_url, max_concurrency=2, max_rate=0,
                                   client=c, progress=False).persist()
            deadline = time.monotonic() + 60
            while c.run_on_scheduler(_pending_acquires, budget.concurrency_name) < 1:
                if time.monotonic() > deadline:
                    pytest.fail("no fetch task ever waited for a lease")
                time.sleep(0.05)
            # The only worker thread is not held by the waiting fetch task.
            assert c.submit(sum, [1, 2], pure=False).result(timeout=60) == 3
            assert not run.done(), "nothing could be fetched while the budget is held"
        table = run.compute()
    assert list(table["status"]) == ["done"] * 3


@pytest.mark.slow
def test_s3_output(emu, client, tmp_path):
    s3fs = pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        options = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
        fs.mkdir("pipeline")
        position = tic_position(31337)
        targets = [{"id": "s3_target", "ra": position[0], "dec": position[1]}]
        kwargs = dict(out="s3://pipeline/run", base_url=emu.url, resolver_url=emu.resolver_url, max_rate=0,
                      client=client, progress=False, storage_options=options)
        table = mc.fetch_cutouts(targets, **kwargs).compute()
        products = _products(sectors_at(*position))
        assert {r["product"] for r in table if r["status"] == "done"} == products
        tree = mc.open_cutouts("s3://pipeline/run", storage_options=options)
        for row in table:
            data = fs.cat_file(f"pipeline/run/{row['fits_path']}")
            assert hashlib.sha256(data).hexdigest() == row["sha256"]
            xr.testing.assert_equal(tree[row["zarr_group"]].to_dataset(), mc.tpf_to_xarray(data))
        emu.reset_stats()
        mc.fetch_cutouts(targets, **kwargs).compute()
        assert _cutout_requests(emu) == [], "resume works on S3 too"
    finally:
        server.stop()


def test_bad_calls_fail_before_any_request(emu, tmp_path):
    with pytest.raises(mc.InvalidQueryError):
        mc.fetch_cutouts([{"ra": 1, "dec": 2}], service="kepcut", out=str(tmp_path))
    with pytest.raises(mc.InvalidQueryError):
        mc.fetch_cutouts([{"ra": 1, "dec": 2}], out=str(tmp_path), max_concurrency=0)
    with pytest.raises(mc.InvalidQueryError):
        mc.fetch_cutouts([{"ra": 1, "dec": 2}], out=str(tmp_path), size=-3)
    with pytest.raises(mc.InvalidQueryError):
        mc.fetch_cutouts([{"ra": 1, "dec": 2}], service="hapcut", sector=3, out=str(tmp_path))
    with pytest.raises(mc.InvalidQueryError):
        mc.fetch_cutouts([{"ra": 1, "dec": 2}], out=str(tmp_path), base_url="ftp://mast.example")
    for bad in ({"n_workers": -1}, {"n_workers": 0}, {"threads_per_worker": 0}, {"n_workers": 1.5}):
        # A LocalCluster without workers would wait for ever.
        with pytest.raises(mc.InvalidQueryError):
            mc.fetch_cutouts([{"ra": 1, "dec": 2}], out=str(tmp_path), **bad)
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    emu.reset_stats()
    for bad in (0, -1.0, float("inf"), "60"):
        with pytest.raises(mc.InvalidQueryError, match="lease_timeout"):
            mc.fetch_cutouts([{"ra": 1, "dec": 2}], out=str(tmp_path / "t"), base_url=emu.url, lease_timeout=bad)
    for bad in (-0.01, float("nan"), "10ms"):
        with pytest.raises(mc.InvalidQueryError, match="release_delay"):
            mc.fetch_cutouts([{"ra": 1, "dec": 2}], out=str(tmp_path / "t"), base_url=emu.url, release_delay=bad)
    with pytest.raises(mc.InvalidQueryError, match="not a folder"):
        mc.fetch_cutouts([{"ra": 1, "dec": 2}], out=str(a_file), base_url=emu.url)
    with pytest.raises(mc.InvalidQueryError, match="not a folder"):
        mc.fetch_cutouts([{"ra": 1, "dec": 2}], out=str(a_file / "run"), base_url=emu.url)
    with pytest.raises(mc.InvalidQueryError, match="not a folder"):
        mc.fetch_cutouts([{"ra": 1, "dec": 2}], out=f"file://{a_file}", base_url=emu.url)
    assert emu.request_log() == []


@pytest.mark.slow
def test_a_failed_product_is_retried_when_products_are_not_announced(emu, client, tmp_path):
    """HAPCut announces no products: one product whose store failed must not be hidden by its
    siblings that are done."""
    from mastcut_dask.store.manifest import Manifest, ManifestRow

    targets = [{"id": "hap_good", "ra": HAP_GOOD[0], "dec": HAP_GOOD[1]}]
    kwargs = dict(service="hapcut", size=6, out=str(tmp_path / "h"), base_url=emu.url,
                  resolver_url=emu.resolver_url, max_rate=0, client=client, progress=False)
    first = mc.fetch_cutouts(targets, **kwargs).compute()
    assert set(first["status"]) == {"done"} and len(first) > 1
    victim = first[0]
    # As a run whose decoding or storing failed for this one product leaves it.
    Manifest(kwargs["out"]).append(ManifestRow("hap_good", "hapcut", victim["product"], "failed",
                                               fits_path=victim["fits_path"], error="DecodeError: broken"))
    emu.reset_stats()
    again = mc.fetch_cutouts(targets, **kwargs).compute()
    assert len(_cutout_requests(emu)) == 1, "the failed product is asked for again"
    assert _rows(again)[("hap_good", victim["product"])]["status"] == "done"


@pytest.mark.slow
def test_a_corrected_row_is_fetched_on_the_next_run(emu, client, tmp_path):
    """'invalid' rows from a bad target list are the input's fault: once the row is fixed, the
    next run fetches it (only the resolver's verdict on a name stands until retry_failed)."""
    position = tic_position(555)
    kwargs = dict(service="tesscut", size=5, out=str(tmp_path / "fix"), base_url=emu.url,
                  resolver_url=emu.resolver_url, max_rate=0, client=client, progress=False)
    first = mc.fetch_cutouts([{"id": "typo", "ra": "north-ish", "dec": position[1]}], **kwargs).compute()
    assert list(first["status"]) == ["invalid"]
    fixed = mc.fetch_cutouts([{"id": "typo", "ra": position[0], "dec": position[1]}], **kwargs).compute()
    assert {r["product"] for r in fixed if r["status"] == "done"} == _products(sectors_at(*position))


def _task_keys(prefix: str, dask_scheduler=None) -> list:
    return [k for k in dask_scheduler.tasks if str(k).startswith(prefix)]


@pytest.mark.slow
def test_a_rerun_never_reuses_an_earlier_runs_task_result(emu, client, tmp_path):
    """Task keys are tokenised from the request: while an earlier run's result for the same key
    is still held on the cluster, a rerun (here with retry_failed) must still ask the service."""
    targets = [{"id": "gap", "ra": UNCOVERED[0], "dec": UNCOVERED[1]}]
    kwargs = dict(out=str(tmp_path / "k"), base_url=emu.url, resolver_url=emu.resolver_url, max_concurrency=3,
                  max_rate=0, client=client, progress=False)
    budget = ClusterThrottle(ThrottleOptions(max_concurrency=3, max_rate=0))
    with budget.lease(), budget.lease(), budget.lease():  # the discovery task waits for a lease...
        run = mc.fetch_cutouts(targets, **kwargs).persist()
        deadline = time.monotonic() + 60
        while not (keys := client.run_on_scheduler(_task_keys, "mastcut-discover-")):
            if time.monotonic() > deadline:
                pytest.fail("no discovery task was submitted")
            time.sleep(0.05)
        held = [distributed.Future(k, client=client) for k in keys]  # ...and its result stays held
    assert list(run.compute()["status"]) == ["no_coverage"]
    emu.reset_stats()
    mc.fetch_cutouts(targets, retry_failed=True, **kwargs).compute()
    assert [e["path"].rsplit("/", 1)[-1] for e in emu.request_log()] == ["sector"]
    del held


def test_the_pixel_limit_is_tesscuts_alone(tmp_path):
    """TESSCut's documented 10,000-pixel limit refuses a TESS row before any request; ZCut and
    HAPCut publish none, so the same row goes to them."""
    rows = [{"id": "big", "ra": GOODS_N[0], "dec": GOODS_N[1], "size": 200}, {"id": "small", "ra": 1.0, "dec": 2.0}]
    tess = mc.fetch_cutouts(rows, service="tesscut", out=str(tmp_path / "t"), progress=False)
    assert [r.target_id for r in tess.plan.invalid] == ["big"]
    assert "limit of 10000 pixels" in tess.plan.invalid[0].error
    for service in ("zcut", "hapcut"):
        run = mc.fetch_cutouts(rows, service=service, out=str(tmp_path / service), progress=False)
        assert run.plan.invalid == () and [t.target_id for t in run.plan.targets] == ["big", "small"]
    with pytest.raises(mc.InvalidQueryError, match="limit of 10000 pixels"):
        mc.fetch_cutouts(rows, service="tesscut", size=200, out=str(tmp_path / "t2"))
    assert mc.fetch_cutouts(rows, service="zcut", size=200, out=str(tmp_path / "z2")).plan.invalid == ()


def test_a_bug_decoding_one_file_does_not_fail_its_siblings(emu, tmp_path, monkeypatch):
    """fetch_and_store as a plain function: one HAPCut file whose decoding raises an unexpected
    error is that product's failure; the request's other files are still stored."""
    from mastcut_dask.pipeline import tasks
    from mastcut_dask.pipeline.settings import FetchRequest, RunSettings
    from mastcut_dask.services.throttle import NullThrottle
    from mastcut_dask.targets.read import read_targets

    real_decode = tasks.read_stored_fits
    victim = {}

    def flaky_decode(fits_path, settings):
        if not victim:
            victim["path"] = fits_path
            raise ValueError("a decoder bug")
        return real_decode(fits_path, settings)

    monkeypatch.setattr(tasks, "make_throttle", lambda settings: NullThrottle())
    monkeypatch.setattr(tasks, "read_stored_fits", flaky_decode)
    settings = RunSettings(service="hapcut", out=str(tmp_path),
                                 service_options=ServiceOptions(base_url=emu.url, resolver_url=emu.resolver_url))
    target = read_targets([{"id": "hap", "ra": HAP_GOOD[0], "dec": HAP_GOOD[1]}]).with_defaults(size=6).targets[0]
    result = tasks.fetch_and_store(FetchRequest(target), settings)
    assert len(result.files) == len(hapcut_cutout_files(*HAP_GOOD, 6, 6, "px")) > 1
    failed = [f for f in result.files if f.error]
    assert [f.fits_path for f in failed] == [victim["path"]]
    assert failed[0].error == "ValueError: a decoder bug" and failed[0].zarr_group is None
    tree = mc.open_cutouts(str(tmp_path))
    stored = sorted(f.zarr_group for f in result.files if not f.error)
    assert sorted(f"hap/{name}" for name in tree["hap"].children) == stored


def _probe_store(dask_worker=None):
    """On a worker: count store calls running at once, each made slow enough to overlap with
    the next file's if nothing kept them apart (the downloads all end together)."""
    import threading
    import time

    from mastcut_dask.pipeline import tasks

    state = {"now": 0, "max": 0, "calls": 0, "in_pool": 0}
    lock = threading.Lock()
    real = tasks.store_dataset

    def probe(*args, **kwargs):
        with lock:
            state["now"] += 1
            state["calls"] += 1
            state["max"] = max(state["max"], state["now"])
            state["in_pool"] += threading.current_thread() in dask_worker.executors["default"]._threads
        try:
            time.sleep(0.2)  # stands for a slow decode: widens the window for an overlap
            return real(*args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    tasks.store_dataset, tasks._probe_state = probe, state


def _probed(dask_worker=None):
    from mastcut_dask.pipeline import tasks

    return dict(tasks._probe_state)


@pytest.mark.slow
def test_decode_and_store_take_no_more_places_than_the_worker_has_threads(emu, tmp_path):
    """Fetch tasks wait and download outside the thread pool, and decode and store there too,
    under a per-worker semaphore sized to the worker's threads: one at a time here, and never
    in a pool thread (the pool stays free to start the next fetch tasks)."""
    targets = _one_sector_targets(6004, 4, "t")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as c:
        c.run(_probe_store)
        table = mc.fetch_cutouts(targets, out=str(tmp_path / "p"), base_url=emu.url, resolver_url=emu.resolver_url,
                                 max_rate=0, client=c, progress=False).compute()
        (state,) = c.run(_probed).values()
    assert set(table["status"]) == {"done"}
    assert state["calls"] == len(table) == 4
    assert state["max"] == 1 and state["in_pool"] == 0, state


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_nothing(tmp_path):
    """A worker process dies while it holds request places: Dask runs its tasks again elsewhere,
    the places come back after lease_timeout, and every target still ends done, within the limit."""
    import os
    import signal

    targets = _one_sector_targets(6005, 16, "k")
    import dask

    # The scheduler looks for expired leases every 10 s by default; a 2 s lease wants a closer look.
    with dask.config.set({"distributed.scheduler.locks.lease-validation-interval": "200ms"}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    with MastEmulator(max_cadences=20, latency=0.5, max_concurrency=4) as slow, cluster, distributed.Client(cluster) as c:
        run = mc.fetch_cutouts(targets, out=str(tmp_path / "k"), base_url=slow.url, resolver_url=slow.resolver_url,
                               max_concurrency=4, max_rate=0, lease_timeout=2.0, client=c, progress=False).persist()
        deadline = time.monotonic() + 60
        while slow.stats()["in_flight"] < 2:  # requests from (most likely) both workers are under way
            if time.monotonic() > deadline:
                pytest.fail("no request started")
            time.sleep(0.02)
        victim = sorted(c.scheduler_info()["workers"])[0]
        os.kill(c.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)  # no goodbye to anyone
        table = run.compute()
    assert len(table) == 16 and set(table["status"]) == {"done"}, list(table["status"])
    stats = slow.stats()
    assert stats["max_in_flight"] <= 4
    assert stats["status_counts"].get(503, 0) == 0


def _loaded(modules):
    import sys

    return [name for name in modules if name not in sys.modules]


@pytest.mark.slow
def test_the_worker_preload_imports_the_decoding_stack_at_start():
    """Workers started with mastcut_dask.pipeline.worker_preload (as the clusters mastcut_dask starts
    are) have every module a cutout needs before their first task; others import on demand."""
    from mastcut_dask.pipeline.worker_preload import MODULES

    for preload, expect_missing in (([], True), (["mastcut_dask.pipeline.worker_preload"], False)):
        with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                                      preload=preload) as cluster, distributed.Client(cluster) as c:
            (missing,) = c.run(_loaded, MODULES).values()
        assert bool(missing) is expect_missing, missing


def _worker_setup(dask_worker=None):
    import sys

    return dask_worker.state.nthreads, "profile" in dask_worker.periodic_callbacks, "xarray" in sys.modules


@pytest.mark.slow
def test_local_cluster_is_the_one_runs_start():
    """mc.local_cluster (what fetch_cutouts and `mastcut fetch` start without a scheduler):
    processes of one thread, preloaded with the decoding stack, Dask's profiler off."""
    with mc.local_cluster(2) as cluster, distributed.Client(cluster) as c:
        setups = list(c.run(_worker_setup).values())
    assert setups == [(1, False, True)] * 2
    with mc.local_cluster(1, 3, dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        assert list(c.run(_worker_setup).values()) == [(3, False, True)]
    with mc.local_cluster(1, profile=True) as cluster, distributed.Client(cluster) as c:
        assert list(c.run(_worker_setup).values()) == [(1, True, True)]
