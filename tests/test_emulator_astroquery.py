"""Every example of the seed document (``mast_cut.rst``) through astroquery 0.4.11, unmodified,
pointed at the emulator.

astroquery derives its service URLs from ``ServiceAPI.SERVICE_URL`` (read from
``conf.server`` when astroquery is imported), so the tests set that class attribute and build
fresh ``TesscutClass()``/``ZcutClass()``/``HapcutClass()`` instances. Its SANTA URL is a literal
inside ``astroquery.mast.utils.resolve_object``; the one call that uses it,
``astroquery.mast.utils._simple_request``, is redirected to ``emu.resolver_url``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

astroquery = pytest.importorskip("astroquery", minversion="0.4.11")

import astropy.units as u  # noqa: E402
from astropy.coordinates import SkyCoord  # noqa: E402
from astroquery.exceptions import NoResultsWarning, ResolverError  # noqa: E402
from astroquery.mast import HapcutClass, TesscutClass, ZcutClass  # noqa: E402
from astroquery.mast import conf as mast_conf  # noqa: E402
from astroquery.mast import services as aq_services  # noqa: E402
from astroquery.mast import utils as aq_utils  # noqa: E402

from mastcut_dask.emulator import MastEmulator  # noqa: E402

TESS_FORMATS = ["D", "E", "J", "25J", "25E", "25E", "25E", "25E", "J", "E", "E", "38A"]


def _point_astroquery_at(monkeypatch, emu: MastEmulator) -> None:
    monkeypatch.setattr(aq_services.ServiceAPI, "SERVICE_URL", emu.url)
    monkeypatch.setattr(mast_conf, "server", emu.url)
    real_request = aq_utils._simple_request

    def to_emulator(url, params=None):
        if "mastresolver.stsci.edu" in url:
            url = emu.resolver_url
        return real_request(url, params)

    monkeypatch.setattr(aq_utils, "_simple_request", to_emulator)


@pytest.fixture
def aq(monkeypatch, emulator):
    """astroquery's three classes talking to the session emulator (cadences capped)."""
    _point_astroquery_at(monkeypatch, emulator)
    return TesscutClass(), ZcutClass(), HapcutClass()


@pytest.fixture(scope="module")
def full_emulator():
    """Uncapped cadences, for the examples whose row counts the document shows."""
    with MastEmulator() as emu:
        yield emu


@pytest.fixture
def aq_full(monkeypatch, full_emulator):
    _point_astroquery_at(monkeypatch, full_emulator)
    return TesscutClass()


# ---- TESSCut: sector discovery ---------------------------------------------------------------
def test_get_sectors_by_coordinates(aq):
    tesscut, _, _ = aq
    table = tesscut.get_sectors(coordinates=SkyCoord(135.1408, -5.1915, unit="deg"))
    assert table.colnames == ["sectorName", "sector", "camera", "ccd"]
    assert [tuple(row) for row in table] == [
        ("tess-s0008-1-1", 8, 1, 1), ("tess-s0034-1-2", 34, 1, 2),
        ("tess-s0061-1-2", 61, 1, 2), ("tess-s0088-1-2", 88, 1, 2)]


def test_get_sectors_by_tic_name(aq):
    tesscut, _, _ = aq
    table = tesscut.get_sectors(objectname="TIC 32449963")
    assert [tuple(row) for row in table] == [("tess-s0010-1-4", 10, 1, 4)]


def test_get_sectors_of_a_moving_target_prints_as_documented(aq):
    tesscut, _, _ = aq
    table = tesscut.get_sectors(objectname="Ceres", moving_target=True)
    assert table.pformat() == [
        "  sectorName   sector camera ccd",
        "-------------- ------ ------ ---",
        "tess-s0029-1-4     29      1   4",
        "tess-s0043-3-3     43      3   3",
        "tess-s0044-2-4     44      2   4",
        "tess-s0092-4-3     92      4   3",
        "tess-s0097-1-4     97      1   4",
    ]


def test_eleonora_moving_sectors_and_not_a_fixed_object(aq):
    tesscut, _, _ = aq
    table = tesscut.get_sectors(objectname="Eleonora", moving_target=True)
    assert tuple(table[0]) == ("tess-s0006-1-1", 6, 1, 1)
    with pytest.raises(ResolverError):
        tesscut.get_sectors(objectname="Eleonora")


def test_get_sectors_nowhere_warns_and_is_empty(aq, emulator):
    from mastcut_dask.emulator import tess

    spot = next(((ra, dec) for ra in np.arange(0, 360, 7.3) for dec in np.arange(-85, 86, 5.1)
                 if not tess.sectors_at(ra, dec, 0.0, seed=0)), None)
    if spot is None:
        pytest.skip("no uncovered position on the probe grid")
    tesscut, _, _ = aq
    with pytest.warns(NoResultsWarning, match="not in any TESS sector"):
        table = tesscut.get_sectors(coordinates=SkyCoord(*spot, unit="deg"))
    assert len(table) == 0
    with pytest.warns(NoResultsWarning, match="No FFIs found"):
        assert tesscut.get_cutouts(coordinates=SkyCoord(*spot, unit="deg")) == []


# ---- TESSCut: cutouts ------------------------------------------------------------------------
def test_sector_33_cutout_in_memory(aq_full):
    hdulist = aq_full.get_cutouts(coordinates=SkyCoord(107.18696, -70.50919, unit="deg"), sector=33)
    assert len(hdulist) == 1
    hdul = hdulist[0]
    assert [h.name for h in hdul] == ["PRIMARY", "PIXELS", "APERTURE"]
    pixels, aperture = hdul["PIXELS"], hdul["APERTURE"]
    assert pixels.header["NAXIS2"] == 3495 and len(pixels.columns) == 12
    assert pixels.columns.formats == TESS_FORMATS
    assert aperture.data.shape == (5, 5) and aperture.data.dtype == np.dtype(">i4")
    assert hdul[0].header["SECTOR"] == 33


def test_eleonora_moving_cutout_in_memory(aq_full):
    hdulist = aq_full.get_cutouts(objectname="Eleonora", moving_target=True, sector=6)
    hdul = hdulist[0]
    pixels, aperture = hdul["PIXELS"], hdul["APERTURE"]
    assert pixels.header["NAXIS2"] == 355
    assert pixels.columns.formats == TESS_FORMATS + ["D", "D", "D", "D"]
    assert (aperture.header["NAXIS1"], aperture.header["NAXIS2"]) == (2136, 2078)
    assert aperture.data.dtype.kind == "i" and aperture.data.dtype.itemsize == 4


def test_download_sector_9_cutout_file_name(aq, tmp_path):
    tesscut, _, _ = aq
    manifest = tesscut.download_cutouts(coordinates=SkyCoord(107.18696, -70.50919, unit="deg"),
                                        size=[5, 5] * u.arcmin, sector=9, path=str(tmp_path))
    name = "tess-s0009-4-1_107.186960_-70.509190_15x15_astrocut.fits"
    assert list(manifest["Local Path"]) == [os.path.join(str(tmp_path), name)]
    assert (tmp_path / name).stat().st_size > 0
    assert not list(tmp_path.glob("*.zip"))  # inflated and removed, as astroquery does


# ---- ZCut ------------------------------------------------------------------------------------
GOODS_N = SkyCoord(189.49206, 62.20615, unit="deg")
JPG_NAMES = [
    "hlsp_3dhst_spitzer_irac_goods-n_irac1_v4.0_sc_189.492060_62.206150_10.0pix-x-5.0pix_astrocut_0.jpg",
    "hlsp_3dhst_spitzer_irac_goods-n-s2_irac3_v4.0_sc_189.492060_62.206150_10.0pix-x-5.0pix_astrocut_0.jpg",
    "hlsp_3dhst_spitzer_irac_goods-n-s1_irac4_v4.0_sc_189.492060_62.206150_10.0pix-x-5.0pix_astrocut_0.jpg",
    "hlsp_3dhst_spitzer_irac_goods-n_irac2_v4.0_sc_189.492060_62.206150_10.0pix-x-5.0pix_astrocut_0.jpg",
    "hlsp_3dhst_mayall_mosaic_goods-n_u_v4.0_sc_189.492060_62.206150_10.0pix-x-5.0pix_astrocut_0.jpg",
    "hlsp_3dhst_subaru_suprimecam_goods-n_rc_v4.0_sc_189.492060_62.206150_10.0pix-x-5.0pix_astrocut_0.jpg",
    "hlsp_3dhst_subaru_suprimecam_goods-n_v_v4.0_sc_189.492060_62.206150_10.0pix-x-5.0pix_astrocut_0.jpg",
    "hlsp_3dhst_subaru_suprimecam_goods-n_ic_v4.0_sc_189.492060_62.206150_10.0pix-x-5.0pix_astrocut_0.jpg",
    "hlsp_3dhst_subaru_suprimecam_goods-n_zp_v4.0_sc_189.492060_62.206150_10.0pix-x-5.0pix_astrocut_0.jpg",
    "hlsp_3dhst_subaru_suprimecam_goods-n_b_v4.0_sc_189.492060_62.206150_10.0pix-x-5.0pix_astrocut_0.jpg",
]


def test_zcut_get_surveys(aq):
    _, zcut, _ = aq
    assert zcut.get_surveys(coordinates=GOODS_N) == [
        "candels_gn_60mas", "candels_gn_30mas", "goods_north", "3dhst_goods-n"]


def test_zcut_get_surveys_nowhere_warns(aq):
    _, zcut, _ = aq
    with pytest.warns(NoResultsWarning, match="deep field survey"):
        assert zcut.get_surveys(coordinates=SkyCoord(0, 0, unit="deg")) == []


def test_zcut_get_cutouts_in_memory(aq):
    _, zcut, _ = aq
    hdulist = zcut.get_cutouts(coordinates=GOODS_N, survey="3dhst_goods-n")
    assert len(hdulist) == 1
    hdul = hdulist[0]
    assert hdul[0].name == "PRIMARY" and len(hdul) >= 2
    for hdu in hdul[1:]:
        assert hdu.name == "CUTOUT"
        assert hdu.data.shape == (5, 5) and hdu.data.dtype.kind == "f" and hdu.data.dtype.itemsize == 4


def test_zcut_download_fits(aq, tmp_path):
    _, zcut, _ = aq
    manifest = zcut.download_cutouts(coordinates=GOODS_N, size=[5, 10], units="px",
                                     survey="3dhst_goods-n", path=str(tmp_path))
    (path,) = manifest["Local Path"]
    assert os.path.basename(path).startswith("3dhst_goods-n_189.492060_62.206150_")
    assert path.endswith("_astrocut.fits") and os.path.exists(path)


def test_zcut_download_jpg_names_as_documented(aq, tmp_path):
    _, zcut, _ = aq
    manifest = zcut.download_cutouts(coordinates=GOODS_N, size=[5, 10], units="px",
                                     survey="3dhst_goods-n", cutout_format="jpg",
                                     path=str(tmp_path))
    assert [os.path.basename(p) for p in manifest["Local Path"]] == JPG_NAMES
    from PIL import Image

    with Image.open(manifest["Local Path"][0]) as img:
        assert img.size == (10, 5)  # width x height: x=10, y=5


# ---- HAPCut ----------------------------------------------------------------------------------
HAP_TARGET = SkyCoord(351.347812, 28.497808, unit="deg")


def test_hapcut_get_cutouts_in_memory(aq):
    _, _, hapcut = aq
    hdulist = hapcut.get_cutouts(coordinates=HAP_TARGET, size=5)
    assert hdulist
    hdul = hdulist[0]
    assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WHT"]
    for hdu in hdul[1:]:
        assert hdu.data.shape == (5, 5) and hdu.data.dtype.kind == "f" and hdu.data.dtype.itemsize == 4


def test_hapcut_download_names_as_documented(aq, tmp_path):
    _, _, hapcut = aq
    manifest = hapcut.download_cutouts(coordinates=HAP_TARGET, size=[50, 100], path=str(tmp_path))
    stem = "hst_cutout_skycell-p2007x09y05-ra351d3478-decn28d4978_"
    assert [os.path.basename(p) for p in manifest["Local Path"]] == [
        stem + "wfc3_ir_f160w_coarse.fits", stem + "wfc3_ir_f160w.fits",
        stem + "wfc3_uvis_f606w.fits", stem + "wfc3_uvis_f814w.fits"]


def test_hapcut_nowhere_warns_and_is_empty(aq):
    _, _, hapcut = aq
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = hapcut.get_cutouts(coordinates=SkyCoord(102.7, 70.50, unit="deg"))
    assert result == []
    assert any(issubclass(w.category, NoResultsWarning) and "Missing HAP files" in str(w.message)
               for w in caught)
