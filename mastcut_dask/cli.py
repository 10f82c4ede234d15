"""The ``mastcut`` command: ``emulate``, ``sectors``, ``surveys``, ``cutout``, ``fetch``, ``demo``.

Each subcommand has an ``_add_<name>`` function that declares its arguments and a
``_run_<name>`` function that does the work and returns the process exit code.
Nothing in the package imports this module.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .exceptions import MastcutError


# ---- emulate (owner: emulator) -------------------------------------------------------------
def _add_emulate(sub) -> None:
    p = sub.add_parser("emulate", help="serve the local MAST-compatible emulator until interrupted",
                       description="Serve TESSCut, ZCut, HAPCut and the SANTA name resolver on "
                                   "loopback. Prints the base URL (use it in place of "
                                   "https://mast.stsci.edu) and the resolver URL, then serves "
                                   "until SIGINT or SIGTERM.")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: chosen by the OS)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
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
    p.add_argument("--seed", type=int, default=0, help="seed of the sky and the faults")
    p.add_argument("--max-cadences", type=int, default=None,
                   help="cap the cadences per TPF (default: the mission's real counts)")
    p.set_defaults(func=_run_emulate)


def _run_emulate(args) -> int:
    import signal
    import threading

    from .emulator import MastEmulator
    from .emulator.faults import parse_fault_option

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
                           faults=faults, seed=args.seed, max_cadences=args.max_cadences,
                           stall_seconds=args.stall_seconds)
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


# ---- sectors / surveys / cutout (owner: clients) ---------------------------------------------
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
    c.add_argument("--service", choices=("tesscut", "zcut", "hapcut"), default="tesscut")
    position(c, names=True)
    c.add_argument("--size", default="5",
                   help="pixels ('10'), ny,nx ('10,20') or an angle ('2 arcmin'); default 5")
    c.add_argument("--sector", type=int, default=None, help="TESS sector (default: all)")
    c.add_argument("--survey", default=None, help="ZCut survey (default: all covering the position)")
    c.add_argument("--format", dest="cutout_format", choices=("fits", "jpg", "png"), default="fits",
                   help="ZCut file format (default fits)")
    c.add_argument("--out", default=".", help="destination folder (created if missing; default .)")
    c.add_argument("--no-inflate", action="store_true", help="keep the zip archive instead of extracting it")
    connection(c)
    c.set_defaults(func=_run_cutout)


def _client(cls_name: str, args):
    from . import clients

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


def _client_size(text: str):
    """'10' → 10; '10,20' → (10, 20); '2 arcmin' → a Quantity."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = [float(t) for t in parts]
    except ValueError:
        from astropy import units as u

        try:
            return u.Quantity(text)
        except (TypeError, ValueError):
            raise MastcutError(f"--size {text!r}: give pixels ('10'), ny,nx ('10,20') or an angle ('2 arcmin')") \
                from None
    values = [int(v) if v.is_integer() else v for v in values]
    return values[0] if len(values) == 1 else tuple(values)


def _client_radius(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _print_warnings(caught) -> None:
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)


def _run_sectors(args) -> int:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = _client("TesscutClass", args).get_sectors(radius=_client_radius(args.radius), **_client_target(args))
    _print_warnings(caught)
    if len(table):
        table.pprint_all()
    return 0


def _run_surveys(args) -> int:
    import warnings

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
    import warnings

    size = _client_size(args.size)
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


# ---- fetch / demo (owner: pipeline) ---------------------------------------------------------
def _add_pipeline_commands(sub) -> None:
    pass


# ---- entry point ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
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
