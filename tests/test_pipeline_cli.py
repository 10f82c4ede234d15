"""``mastcut fetch`` as a user runs it: the installed command, against ``mastcut emulate`` in another process."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys

import pytest
import requests

from mastcut_dask.emulator.tess import sectors_at, tic_position

GOODS_N = (189.228621, 62.238572)

# Every test here runs `mastcut` in subprocesses, and most of them start a Dask cluster.
pytestmark = pytest.mark.slow


def _command(name: str = "mastcut") -> list[str]:
    found = shutil.which(name, path=os.path.dirname(sys.executable))
    return [found] if found else [sys.executable, "-m", "mastcut_dask.cli"]


@pytest.fixture(scope="module")
def served():
    """``mastcut emulate`` in its own process; yields (base URL, resolver URL)."""
    proc = subprocess.Popen([*_command(), "emulate", "--max-cadences", "20"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        base = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        resolver = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        if not base.startswith("http://") or not resolver.startswith("http://"):
            proc.kill()
            pytest.fail(f"mastcut emulate did not announce its URLs: {base!r} {resolver!r} {proc.stderr.read()}")
        yield base, resolver
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _fetch(args: list[str], base: str, resolver: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_command(), "fetch", *args, "--base-url", base, "--resolver-url", resolver,
                           "--workers", "2", "--threads", "2", "--max-rate", "0", "--quiet"],
                          capture_output=True, text=True, timeout=600)


def _cutout_requests(base: str) -> int:
    log = requests.get(base + "/emulator/log", timeout=30).json()
    return sum(1 for e in log if e["path"].endswith("/astrocut"))


def test_fetch_command_against_emulate_process(served, tmp_path):
    base, resolver = served
    position = tic_position(2024)
    targets = tmp_path / "targets.csv"
    targets.write_text("id,name,ra,dec\n"
                       ",TIC 307210830,,\n"
                       f"field_c,,{position[0]},{position[1]}\n"
                       "gap,,165.0,-70.0\n"
                       "bad,,abc,1\n")
    out = tmp_path / "results"
    first = _fetch([str(targets), "--service", "tesscut", "--size", "5", "--out", str(out)], base, resolver)
    assert first.returncode == 0, first.stderr
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    statuses = {(r["target_id"], r["product"]): r["status"] for r in rows}
    expected = {f"s{c.sector:04d}-{c.camera}-{c.ccd}" for c in sectors_at(*position)}
    assert {p for (t, p), s in statuses.items() if t == "field_c" and s == "done"} == expected
    assert statuses[("gap", "")] == "no_coverage"
    assert statuses[("bad", "")] == "invalid"
    assert "done" in first.stdout and str(out) in first.stdout
    for row in rows:
        if row["status"] == "done":
            assert (out / row["fits_path"]).is_file()
            assert (out / "cutouts.zarr" / row["zarr_group"] / "zarr.json").is_file()

    before = _cutout_requests(base)
    again = _fetch([str(targets), "--service", "tesscut", "--size", "5", "--out", str(out)], base, resolver)
    assert again.returncode == 0, again.stderr
    assert _cutout_requests(base) == before, "the second run sent no cutout request"

    n_log = len(requests.get(base + "/emulator/log", timeout=30).json())
    refreshed = _fetch([str(targets), "--service", "tesscut", "--size", "5", "--out", str(out), "--refresh"],
                       base, resolver)
    assert refreshed.returncode == 0, refreshed.stderr
    asked = requests.get(base + "/emulator/log", timeout=30).json()[n_log:]
    assert any(e["path"].endswith("/sector") for e in asked), "--refresh asks for the sectors again"
    assert _cutout_requests(base) == before, "...and still fetches nothing it has"


def test_fetch_exit_status_is_nonzero_when_a_row_failed(served, tmp_path):
    base, resolver = served
    targets = tmp_path / "targets.csv"
    # The service refuses an unknown survey (HTTP 400): that product ends `failed`.
    targets.write_text(f"id,ra,dec,survey\nodd,{GOODS_N[0]},{GOODS_N[1]},no_such_survey\n")
    result = _fetch([str(targets), "--service", "zcut", "--out", str(tmp_path / "z")], base, resolver)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed" in result.stdout


def test_fetch_command_on_a_running_scheduler(served, tmp_path):
    """--scheduler ADDRESS: the run uses an existing cluster and leaves it running."""
    distributed = pytest.importorskip("distributed")
    base, resolver = served
    position = tic_position(99)
    targets = tmp_path / "targets.csv"
    targets.write_text(f"id,ra,dec\nremote,{position[0]},{position[1]}\n")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        result = subprocess.run([*_command(), "fetch", str(targets), "--out", str(tmp_path / "r"),
                                 "--scheduler", cluster.scheduler_address, "--base-url", base,
                                 "--resolver-url", resolver, "--max-rate", "0", "--quiet"],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        assert client.submit(sum, [1, 1], pure=False).result() == 2, "the cluster is still up"
    with open(tmp_path / "r" / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["product"] for r in rows if r["status"] == "done"} == \
        {f"s{c.sector:04d}-{c.camera}-{c.ccd}" for c in sectors_at(*position)}


def test_fetch_with_an_unreachable_scheduler_or_a_file_as_out_says_so_in_one_line(served, tmp_path, loopback):
    base, resolver = served
    targets = tmp_path / "targets.csv"
    targets.write_text("id,ra,dec\na,10,10\n")
    port = loopback.closed_port()  # a port that nothing listens on
    env = dict(os.environ, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s")
    result = subprocess.run([*_command(), "fetch", str(targets), "--out", str(tmp_path / "r"),
                             "--scheduler", f"tcp://127.0.0.1:{port}", "--base-url", base,
                             "--resolver-url", resolver, "--quiet"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and f"127.0.0.1:{port}" in result.stderr

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    result = _fetch([str(targets), "--out", str(a_file)], base, resolver)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "a_file" in result.stderr
