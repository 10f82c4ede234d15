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
    pass


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
