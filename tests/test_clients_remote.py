"""The same calls against the live MAST services (run with ``--remote-data``; skipped offline)."""

from __future__ import annotations

import pytest
from astropy.coordinates import SkyCoord

from mastcut_dask.services.clients import HapcutClass, TesscutClass, ZcutClass
from mastcut_dask.options import DEFAULT_BASE_URL, DEFAULT_RESOLVER_URL

pytestmark = pytest.mark.remote_data

LIVE = dict(base_url=DEFAULT_BASE_URL, resolver_url=DEFAULT_RESOLVER_URL, timeout=120)


def test_live_sectors_by_position_and_name():
    tess = TesscutClass(**LIVE)
    table = tess.get_sectors(coordinates=SkyCoord(135.1408, -5.1915, unit="deg"))
    assert "tess-s0008-1-1" in list(table["sectorName"])
    assert "tess-s0010-1-4" in list(tess.get_sectors(objectname="TIC 32449963")["sectorName"])
    moving = tess.get_sectors(objectname="Eleonora", moving_target=True)
    assert moving["sectorName"][0] == "tess-s0006-1-1"


def test_live_tess_cutout():
    hdus = TesscutClass(**LIVE).get_cutouts(coordinates=SkyCoord(107.18696, -70.50919, unit="deg"), sector=33)
    assert [h.name for h in hdus[0]] == ["PRIMARY", "PIXELS", "APERTURE"]
    assert hdus[0]["APERTURE"].data.shape == (5, 5)


def test_live_zcut_and_hapcut():
    assert "candels_gn_30mas" in ZcutClass(**LIVE).get_surveys(coordinates=SkyCoord(189.49206, 62.20615, unit="deg"))
    hdus = HapcutClass(**LIVE).get_cutouts(coordinates=SkyCoord(351.347812, 28.497808, unit="deg"), size=5)
    assert hdus and [h.name for h in hdus[0]][1:] == ["SCI", "WHT"]
