"""How much the emulator's server costs per request, and whether it stands 200 connections.

Prints, for TESS cutouts of 5x5, 10x10 and 30x30 pixels at about 3,500 cadences (sectors
27-55, one TPF per request), for ZCut (FITS and JPG) and for HAPCut, the CPU time the server's
handler thread spent on each request (``cpu_s`` in the request log: parsing, building the
product, zipping, sending), the wall time seen by the client and the reply size. Then fires 200
simultaneous connections at an emulator with the default limit of 10 and prints how they were
answered.

Run: ``python benchmarks/emulator.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections import Counter

import numpy as np
import requests

from mastcut_dask.emulator import MastEmulator
from mastcut_dask.emulator import tess


def _targets(n: int, era: tuple[int, int], seed: int = 1) -> list[tuple[float, float, int]]:
    """Random positions with a sector in ``era`` (inclusive), and that sector."""
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < n:
        ra = float(rng.uniform(0, 360))
        dec = float(np.degrees(np.arcsin(rng.uniform(-1, 1))))
        for ccd in tess.sectors_at(ra, dec, 0.0):
            if era[0] <= ccd.sector <= era[1]:
                found.append((ra, dec, ccd.sector))
                break
    return found


def _measure(emu: MastEmulator, label: str, requests_: list[tuple[str, dict]]) -> None:
    emu.reset_stats()
    walls, sizes = [], []
    with requests.Session() as s:
        for path, params in requests_:
            t0 = time.perf_counter()
            r = s.get(emu.url + path, params=params, timeout=300)
            walls.append(time.perf_counter() - t0)
            if r.status_code != 200 or r.headers.get("Content-Type") != "application/zip":
                raise SystemExit(f"{label}: unexpected reply {r.status_code} {r.text[:200]}")
            sizes.append(len(r.content))
    emu.stop()  # makes the log final
    cpu = [e["cpu_s"] * 1e3 for e in emu.request_log()]
    emu.start()
    print(f"{label:<34} n={len(cpu):<3} server CPU ms: median {statistics.median(cpu):7.1f}"
          f"  p90 {np.percentile(cpu, 90):7.1f}   client wall ms: median "
          f"{statistics.median(walls) * 1e3:7.1f}   reply {statistics.median(sizes) / 1e6:6.2f} MB")


def _two_hundred() -> None:
    with MastEmulator(latency=0.5, max_concurrency=10) as emu:
        barrier = threading.Barrier(200)
        codes: list[int | str] = []
        lock = threading.Lock()

        def one():
            with requests.Session() as s:
                barrier.wait()
                try:
                    code: int | str = s.get(emu.resolver_url, params={"name": "M1"},
                                            timeout=60).status_code
                except requests.RequestException as err:
                    code = type(err).__name__
            with lock:
                codes.append(code)

        threads = [threading.Thread(target=one) for _ in range(200)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        after = requests.get(emu.resolver_url, params={"name": "M1"}, timeout=10).status_code
        stats = emu.stats()
    print(f"200 simultaneous connections (limit 10, latency 0.5 s): answers {dict(Counter(codes))}, "
          f"max_in_flight {stats['max_in_flight']}, all answered in {wall:.2f} s, "
          f"next request -> {after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="requests per case")
    args = parser.parse_args()
    n = args.repeat

    targets = _targets(n, (27, 55))
    with MastEmulator(max_concurrency=10) as emu:
        # warm-up: imports, WCS caches
        requests.get(emu.url + "/tesscut/api/v0.1/astrocut", timeout=300,
                     params={"ra": targets[0][0], "dec": targets[0][1], "x": 5, "y": 5,
                             "sector": targets[0][2]})
        for side in (5, 10, 30):
            _measure(emu, f"TESS {side}x{side}, ~3,500 cadences", [
                ("/tesscut/api/v0.1/astrocut",
                 {"ra": ra, "dec": dec, "x": side, "y": side, "units": "px", "sector": sector})
                for ra, dec, sector in targets])
        rng = np.random.default_rng(2)
        offsets = rng.uniform(-0.01, 0.01, size=(n, 2))
        _measure(emu, "ZCut FITS 100x100, one survey", [
            ("/zcut/api/v0.1/astrocut", {"ra": 189.49206 + dx, "dec": 62.20615 + dy, "x": 100,
                                         "y": 100, "units": "px", "survey": "candels_gn_30mas"})
            for dx, dy in offsets])
        _measure(emu, "ZCut JPG 100x100, one survey", [
            ("/zcut/api/v0.1/astrocut", {"ra": 189.49206 + dx, "dec": 62.20615 + dy, "x": 100,
                                         "y": 100, "units": "px", "survey": "candels_gn_30mas",
                                         "format": "jpg"})
            for dx, dy in offsets])
        _measure(emu, "HAPCut 100x100", [
            ("/hapcut/api/v0.1/astrocut", {"ra": 351.347812 + dx / 10, "dec": 28.497808 + dy / 10,
                                           "x": 100, "y": 100, "units": "px"})
            for dx, dy in offsets])
    _two_hundred()


if __name__ == "__main__":
    main()
