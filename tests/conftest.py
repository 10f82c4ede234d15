"""Shared fixtures: the emulator as a real HTTP server, scripted loopback servers, and the
remote_data switch.

``emulator`` is one MAST emulator for the whole session. ``loopback`` starts small HTTP servers
on 127.0.0.1 that answer from a script of replies, for the replies the emulator never sends
(see tests/loopback.py).

Tests that start a Dask cluster or a subprocess, or take more than a few seconds, are marked
``slow``. They run by default; for the fast subset while developing, deselect them::

    python -m pytest -q -m "not slow"
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    parser.addoption("--remote-data", action="store_true", default=False,
                     help="also run tests that need the live MAST services")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--remote-data"):
        return
    skip = pytest.mark.skip(reason="needs the live MAST services; run with --remote-data")
    for item in items:
        if "remote_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def emulator():
    """One emulator for the whole session, cadences capped so files stay small."""
    from mastcut_dask.emulator import MastEmulator

    with MastEmulator(max_cadences=200) as emu:
        yield emu


@pytest.fixture
def loopback():
    """Start scripted HTTP servers on 127.0.0.1: ``server = loopback([loopback.Reply(...)])``.

    Every server started is closed after the test; an exception raised by a callable script
    (which the client only sees as a 500) fails the test here.
    """
    from loopback import Loopback   # tests/loopback.py: pytest puts tests/ on sys.path for conftest

    servers = Loopback()
    yield servers
    errors = servers.close_all()
    if errors:
        raise AssertionError(f"a loopback script raised: {errors!r}") from errors[0]
