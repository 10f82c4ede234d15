"""Our clients and astroquery 0.4.11 pointed at the same emulator give the same results.

astroquery reads its server once, at import, into ``ServiceAPI.SERVICE_URL``; fresh instances
built after redirecting that class attribute talk to the emulator. Its SANTA URL is
hard-coded in ``astroquery.mast.utils``; its ``_simple_request`` is redirected the same way.
Both are third-party seams; nothing of mastcut_dask is patched.
"""

from __future__ import annotations

import os
import warnings
import zipfile

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astroquery.exceptions import InvalidQueryError as AqInvalidQueryError
from astroquery.exceptions import NoResultsWarning as AqNoResultsWarning
from astroquery.mast import utils as aq_utils
from astroquery.mast.services import ServiceAPI

from mastcut_dask.services.clients import HapcutClass, TesscutClass, ZcutClass
from mastcut_dask.exceptions import InvalidQueryError, NoResultsWarning

TESS_COORD = SkyCoord(107.18696, -70.50919, unit="deg")
SECTOR_COORD = SkyCoord(135.1408, -5.1915, unit="deg")
UNCOVERED = SkyCoord(180.0, 0.0, unit="deg")
ZCUT_COORD = SkyCoord(189.49206, 62.20615, unit="deg")
HAP_COORD = SkyCoord(351.347812, 28.497808, unit="deg")
HAP_EMPTY = SkyCoord(102.7, 70.50, unit="deg")


@pytest.fixture(scope="module")
def theirs(emulator):
    from astroquery.mast.cutouts import HapcutClass as AqHapcut
    from astroquery.mast.cutouts import TesscutClass as AqTesscut
    from astroquery.mast.cutouts import ZcutClass as AqZcut

    mp = pytest.MonkeyPatch()
    mp.setattr(ServiceAPI, "SERVICE_URL", emulator.url)
    original = aq_utils._simple_request
    mp.setattr(aq_utils, "_simple_request",
               lambda url, params=None: original(emulator.resolver_url if "mastresolver" in url else url, params))
    yield {"tesscut": AqTesscut(), "zcut": AqZcut(), "hapcut": AqHapcut()}
    mp.undo()


@pytest.fixture(scope="module")
def ours(emulator):
    kw = dict(base_url=emulator.url, resolver_url=emulator.resolver_url, backoff_base=0.01)
    return {"tesscut": TesscutClass(**kw), "zcut": ZcutClass(**kw), "hapcut": HapcutClass(**kw)}


def same_table(a, b):
    assert a.colnames == b.colnames
    assert [a[c].dtype for c in a.colnames] == [b[c].dtype for c in b.colnames]
    assert len(a) == len(b)
    for c in a.colnames:
        assert list(a[c]) == list(b[c])


def same_hdulists(mine, theirs):
    assert [h.filename for h in mine] == [h.filename for h in theirs]
    assert all(isinstance(h.filename, str) for h in mine)
    for a, b in zip(mine, theirs):
        assert [(h.name, type(h).__name__) for h in a] == [(h.name, type(h).__name__) for h in b]
        for ha, hb in zip(a, b):
            assert list(ha.header.items()) == list(hb.header.items())
            if ha.data is None:
                assert hb.data is None
            elif hasattr(ha.data, "columns"):
                assert ha.data.columns.names == hb.data.columns.names
                for name in ha.data.columns.names:
                    np.testing.assert_array_equal(ha.data[name], hb.data[name])
            else:
                np.testing.assert_array_equal(ha.data, hb.data)


def catch(fn, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(**kw)
    return result, [(type(w.message).__name__, str(w.message)) for w in caught
                    if issubclass(w.category, (NoResultsWarning, AqNoResultsWarning))]


@pytest.mark.parametrize("kw", [dict(coordinates=SECTOR_COORD), dict(coordinates=SECTOR_COORD, radius=2 * u.arcmin),
                                dict(objectname="TIC 32449963"), dict(objectname="Ceres", moving_target=True),
                                dict(coordinates=UNCOVERED)], ids=["coord", "radius", "tic", "moving", "empty"])
def test_get_sectors(theirs, ours, kw):
    a, wa = catch(ours["tesscut"].get_sectors, **kw)
    b, wb = catch(theirs["tesscut"].get_sectors, **kw)
    same_table(a, b)
    assert [m for _, m in wa] == [m for _, m in wb]
    assert [c for c, _ in wa] == [c for c, _ in wb]


def test_tess_get_cutouts(theirs, ours):
    kw = dict(coordinates=TESS_COORD, sector=33, size=[3, 7])
    same_hdulists(ours["tesscut"].get_cutouts(**kw), theirs["tesscut"].get_cutouts(**kw))


def test_tess_get_cutouts_all_sectors_by_name(theirs, ours):
    kw = dict(objectname="TIC 32449963", size=4)
    mine = ours["tesscut"].get_cutouts(**kw)
    assert mine
    same_hdulists(mine, theirs["tesscut"].get_cutouts(**kw))


def test_tess_download_cutouts(theirs, ours, tmp_path):
    kw = dict(coordinates=TESS_COORD, size=[5, 5] * u.arcmin, sector=9)
    a = ours["tesscut"].download_cutouts(path=str(tmp_path / "ours"), **kw)
    b = theirs["tesscut"].download_cutouts(path=str(tmp_path / "theirs"), **kw)
    assert a.colnames == b.colnames == ["Local Path"]
    assert [os.path.basename(p) for p in a["Local Path"]] == [os.path.basename(p) for p in b["Local Path"]]
    for pa, pb in zip(a["Local Path"], b["Local Path"]):
        assert open(pa, "rb").read() == open(pb, "rb").read()
    assert sorted(os.listdir(tmp_path / "ours")) == sorted(os.listdir(tmp_path / "theirs"))


def test_tess_download_without_inflate_keeps_a_unique_zip(theirs, ours, tmp_path):
    kw = dict(coordinates=TESS_COORD, sector=9, inflate=False)
    a = [ours["tesscut"].download_cutouts(path=str(tmp_path), **kw)["Local Path"][0] for _ in range(2)]
    b = theirs["tesscut"].download_cutouts(path=str(tmp_path / "aq"), **kw)["Local Path"][0]
    assert a[0] != a[1] and all(p.endswith(".zip") and os.path.basename(p).startswith("tesscut_") for p in a)
    with zipfile.ZipFile(a[0]) as za, zipfile.ZipFile(b) as zb:
        assert za.namelist() == zb.namelist()
        assert [za.read(n) for n in za.namelist()] == [zb.read(n) for n in zb.namelist()]


def test_moving_target_cutout_one_sector(theirs, ours):
    kw = dict(objectname="Eleonora", moving_target=True, sector=6, size=3)
    same_hdulists(ours["tesscut"].get_cutouts(**kw), theirs["tesscut"].get_cutouts(**kw))


def test_no_data_same_warning_and_empty_result(theirs, ours, tmp_path):
    kw = dict(coordinates=UNCOVERED, size=3)
    a, wa = catch(ours["tesscut"].get_cutouts, **kw)
    b, wb = catch(theirs["tesscut"].get_cutouts, **kw)
    assert a == b == []
    assert [m for _, m in wa] == [m for _, m in wb] and wa
    a, wa = catch(ours["tesscut"].download_cutouts, path=str(tmp_path / "o"), **kw)
    b, wb = catch(theirs["tesscut"].download_cutouts, path=str(tmp_path / "t"), **kw)
    same_table(a, b)
    assert [m for _, m in wa] == [m for _, m in wb] and wa
    assert os.listdir(tmp_path / "o") == []     # the JSON reply is not left behind


def test_zcut(theirs, ours, tmp_path):
    assert ours["zcut"].get_surveys(coordinates=ZCUT_COORD) == theirs["zcut"].get_surveys(coordinates=ZCUT_COORD)
    kw = dict(coordinates=ZCUT_COORD, size=[4, 6], survey="candels_gn_30mas")
    same_hdulists(ours["zcut"].get_cutouts(**kw), theirs["zcut"].get_cutouts(**kw))
    for fmt, extra in [("fits", {}), ("jpg", dict(stretch="sqrt", invert=True)), ("png", {})]:
        a = ours["zcut"].download_cutouts(path=str(tmp_path / f"o{fmt}"), cutout_format=fmt, **kw, **extra)
        os.makedirs(tmp_path / f"t{fmt}")   # astroquery's Zcut does not create its folder
        b = theirs["zcut"].download_cutouts(path=str(tmp_path / f"t{fmt}"), cutout_format=fmt, **kw, **extra)
        assert [os.path.basename(p) for p in a["Local Path"]] == [os.path.basename(p) for p in b["Local Path"]]
        for pa, pb in zip(a["Local Path"], b["Local Path"]):
            assert open(pa, "rb").read() == open(pb, "rb").read()


def test_zcut_empty(theirs, ours):
    a, wa = catch(ours["zcut"].get_surveys, coordinates=UNCOVERED)
    b, wb = catch(theirs["zcut"].get_surveys, coordinates=UNCOVERED)
    assert a == b == [] and [m for _, m in wa] == [m for _, m in wb] and wa


def test_hapcut(theirs, ours, tmp_path):
    kw = dict(coordinates=HAP_COORD, size=[2, 3])
    same_hdulists(ours["hapcut"].get_cutouts(**kw), theirs["hapcut"].get_cutouts(**kw))
    os.makedirs(tmp_path / "t")
    a = ours["hapcut"].download_cutouts(path=str(tmp_path / "o"), **kw)
    b = theirs["hapcut"].download_cutouts(path=str(tmp_path / "t"), **kw)
    assert [os.path.basename(p) for p in a["Local Path"]] == [os.path.basename(p) for p in b["Local Path"]]
    for pa, pb in zip(a["Local Path"], b["Local Path"]):
        assert open(pa, "rb").read() == open(pb, "rb").read()
    a, wa = catch(ours["hapcut"].get_cutouts, coordinates=HAP_EMPTY)
    b, wb = catch(theirs["hapcut"].get_cutouts, coordinates=HAP_EMPTY)
    assert a == b == [] and [m for _, m in wa] == [m for _, m in wb] and wa


@pytest.mark.parametrize("kw", [
    dict(coordinates=TESS_COORD, size=5 * u.s),
    dict(coordinates=TESS_COORD, objectname="M104"),
    dict(objectname="Ceres", moving_target=True, coordinates=TESS_COORD),
    dict(objectname="Ceres", moving_target=True, product="TICA"),
], ids=["size-unit", "both", "moving+coords", "tica"])
def test_same_errors(theirs, ours, emulator, kw):
    before = emulator.stats()["requests"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(AqInvalidQueryError) as b:
            theirs["tesscut"].get_cutouts(**kw)
        with pytest.raises(InvalidQueryError) as a:
            ours["tesscut"].get_cutouts(**kw)
    assert str(a.value) == str(b.value)
    assert emulator.stats()["requests"] == before
