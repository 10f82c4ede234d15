"""Moving targets and what goes on the wire: obj_id/obj_type, one request per sector, ZCut's cutout_format."""

from __future__ import annotations

import os
import warnings

import pytest
from astropy.coordinates import SkyCoord

from mastcut_dask.services.clients import TesscutClass, ZcutClass
from mastcut_dask.exceptions import NoResultsWarning


def log_since(emu, n):
    return emu.request_log()[n:]


@pytest.fixture(scope="module")
def tess(emulator):
    return TesscutClass(base_url=emulator.url, resolver_url=emulator.resolver_url)


def test_moving_target_without_sector_is_one_request_per_sector(emulator, tess):
    n = len(emulator.request_log())
    sectors = tess.get_sectors(objectname="Eleonora", moving_target=True, mt_type="smallbody")
    hdus = tess.get_cutouts(objectname="Eleonora", moving_target=True, mt_type="smallbody", size=3)
    entries = log_since(emulator, n)
    cut = [e for e in entries if e["path"].endswith("moving_target/astrocut")]
    unique = list(dict.fromkeys(int(s) for s in sectors["sector"]))
    # sent in parallel (under the throttle), returned in sector order
    assert sorted(int(e["params"]["sector"]) for e in cut) == sorted(unique)
    assert [h[0].header["SECTOR"] for h in hdus] == unique
    assert all(e["params"]["obj_id"] == "Eleonora" and e["params"]["obj_type"] == "smallbody" for e in cut)
    assert all("ra" not in e["params"] for e in entries)
    assert len(hdus) == len(cut) >= 2
    assert all(len(h["PIXELS"].columns) == 16 for h in hdus)      # TGT_X, TGT_Y, TGT_RA, TGT_DEC


def test_moving_target_with_sector_is_one_request(emulator, tess, tmp_path):
    n = len(emulator.request_log())
    table = tess.download_cutouts(objectname="Eleonora", moving_target=True, sector=6, size=3, path=str(tmp_path))
    entries = log_since(emulator, n)
    assert [e["path"] for e in entries] == ["/tesscut/api/v0.1/moving_target/astrocut"]
    assert entries[0]["method"] == "GET" and entries[0]["params"]["sector"] == "6"
    assert len(table) == 1 and os.path.isfile(table["Local Path"][0])


def test_unknown_moving_target_warns_and_returns_nothing(emulator, tess):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tess.get_cutouts(objectname="Not An Asteroid 12345", moving_target=True) == []
    assert [str(w.message) for w in caught if w.category is NoResultsWarning] == \
        ["Coordinates are not in any TESS sector."]


def test_wire_parameters_in_astroquery_order(emulator, tess, tmp_path):
    n = len(emulator.request_log())
    tess.download_cutouts(coordinates=SkyCoord(107.18696, -70.50919, unit="deg"), size=[3, 7], sector=33,
                          path=str(tmp_path / "t"))
    z = ZcutClass(base_url=emulator.url)
    z.download_cutouts(coordinates=SkyCoord(189.49206, 62.20615, unit="deg"), size=[3, 7], survey="goods_north",
                       cutout_format="png", stretch="linear", invert=True, path=str(tmp_path / "z"))
    tess_entry, zcut_entry = log_since(emulator, n)
    assert list(tess_entry["params"]) == ["x", "y", "units", "sector", "ra", "dec"]
    assert (tess_entry["params"]["x"], tess_entry["params"]["y"]) == ("7", "3")
    assert list(zcut_entry["params"]) == ["ra", "dec", "y", "x", "units", "survey", "cutout_format", "stretch",
                                          "invert"]
    assert zcut_entry["params"]["cutout_format"] == "png" and "format" not in zcut_entry["params"]
    assert all(p.endswith(".png") for p in os.listdir(tmp_path / "z"))


def _half_broken_tess(loopback):
    """A tiny real server: a moving target in sectors 5 and 6, whose sector-6 cutout always fails."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("tess-s0005-1-1_path_3x3_astrocut.fits", b"SIMPLE  =" + b" " * 71)
    archive = buf.getvalue()
    rows = [{"sectorName": f"tess-s000{s}-1-1", "sector": str(s), "camera": "1", "ccd": "1"} for s in (5, 6)]

    def script(request):
        if request.method == "POST":      # moving_target/sector
            return loopback.Reply.json({"results": rows})
        if request.method == "GET":       # moving_target/astrocut
            if request.query["sector"] == "5":
                return loopback.Reply(200, archive, {"Content-Type": "application/zip"})
            return loopback.Reply(404, b'{"msg": "gone"}', {"Content-Type": "application/json"})
        return loopback.Reply(501)

    return loopback(script)


@pytest.mark.parametrize("inflate", [True, False])
def test_a_failed_sector_leaves_no_stray_zip_in_the_folder(tmp_path, inflate, loopback):
    # Sectors are downloaded in parallel; when one fails, the archives the others already wrote
    # must not be left behind in the user's folder, unreported and unextracted.
    from mastcut_dask.exceptions import ServiceError

    with _half_broken_tess(loopback) as server:
        client = TesscutClass(base_url=server.url, max_retries=0)
        with pytest.raises(ServiceError, match="404"):
            client.download_cutouts(objectname="Eleonora", moving_target=True, size=3, path=str(tmp_path),
                                    inflate=inflate)
    assert os.listdir(tmp_path) == []
