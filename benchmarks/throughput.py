"""Throughput of the distributed pipeline against the emulator: makespan vs the ideal, 503s, in-flight.

The emulator allows 10 requests in flight and adds a fixed latency to every request; the
pipeline runs with the same ``max_concurrency`` and no rate limit. With N targets of one
known sector each (no name resolution, no discovery) the best possible makespan is
``N * latency / max_concurrency``. Printed per configuration:

* makespan of ``fetch_cutouts(...).compute()`` and its ratio to the ideal;
* the span of the service's own log (first request start to last request end);
* the number of 503 answers and the emulator's ``max_in_flight``;
* with ``--rss``: peak RSS of each worker process after a larger run.

Clusters are `mastcut_dask.local_cluster` (the one ``mastcut fetch --workers N`` starts: workers
preloaded with the decoding stack, Dask's profiler off), and each first fetches a few other
cutouts, untimed (`_warm_workers`: first connections, caches). One more 2-worker run shows the
makespan of the first run on freshly started workers.

Usage::

    python benchmarks/throughput.py                       # 400 targets; 1, 2, 4 workers; max_rate=5; RSS for 2,000
    python benchmarks/throughput.py --targets 100 --workers 2 --no-rss
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np


def _targets(n: int, seed: int = 1) -> list[dict]:
    """``n`` positions the emulator's TESS sky covers, each with its first sector named."""
    from mastcut_dask.emulator.tess import sectors_at, tic_position

    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    while len(rows) < n:
        tic = int(rng.integers(1, 16_000_000))
        pos = tic_position(tic)
        if pos is None:
            continue
        slots = sectors_at(*pos)
        if not slots:
            continue
        rows.append({"id": f"bench_{tic}", "ra": pos[0], "dec": pos[1], "sector": slots[0].sector})
    return rows


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _log_in_flight(entries: list[dict]) -> int:
    events = sorted([(e["start"], 1) for e in entries] + [(e["end"], -1) for e in entries])
    cur = peak = 0
    for _, step in events:
        cur += step
        peak = max(peak, cur)
    return peak


def _serve_emulator(conn, kwargs: dict) -> None:
    """Child process: run an emulator and answer ``stats``/``log``/``reset``/``stop`` over a pipe."""
    from mastcut_dask.emulator import MastEmulator

    with MastEmulator(**kwargs) as emu:
        try:
            _warm(emu)
        except Exception as err:  # noqa: BLE001 - reported to the parent, which would wait for ever
            conn.send(RuntimeError(f"emulator warm-up failed: {err!r}"))
            return
        conn.send((emu.url, emu.resolver_url))
        while True:
            command = conn.recv()
            if command == "stats":
                conn.send(emu.stats())
            elif command == "log":
                conn.send(emu.request_log())
            elif command == "reset":
                emu.reset_stats()
                conn.send(None)
            else:
                conn.send(None)
                return


def _warm(emu) -> None:
    """One cutout request before any timing: the emulator's first TESS request builds its sky
    (star catalogue, detector geometry; ~1 s, and ten concurrent first requests each build it),
    which is the emulator starting up, not the pipeline's cost."""
    import requests

    from mastcut_dask.emulator.tess import sectors_at, tic_position
    from mastcut_dask.services.catalog import endpoint_url

    ra, dec = tic_position(307210830)
    sector = sectors_at(ra, dec)[0].sector
    reply = requests.get(endpoint_url(emu.url, "tesscut", "astrocut"),
                         params={"ra": ra, "dec": dec, "x": 5, "y": 5, "sector": sector}, timeout=60)
    reply.raise_for_status()
    emu.reset_stats()


class RemoteEmulator:
    """The emulator in its own process, as the real service would be: its CPU and GIL are not
    shared with the Dask scheduler and the run's driver (both in this process)."""

    def __init__(self, **kwargs):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_emulator, args=(child, kwargs), daemon=True)
        self._proc.start()
        got = self._conn.recv()
        if isinstance(got, Exception):
            raise got
        self.url, self.resolver_url = got

    def _ask(self, command: str):
        self._conn.send(command)
        return self._conn.recv()

    def stats(self) -> dict:
        return self._ask("stats")

    def request_log(self) -> list[dict]:
        return self._ask("log")

    def reset_stats(self) -> None:
        self._ask("reset")

    def __enter__(self) -> "RemoteEmulator":
        return self

    def __exit__(self, *exc) -> None:
        self._ask("stop")
        self._proc.join(timeout=10)


def _warm_workers(client, emu, workers: int, out: str) -> None:
    """A few cutouts through the whole pipeline on every worker before any timing: first
    connections, first-call caches (the preload has already imported the decoding stack).
    The targets are not the timed ones, and the emulator's counters and log are cleared
    afterwards."""
    import mastcut_dask as mc

    extra = _targets(4 * workers, seed=3)
    table = mc.fetch_cutouts(extra, service="tesscut", size=5, out=out, base_url=emu.url,
                             resolver_url=emu.resolver_url, max_rate=0, client=client, progress=False).compute()
    assert set(table["status"]) == {"done"}, table
    emu.reset_stats()


def run_once(emu, targets: list[dict], *, workers: int, threads: int, max_concurrency: int,
             max_rate: float, latency: float, warm: bool = True, profile: bool = False) -> dict:
    """One pipeline run on a fresh LocalCluster (warmed first unless ``warm=False``); returns the figures."""
    from distributed import Client

    import mastcut_dask as mc

    out = tempfile.mkdtemp(prefix="mastcut-bench-")
    emu.reset_stats()
    try:
        # The cluster `mastcut fetch --workers N` starts (preloaded workers, no Dask profiler).
        with mc.local_cluster(workers, threads, profile=profile) as cluster, Client(cluster) as client:
            if warm:
                _warm_workers(client, emu, workers, os.path.join(out, "warm-up"))
            run = mc.fetch_cutouts(targets, service="tesscut", size=5, out=os.path.join(out, "run"),
                                   base_url=emu.url, resolver_url=emu.resolver_url,
                                   max_concurrency=max_concurrency, max_rate=max_rate, client=client,
                                   progress=False)
            cpu_workers0 = client.run(_cpu_s)
            cpu_client0 = _cpu_s()
            t0 = time.perf_counter()
            table = run.compute()
            makespan = time.perf_counter() - t0
            cpu_client = _cpu_s() - cpu_client0
            cpu_workers = sum(client.run(_cpu_s).values()) - sum(cpu_workers0.values())
            rss = client.run(_peak_rss_mb)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    stats = emu.stats()
    entries = emu.request_log()
    n = len(targets)
    ideal = n * latency / max_concurrency
    if max_rate:
        ideal = max(ideal, (n - 1) / max_rate)
    statuses = {str(k): int(v) for k, v in stats["status_counts"].items()}
    durations = [e["end"] - e["start"] for e in entries]
    # How long a freed place stays empty: the k-th start after the first max_concurrency took
    # the place of the k-th request to end (grace after the last byte + scheduler round trip).
    starts, ends = np.sort([e["start"] for e in entries]), np.sort([e["end"] for e in entries])
    gaps = starts[max_concurrency:] - ends[:len(starts) - max_concurrency]
    return {
        "workers": workers, "threads": threads, "targets": n, "max_rate": max_rate, "warm": warm,
        "profile": profile,
        "makespan": makespan, "ideal": ideal, "ratio": makespan / ideal if ideal else math.nan,
        "service_span": (max(e["end"] for e in entries) - min(e["start"] for e in entries)) if entries else 0.0,
        "mean_request_s": float(np.mean(durations)) if durations else 0.0,
        # Share of the budget in use while the service was busy: sum of request times over
        # (max_concurrency x service span). 1.0 = every lease always held by a request.
        "utilisation": (float(np.sum(durations)) / (max_concurrency * (max(e["end"] for e in entries)
                                                                       - min(e["start"] for e in entries))))
        if entries else 0.0,
        "requests": stats["requests"], "n503": statuses.get("503", 0),
        "request_p50_ms": 1000 * float(np.median(durations)) if durations else 0.0,
        "gap_p50_ms": 1000 * float(np.median(gaps)) if len(gaps) else 0.0,
        "gap_p90_ms": 1000 * float(np.percentile(gaps, 90)) if len(gaps) else 0.0,
        "max_in_flight": stats["max_in_flight"], "log_in_flight": _log_in_flight(entries),
        "done": int(sum(table["status"] == "done")), "rows": len(table),
        "worker_rss_mb": sorted(rss.values()),
        "cpu_client": cpu_client, "cpu_workers": cpu_workers,
    }


def _print(r: dict) -> None:
    rate = "none" if not r["max_rate"] else f"{r['max_rate']:g}/s"
    print(f"workers={r['workers']} threads={r['threads']} targets={r['targets']} max_rate={rate}"
          f"{'' if r['warm'] else ' (first run on fresh workers)'}"
          f"{' (Dask profiler on)' if r['profile'] else ''}: "
          f"makespan {r['makespan']:.2f} s vs ideal {r['ideal']:.2f} s ({r['ratio']:.3f} x), "
          f"service span {r['service_span']:.2f} s, mean request {r['mean_request_s']:.3f} s "
          f"(median {r['request_p50_ms']:.0f} ms), place empty between requests median {r['gap_p50_ms']:.0f} ms "
          f"(p90 {r['gap_p90_ms']:.0f} ms), "
          f"budget utilisation {r['utilisation']:.0%}, "
          f"{r['requests']} requests, 503s {r['n503']}, "
          f"max_in_flight {r['max_in_flight']}, done {r['done']}/{r['rows']}, "
          f"worker peak RSS {', '.join(f'{v:.0f}' for v in r['worker_rss_mb'])} MB; CPU s: client process "
          f"(driver + scheduler) {r['cpu_client']:.1f}, workers {r['cpu_workers']:.1f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--max-concurrency", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per worker (network tasks run outside the pool, so 1 is enough)")
    parser.add_argument("--max-cadences", type=int, default=100,
                        help="cadences per TPF served by the emulator (keeps the emulator's CPU share small)")
    parser.add_argument("--rate-targets", type=int, default=100,
                        help="targets for the max_rate=5 run (0 skips it)")
    parser.add_argument("--rss-targets", type=int, default=2000, help="targets for the RSS run")
    parser.add_argument("--rss-latency", type=float, default=0.05, help="latency of the RSS run")
    parser.add_argument("--no-rss", action="store_true", help="skip the RSS run")
    parser.add_argument("--dask-profiler", action="store_true",
                        help="keep Dask's statistical profiler on in the workers of the 1/2/4-worker runs "
                             "(mc.local_cluster turns it off)")
    parser.add_argument("--no-cold", action="store_true",
                        help="skip the 2-worker run on fresh, unwarmed worker processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("distributed", "mastcut_dask"):
        logging.getLogger(name).setLevel(logging.WARNING)

    print(f"machine: {os.cpu_count()} cores; emulator latency {args.latency} s, "
          f"max_concurrency {args.max_concurrency}, {args.max_cadences} cadences per TPF", flush=True)
    targets = _targets(max(args.targets, args.rate_targets))
    with RemoteEmulator(latency=args.latency, max_concurrency=args.max_concurrency,
                      max_cadences=args.max_cadences) as emu:
        for workers in args.workers:
            _print(run_once(emu, targets[:args.targets], workers=workers, threads=args.threads,
                            max_concurrency=args.max_concurrency, max_rate=0.0, latency=args.latency,
                            profile=args.dask_profiler))
        if args.rate_targets:
            _print(run_once(emu, targets[:args.rate_targets], workers=2, threads=args.threads,
                            max_concurrency=args.max_concurrency, max_rate=5.0, latency=args.latency))
        if not args.no_cold:
            _print(run_once(emu, targets[:args.targets], workers=2, threads=args.threads,
                            max_concurrency=args.max_concurrency, max_rate=0.0, latency=args.latency,
                            warm=False))
    if not args.no_rss:
        big = _targets(args.rss_targets, seed=2)
        with RemoteEmulator(latency=args.rss_latency, max_concurrency=args.max_concurrency,
                          max_cadences=args.max_cadences) as emu:
            r = run_once(emu, big, workers=2, threads=args.threads, max_concurrency=args.max_concurrency,
                         max_rate=0.0, latency=args.rss_latency)
            _print(r)
            print(f"peak worker RSS for {len(big)} targets: {max(r['worker_rss_mb']):.0f} MB (goal < 500 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
