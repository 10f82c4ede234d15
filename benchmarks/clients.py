"""The synchronous clients against astroquery 0.4.11, on the emulator.

Three ways of asking for the same N TESS cutouts (sector 33 at the seed document's position,
5x5, capped cadences) from an emulator with MAST's limit of 10 requests in flight:

* astroquery 0.4.11 in a plain loop (one request at a time, as its users do);
* astroquery 0.4.11 from 30 threads (what an impatient user tries: meets 503s, no retries);
* mastcut_dask's ``TesscutClass`` from 30 threads (throttled to 10 in flight, retried);

then mastcut_dask again under a fault storm (503, 504, truncated bodies, resets, corrupt zips,
HTML pages). Prints wall time, outcomes and the emulator's own counters.

Usage::

    python benchmarks/clients.py [--n 60] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

from astropy.coordinates import SkyCoord

from mastcut_dask.services.clients import TesscutClass
from mastcut_dask.emulator import MastEmulator

REQUEST = dict(coordinates=SkyCoord(107.18696, -70.50919, unit="deg"), sector=33, size=5)
STORM = {"503": 0.15, "504": 0.05, "truncate": 0.05, "reset": 0.05, "badzip": 0.05, "html200": 0.05}


def _astroquery_tesscut(base_url: str):
    # astroquery reads its service URL once, at import: point it at the emulator.
    from astroquery.mast.services import ServiceAPI

    ServiceAPI.SERVICE_URL = base_url
    from astroquery.mast.cutouts import TesscutClass as AstroqueryTesscut

    return AstroqueryTesscut()


def _outcome(call) -> str:
    try:
        return "ok" if call() else "empty"
    except Exception as err:  # noqa: BLE001 - a benchmark tallies every kind of failure
        return type(err).__name__


def _report(label: str, n: int, seconds: float, outcomes: list[str], stats: dict) -> None:
    tally = {k: outcomes.count(k) for k in sorted(set(outcomes))}
    print(f"{label:<38} {n} cutouts in {seconds:6.2f} s  outcomes {tally}  "
          f"server: {stats['requests']} requests, max_in_flight {stats['max_in_flight']}, "
          f"statuses {dict(sorted(stats['status_counts'].items()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="cutouts per case")
    parser.add_argument("--latency", type=float, default=0.1, help="emulator latency per request (s)")
    args = parser.parse_args()
    n = args.n
    warnings.simplefilter("ignore")

    with MastEmulator(max_cadences=200, latency=args.latency) as emu:
        theirs = _astroquery_tesscut(emu.url)
        ours = TesscutClass(base_url=emu.url)
        cases = [
            ("astroquery 0.4.11, plain loop", 1, lambda: theirs.get_cutouts(**REQUEST)),
            ("astroquery 0.4.11, 30 threads", 30, lambda: theirs.get_cutouts(**REQUEST)),
            ("mastcut_dask, 30 threads", 30, lambda: ours.get_cutouts(**REQUEST)),
        ]
        for label, threads, call in cases:
            emu.reset_stats()
            start = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                outcomes = list(pool.map(lambda _: _outcome(call), range(n)))
            _report(label, n, time.perf_counter() - start, outcomes, emu.stats())

    with MastEmulator(max_cadences=200, latency=args.latency / 2, faults=STORM, seed=11) as emu:
        ours = TesscutClass(base_url=emu.url, backoff_base=0.05, backoff_cap=1.0)
        start = time.perf_counter()
        with ThreadPoolExecutor(30) as pool:
            outcomes = list(pool.map(lambda _: _outcome(lambda: ours.get_cutouts(**REQUEST)), range(n)))
        _report("mastcut_dask, 30 threads, fault storm", n, time.perf_counter() - start, outcomes, emu.stats())
        print(f"{'':<38} faults injected: {emu.stats()['fault_counts']}")


if __name__ == "__main__":
    main()
