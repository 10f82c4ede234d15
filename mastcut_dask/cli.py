"""The ``mastcut`` command: ``emulate``, ``sectors``, ``surveys``, ``cutout``, ``fetch``, ``demo``.

Each subcommand has an ``_add_<name>`` function that declares its arguments and a
``_run_<name>`` function that does the work and returns the process exit code.
Nothing in the package imports this module.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import warnings
from collections import Counter
from importlib import resources

import dask
from astropy import units as u

from .emulator import MastEmulator
from .emulator.faults import parse_fault_option
from .exceptions import MastcutError
from .pipeline import fetch_cutouts
from .services import SERVICE_NAMES, clients
from .services.catalog import ZCUT_FORMATS
from .store import STATUSES, open_cutouts


# ---- emulate -------------------------------------------------------------
def _add_emulate(sub) -> None:
    p = sub.add_parser("emulate", help="serve the local MAST-compatible emulator until interrupted",
                       description="Serve TESSCut, ZCut, HAPCut and the SANTA name resolver on "
                                   "loopback. Prints the base URL (use it in place of "
                                   "https://mast.stsci.edu) and the resolver URL, then serves "
                                   "until SIGINT or SIGTERM.")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: chosen by the OS)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds from each request to its reply")
    p.add_argument("--latency-jitter", type=float, default=0.0,
                   help="extra latency, uniform in [0, J] seconds")
    p.add_argument("--bandwidth", type=float, default=None, help="body bytes per second per request")
    p.add_argument("--max-concurrency", type=int, default=10,
                   help="requests in flight before 503 (default %(default)s)")
    p.add_argument("--max-rate", type=float, default=None,
                   help="request starts per second before 503 (default: no limit)")
    p.add_argument("--fault", action="append", default=[], metavar="NAME=P",
                   help="inject a fault with probability P; repeatable. Names: 503, 504, "
                        "truncate, reset, stall, nodata_transient, badzip, zipslip, zipbomb, html200")
    p.add_argument("--stall-seconds", type=float, default=30.0, help="how long a 'stall' fault holds")
    p.add_argument("--retry-after", type=float, default=None,
                   help="send Retry-After with these seconds on every 503")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault and jitter generators")
    p.add_argument("--sky-seed", type=int, default=0, help="seed of the procedural sky")
    p.add_argument("--max-cadences", type=int, default=None,
                   help="cap the cadences per TPF (default: the mission's real counts)")
    p.set_defaults(func=_run_emulate)


def _run_emulate(args) -> int:
    faults = {}
    for text in args.fault:
        try:
            name, prob = parse_fault_option(text)
        except ValueError as err:
            raise MastcutError(f"--fault {text}: {err}") from None
        faults[name] = prob
    try:
        emu = MastEmulator(host=args.host, port=args.port, latency=args.latency,
                           latency_jitter=args.latency_jitter, bandwidth=args.bandwidth,
                           max_concurrency=args.max_concurrency, max_rate=args.max_rate,
                           faults=faults, seed=args.seed, sky_seed=args.sky_seed,
                           max_cadences=args.max_cadences,
                           stall_seconds=args.stall_seconds, retry_after=args.retry_after)
        emu.start()
    except (ValueError, OSError) as err:
        raise MastcutError(str(err)) from None
    done = threading.Event()

    def _on_signal(signum, frame):
        done.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"MAST emulator base URL: {emu.url}", flush=True)
        print(f"resolver URL: {emu.resolver_url}", flush=True)
        while not done.wait(0.5):  # short waits keep the main thread responsive to signals
            pass
    finally:
        emu.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = emu.stats()
    print(f"served {stats['requests']} requests; stopped", flush=True)
    return 0


# ---- sectors / surveys / cutout ----------------------------------------------------------------------
def _add_client_commands(sub) -> None:
    def connection(p) -> None:
        p.add_argument("--base-url", default=None, help="MAST base URL (default: $MASTCUT_MAST_URL or MAST)")
        p.add_argument("--resolver-url", default=None,
                       help="SANTA resolver URL (default: $MASTCUT_RESOLVER_URL or MAST's)")
        p.add_argument("--timeout", type=float, default=None, help="read timeout in seconds (default 600)")
        p.add_argument("--max-retries", type=int, default=None, help="retries per request (default 5)")

    def position(p, *, names: bool) -> None:
        p.add_argument("--ra", type=float, default=None, help="right ascension, ICRS degrees")
        p.add_argument("--dec", type=float, default=None, help="declination, ICRS degrees")
        if names:
            p.add_argument("--name", default=None, help="object name or TIC ID, e.g. 'TIC 307210830' or 'M104'")
            p.add_argument("--moving", action="store_true", help="--name is a moving target (asteroid, comet)")
            p.add_argument("--mt-type", default=None, choices=("majorbody", "smallbody"),
                           help="moving target type (default: majorbody, then smallbody)")
            p.add_argument("--resolver", default=None, choices=("SIMBAD", "NED"), help="name resolver to use")

    p = sub.add_parser("sectors", help="list the TESS sectors covering a position, name or moving target",
                       description="Ask TESSCut which sectors, cameras and CCDs cover a target.")
    position(p, names=True)
    p.add_argument("--radius", default="0", help="search radius: degrees or an angle ('2 arcmin'); default 0")
    connection(p)
    p.set_defaults(func=_run_sectors)

    s = sub.add_parser("surveys", help="list the ZCut deep-field surveys covering a position",
                       description="Ask ZCut which deep-field surveys cover a position.")
    position(s, names=False)
    s.add_argument("--radius", default="0", help="search radius: degrees or an angle ('2 arcmin'); default 0")
    connection(s)
    s.set_defaults(func=_run_surveys)

    c = sub.add_parser("cutout", help="download the cutouts of one target into a folder",
                       description="Download TESSCut, ZCut or HAPCut cutouts of one target into a folder "
                                   "and list the files written.")
    c.add_argument("--service", choices=SERVICE_NAMES, default="tesscut")
    position(c, names=True)
    c.add_argument("--size", default="5",
                   help="pixels ('10'), ny,nx ('10,20') or an angle ('2 arcmin'); default 5")
    c.add_argument("--sector", type=int, default=None, help="TESS sector (default: all)")
    c.add_argument("--survey", default=None, help="ZCut survey (default: all covering the position)")
    c.add_argument("--format", dest="cutout_format", choices=ZCUT_FORMATS, default="fits",
                   help="ZCut file format (default fits)")
    c.add_argument("--out", default=".", help="destination folder (created if missing; default .)")
    c.add_argument("--no-inflate", action="store_true", help="keep the zip archive instead of extracting it")
    connection(c)
    c.set_defaults(func=_run_cutout)


def _client(cls_name: str, args):
    cls = getattr(clients, cls_name)
    return cls(base_url=args.base_url, resolver_url=args.resolver_url, timeout=args.timeout,
               max_retries=args.max_retries)


def _client_coordinates(args):
    if (args.ra is None) != (args.dec is None):
        raise MastcutError("give both --ra and --dec (degrees)")
    return None if args.ra is None else (args.ra, args.dec)


def _client_target(args) -> dict:
    coords = _client_coordinates(args)
    name = getattr(args, "name", None)
    if coords is None and not name:
        raise MastcutError("give a target: --ra and --dec, or --name")
    target: dict = {"coordinates": coords}
    if name is not None:
        target.update(objectname=name, moving_target=args.moving, mt_type=args.mt_type, resolver=args.resolver)
    return target


def _client_radius(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _print_warnings(caught) -> None:
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)


def _run_sectors(args) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = _client("TesscutClass", args).get_sectors(radius=_client_radius(args.radius), **_client_target(args))
    _print_warnings(caught)
    if len(table):
        table.pprint_all()
    return 0


def _run_surveys(args) -> int:
    coords = _client_coordinates(args)
    if coords is None:
        raise MastcutError("give --ra and --dec (degrees)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        surveys = _client("ZcutClass", args).get_surveys(coordinates=coords, radius=_client_radius(args.radius))
    _print_warnings(caught)
    for name in surveys:
        print(name)
    return 0


def _run_cutout(args) -> int:
    size = _cli_size(args.size)
    inflate = not args.no_inflate
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.service == "tesscut":
            table = _client("TesscutClass", args).download_cutouts(
                size=size, sector=args.sector, path=args.out, inflate=inflate, **_client_target(args))
        else:
            coords = _client_coordinates(args)
            if coords is None or args.name:
                raise MastcutError(f"{args.service} takes --ra and --dec only")
            if args.service == "zcut":
                table = _client("ZcutClass", args).download_cutouts(
                    coordinates=coords, size=size, survey=args.survey, cutout_format=args.cutout_format,
                    path=args.out, inflate=inflate)
            else:
                table = _client("HapcutClass", args).download_cutouts(coordinates=coords, size=size, path=args.out,
                                                                      inflate=inflate)
    _print_warnings(caught)
    for path in table["Local Path"]:
        print(path)
    return 0 if len(table) else 1


# ---- fetch / demo ---------------------------------------------------------
def _add_run_options(p, *, with_cluster_address: bool) -> None:
    if with_cluster_address:
        p.add_argument("--scheduler", metavar="ADDRESS",
                       help="use a running Dask scheduler (e.g. tcp://host:8786) instead of a local cluster")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes of the local cluster (default: up to 4, one per core)")
    p.add_argument("--threads", type=int, default=None, metavar="T",
                   help="threads per worker of the local cluster (default 1; network tasks run outside the pool)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_pipeline_commands(sub) -> None:
    p = sub.add_parser(
        "fetch", help="fetch cutouts for a target list into FITS + zarr, with a manifest and resume",
        description="Fetch cutouts for every target of a CSV/Parquet list on a Dask cluster, "
                    "never exceeding the request budget cluster-wide. Writes OUT/fits/..., "
                    "OUT/cutouts.zarr and OUT/manifest.csv; running the same command again "
                    "fetches only what is missing. Exit status: 0 when every row ended done, "
                    "no_coverage or invalid; 1 when any failed.")
    p.add_argument("targets", help="target list: CSV or Parquet (columns name or ra,dec; optional id, "
                                   "size, sector, survey, moving, mt_type)")
    p.add_argument("--service", choices=SERVICE_NAMES, default="tesscut")
    p.add_argument("--size", default="5",
                   help="cutout size: pixels ('10'), ny,nx ('10,20') or an angle ('30 arcsec'); default 5")
    p.add_argument("--out", required=True, help="output folder or fsspec URL (s3://bucket/run)")
    p.add_argument("--sector", type=int, default=None, help="TESS sector for rows that name none")
    p.add_argument("--survey", default=None, help="ZCut survey for rows that name none")
    p.add_argument("--base-url", default=None, help="MAST base URL (default: $MASTCUT_MAST_URL or MAST)")
    p.add_argument("--resolver-url", default=None, help="SANTA resolver URL (default: $MASTCUT_RESOLVER_URL or MAST's)")
    p.add_argument("--max-concurrency", type=int, default=10, help="requests in flight, cluster-wide (default 10)")
    p.add_argument("--max-rate", type=float, default=5.0,
                   help="request starts per second, cluster-wide; 0 = no limit (default 5)")
    p.add_argument("--retry-failed", action="store_true",
                   help="also retry rows recorded as no_coverage or invalid (failed rows always are)")
    p.add_argument("--refresh", action="store_true",
                   help="ask the resolver and the service again for targets whose cutouts are all stored "
                        "(finds sectors observed since the last run)")
    p.add_argument("--lightcurves", action="store_true",
                   help="also store per-target light curves (TESS; aperture photometry stitched across sectors)")
    _add_run_options(p, with_cluster_address=True)
    p.set_defaults(func=_run_fetch)

    d = sub.add_parser(
        "demo", help="offline demo: emulator + local Dask cluster + a bundled 60-target list",
        description="Start the MAST emulator and a local Dask cluster, fetch TESS cutouts and "
                    "light curves for the bundled demo target list (TIC IDs, names, coordinates, "
                    "a moving target, an uncovered position, a malformed row) and print a summary.")
    d.add_argument("--out", default="demo-results", help="output folder (default %(default)s)")
    d.add_argument("--max-cadences", type=int, default=400,
                   help="cadences per TPF served by the emulator (default %(default)s; keeps the demo quick)")
    _add_run_options(d, with_cluster_address=False)
    d.set_defaults(func=_run_demo)


def _cli_size(text: str):
    """``--size`` of every command: '10' → 10, '10,20' or '10x20' → (10, 20), '30 arcsec' → a Quantity."""
    text = text.strip()
    parts = [t for t in text.replace("x", ",").split(",") if t.strip()]
    try:
        values = [float(t) for t in parts]
    except ValueError:
        try:
            return u.Quantity(text)
        except (TypeError, ValueError):
            raise MastcutError(f"--size {text!r}: give pixels ('10'), ny,nx ('10,20') or an angle ('30 arcsec')") from None
    values = [int(v) if v.is_integer() else v for v in values]
    if len(values) == 1:
        return values[0]
    return tuple(values)


def _summary(table, elapsed: float | None, out: str) -> str:
    counts = Counter(table["status"])
    parts = ", ".join(f"{counts.get(k, 0)} {k}" for k in STATUSES)
    took = f" in {elapsed:.1f} s" if elapsed is not None else ""
    lines = [f"{len(table)} rows{took}: {parts}", f"results: {out}"]
    for row in table:
        if row["status"] == "failed":
            lines.append(f"  failed {row['target_id']} {row['product']}: {row['error']}")
    return "\n".join(lines)


def _exit_status(table) -> int:
    return 1 if any(status == "failed" for status in table["status"]) else 0


def _quiet_cluster_logs() -> None:
    """Unless -v was given, keep Dask's own INFO chatter (cluster start/stop) off the terminal."""
    if logging.getLogger().getEffectiveLevel() < logging.WARNING:
        return
    # Worker processes inherit dask's config; this process's loggers are set directly.
    dask.config.set({"distributed.logging.distributed": "warning"})
    for name in ("distributed", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _run_fetch(args) -> int:
    _quiet_cluster_logs()

    if args.scheduler and (args.workers or args.threads):
        raise MastcutError("--scheduler and --workers/--threads exclude each other")
    run = fetch_cutouts(
        args.targets, service=args.service, size=_cli_size(args.size), sector=args.sector,
        survey=args.survey, out=args.out, base_url=args.base_url, resolver_url=args.resolver_url,
        max_concurrency=args.max_concurrency, max_rate=args.max_rate, client=args.scheduler or None,
        lightcurve=True if args.lightcurves else None, retry_failed=args.retry_failed, refresh=args.refresh,
        progress=not args.quiet, n_workers=args.workers, threads_per_worker=args.threads)
    table = run.compute()
    print(_summary(table, run.elapsed, run.settings.out))
    return _exit_status(table)


def _run_demo(args) -> int:
    _quiet_cluster_logs()

    targets = str(resources.files("mastcut_dask").joinpath("data/demo_targets.csv"))
    with MastEmulator(max_cadences=args.max_cadences) as emu:
        print(f"MAST emulator at {emu.url}", flush=True)
        run = fetch_cutouts(targets, service="tesscut", size=5, out=args.out, base_url=emu.url,
                               resolver_url=emu.resolver_url, max_concurrency=10, max_rate=5.0,
                               # Sum of the whole 5x5 stamp: every target gets a light curve
                               # (a threshold aperture finds no pixels around faint stars).
                               lightcurve="all", progress=not args.quiet, n_workers=args.workers,
                               threads_per_worker=args.threads)
        table = run.compute()
        stats = emu.stats()
    print(_summary(table, run.elapsed, run.settings.out))
    print(f"emulator: {stats['requests']} requests, at most {stats['max_in_flight']} in flight, "
          f"{stats['status_counts'].get(503, 0)} answered 503")
    tree = open_cutouts(run.settings.out)
    n_lc = sum(1 for node in tree.subtree if node.name == "lightcurve")
    print(f"zarr store: {len(tree.children)} targets, {n_lc} stitched light curves; "
          f"open it with mastcut_dask.open_cutouts({run.settings.out!r})")
    return _exit_status(table)


# ---- entry point ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``mastcut`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="mastcut", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_emulate(sub)
    _add_client_commands(sub)
    _add_pipeline_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``mastcut`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except MastcutError as err:
        # A user error or a service failure: one clear line, never a traceback.
        print(f"mastcut {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
