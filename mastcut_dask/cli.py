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
    p = sub.add_parser("emulate", help="serve the local MAST-compatible emulator until interrupted")
    p.set_defaults(func=_run_emulate)


def _run_emulate(args) -> int:
    raise MastcutError("mastcut emulate is not available in this build")


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
