"""Shared fixtures: the emulator as a real HTTP server, and the remote_data switch."""

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
