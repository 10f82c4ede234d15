"""The cluster-wide budget seen from the service: the emulator's request log is the witness.

2 worker processes x 8 threads, 100 targets (80 with a named sector, 20 needing sector
discovery), a budget of 4 requests in flight and 10 starts per second. The emulator enforces
the same limits itself (one request more gets a 503), so a single overshoot shows twice.
"""

from __future__ import annotations

import numpy as np
import pytest

import mastcut_dask as mc
from mastcut_dask.emulator import MastEmulator
from mastcut_dask.emulator.tess import sectors_at, tic_position

distributed = pytest.importorskip("distributed")

MAX_CONCURRENCY = 4
MAX_RATE = 10.0


def _targets(n: int, seed: int = 5) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n:
        tic = int(rng.integers(1, 16_000_000))
        pos = tic_position(tic)
        if pos is None or not sectors_at(*pos):
            continue
        row = {"id": f"t{tic}", "ra": pos[0], "dec": pos[1]}
        if len(rows) % 5:
            row["sector"] = sectors_at(*pos)[0].sector   # 4 in 5 skip discovery
        rows.append(row)
    return rows


def _max_overlap(entries) -> int:
    events = sorted([(e["start"], 1) for e in entries] + [(e["end"], -1) for e in entries])
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def _max_starts_in_a_second(entries) -> int:
    starts = np.sort([e["start"] for e in entries])
    # For each start, how many starts fall in [start, start + 1 s).
    return int(max(np.searchsorted(starts, s + 1.0, side="left") - i for i, s in enumerate(starts)))


def _explain_503s(log) -> str:
    """For each 503: what the log says was in flight, and how many starts the second before saw."""
    ok = [e for e in log if e["status"] != 503]
    lines = []
    for e in log:
        if e["status"] == 503:
            t = e["start"]
            in_flight = sum(1 for o in ok if o["start"] <= t < o["end"])
            recent = sum(1 for o in ok if t - 1.0 < o["start"] <= t)
            near_end = min((o["end"] - t for o in ok if o["end"] >= t), default=None)
            lines.append(f"503 at {t:.4f}: {in_flight} in flight, {recent} starts in the second before, "
                         f"next end after {near_end}")
    return "\n".join(lines)


@pytest.mark.slow
def test_budget_holds_cluster_wide(tmp_path):
    targets = _targets(100)
    with MastEmulator(max_cadences=10, latency=0.05, max_concurrency=MAX_CONCURRENCY, max_rate=MAX_RATE) as emu, \
            distributed.LocalCluster(n_workers=2, threads_per_worker=8, processes=True,
                                     dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        table = mc.fetch_cutouts(targets, service="tesscut", size=5, out=str(tmp_path / "run"), base_url=emu.url,
                                 resolver_url=emu.resolver_url, max_concurrency=MAX_CONCURRENCY,
                                 max_rate=MAX_RATE, client=client, progress=False).compute()
        log = emu.request_log()
        stats = emu.stats()
    discovery = [e for e in log if e["path"].endswith("/sector")]
    cutouts = [e for e in log if e["path"].endswith("/astrocut")]
    assert len(discovery) == 20, "discovery requests are part of the budget too"
    assert len(cutouts) >= 100
    assert set(table["status"]) == {"done"}
    assert 503 not in stats["status_counts"], _explain_503s(log)
    assert stats["max_in_flight"] <= MAX_CONCURRENCY
    assert _max_overlap(log) <= MAX_CONCURRENCY
    assert _max_starts_in_a_second(log) <= MAX_RATE
