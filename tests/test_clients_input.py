"""Bad input fails before any request, with a message that says what to change."""

from __future__ import annotations

import warnings

import astropy.units as u
import pytest
from astropy.coordinates import SkyCoord

from mastcut_dask import Hapcut, Tesscut, Zcut
from mastcut_dask.services.clients import HapcutClass, TesscutClass, ZcutClass
from mastcut_dask.exceptions import InvalidQueryError, ResolverError

C = SkyCoord(107.18696, -70.50919, unit="deg")


@pytest.fixture(scope="module")
def clients(emulator):
    kw = dict(base_url=emulator.url, resolver_url=emulator.resolver_url)
    return TesscutClass(**kw), ZcutClass(**kw), HapcutClass(**kw)


CASES = [
    ("tess", "get_cutouts", dict(coordinates=C, objectname="M104"), InvalidQueryError, "Only one of objectname"),
    ("tess", "get_sectors", dict(coordinates=C, objectname="M104"), InvalidQueryError, "remove objectname"),
    ("tess", "get_cutouts", dict(coordinates=C, objectname="Ceres", moving_target=True), InvalidQueryError,
     "remove coordinates"),
    ("tess", "get_sectors", dict(moving_target=True), InvalidQueryError, "object name or ID"),
    ("tess", "get_cutouts", dict(), InvalidQueryError, "One of objectname and coordinates"),
    ("tess", "get_cutouts", dict(coordinates=C, size=5, units="furlongs"), InvalidQueryError, "units"),
    ("tess", "download_cutouts", dict(coordinates=C, size=5 * u.kg), InvalidQueryError,
     "Cutout size must be in pixels or angular quantity."),
    ("tess", "get_cutouts", dict(coordinates=C, sector=-3), InvalidQueryError, "positive integer"),
    ("tess", "get_cutouts", dict(coordinates=C, sector="8"), InvalidQueryError, "sector=8"),
    ("tess", "get_cutouts", dict(coordinates=C, sector=2.5), InvalidQueryError, "sector"),
    ("tess", "get_cutouts", dict(coordinates=C, sector=[]), InvalidQueryError, "empty list"),
    ("tess", "get_cutouts", dict(objectname=""), InvalidQueryError, "objectname is empty"),
    ("tess", "get_sectors", dict(object_name="   "), InvalidQueryError, "empty"),
    ("tess", "get_sectors", dict(objectname="M1", object_name="M101"), InvalidQueryError, "not both"),
    ("tess", "get_sectors", dict(objectname=42), InvalidQueryError, "must be a string"),
    ("tess", "get_sectors", dict(objectname="M1", resolver="VizieR"), ResolverError, "Invalid resolver"),
    ("tess", "get_cutouts", dict(coordinates=C, size=0), InvalidQueryError, "positive"),
    ("tess", "get_cutouts", dict(coordinates=C, size=[5, -1]), InvalidQueryError, "positive"),
    ("tess", "get_cutouts", dict(coordinates=C, size=float("nan")), InvalidQueryError, "finite"),
    ("tess", "get_cutouts", dict(coordinates=C, size=[101, 100]), InvalidQueryError, "10000"),
    ("tess", "download_cutouts", dict(coordinates=C, size=1 * u.deg), InvalidQueryError, "smaller"),
    ("tess", "get_cutouts", dict(coordinates=C, product="TICA"), InvalidQueryError, "Input product must be SPOC."),
    ("tess", "get_sectors", dict(coordinates="not a place"), InvalidQueryError, "objectname="),
    ("tess", "get_sectors", dict(coordinates=C, radius="wide"), InvalidQueryError, "radius"),
    ("tess", "get_sectors", dict(coordinates=(10.0, 120.0)), InvalidQueryError, "Declination"),
    ("zcut", "get_cutouts", dict(coordinates=C, survey="not a survey!"), InvalidQueryError, "get_surveys"),
    ("zcut", "download_cutouts", dict(coordinates=C, cutout_format="gif"), InvalidQueryError, "fits, jpg, png"),
    ("zcut", "download_cutouts", dict(coordinates=C, cutout_format="jpg", stretch="cubic"), InvalidQueryError,
     "asinh"),
    ("zcut", "download_cutouts", dict(coordinates=C, gamma=2), InvalidQueryError, "stretch, minmax_percent"),
    ("zcut", "get_surveys", dict(), InvalidQueryError, "coordinates are required"),
    ("hapcut", "get_cutouts", dict(coordinates=C, size=[0, 3]), InvalidQueryError, "positive"),
    ("hapcut", "download_cutouts", dict(coordinates=None), InvalidQueryError, "coordinates are required"),
]


@pytest.mark.parametrize("service,method,kw,exc,text", CASES, ids=[f"{c[0]}.{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_raises_before_any_request(emulator, clients, tmp_path, service, method, kw, exc, text):
    client = {"tess": clients[0], "zcut": clients[1], "hapcut": clients[2]}[service]
    if method == "download_cutouts":
        kw = dict(kw, path=str(tmp_path / "out"))
    before = emulator.stats()["requests"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc) as info:
            getattr(client, method)(**kw)
    assert text in str(info.value)
    assert emulator.stats()["requests"] == before
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_product_spoc_is_deprecated_but_works(clients):
    from astropy.utils.exceptions import AstropyDeprecationWarning

    with pytest.warns(AstropyDeprecationWarning, match="The `product` argument is deprecated"):
        table = clients[0].get_sectors(coordinates=C, product="spoc")
    assert len(table) > 0


def test_ready_instances_touch_nothing_until_called():
    assert isinstance(Tesscut, TesscutClass) and isinstance(Zcut, ZcutClass) and isinstance(Hapcut, HapcutClass)
    assert Tesscut.options.base_url.startswith("http")


def test_environment_decides_the_server_at_call_time(emulator, monkeypatch):
    monkeypatch.setenv("MASTCUT_MAST_URL", emulator.url)
    assert Tesscut.options.base_url == emulator.url
    assert len(Tesscut.get_sectors(coordinates=C)) > 0


def test_constructor_options():
    client = TesscutClass(base_url="http://example.invalid:1", timeout=7, max_retries=2, max_concurrency=3,
                          backoff_base=0.01)
    opts = client.options
    assert (opts.read_timeout, opts.connect_timeout, opts.max_retries, opts.backoff_base) == (7.0, 7.0, 2, 0.01)
    assert client.throttle.max_concurrency == 3
    with pytest.raises(TypeError, match="nonsense"):
        TesscutClass(nonsense=1)
    with pytest.raises(InvalidQueryError):
        TesscutClass(max_concurrency=0)
    with pytest.raises(InvalidQueryError):
        TesscutClass(base_url="ftp://x").options  # noqa: B018


def test_coordinate_forms_give_the_same_answer(clients):
    tess = clients[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = tess.get_sectors(coordinates=C)
        b = tess.get_sectors(coordinates="107.18696 -70.50919")
        c = tess.get_sectors(coordinates=(107.18696, -70.50919))
        d = tess.get_sectors(coordinates="107.18696, -70.50919")
    assert list(a["sectorName"]) == list(b["sectorName"]) == list(c["sectorName"]) == list(d["sectorName"])


def test_well_formed_but_unknown_survey_is_refused_by_the_service_once(emulator, clients):
    """A survey name can only be known unknown by asking; the 400 is not retried."""
    before = emulator.stats()["requests"]
    with pytest.raises(InvalidQueryError, match="Unknown survey"):
        clients[1].get_cutouts(coordinates=SkyCoord(189.49206, 62.20615, unit="deg"), survey="no_such_survey")
    assert emulator.stats()["requests"] == before + 1


@pytest.mark.parametrize("method", ["get_cutouts", "download_cutouts"])
def test_tesscut_refuses_more_than_its_10000_pixels_before_any_request(emulator, clients, tmp_path, method):
    # TESSCut's documented limit ("fewer than 10,000 pixels"); 100 x 100 is the largest allowed.
    kw = dict(path=str(tmp_path)) if method == "download_cutouts" else {}
    before = emulator.stats()["requests"]
    for size in ([101, 100], [100, 101], 10_001 * u.pixel):
        with pytest.raises(InvalidQueryError, match="limit of 10000 pixels"):
            getattr(clients[0], method)(coordinates=C, size=size, sector=33, **kw)
    assert emulator.stats()["requests"] == before


ZCUT_FIELD = SkyCoord(189.49206, 62.20615, unit="deg")
HAP_FIELD = SkyCoord(351.347812, 28.497808, unit="deg")


@pytest.mark.parametrize("service,method", [("zcut", "get_cutouts"), ("zcut", "download_cutouts"),
                                            ("hapcut", "get_cutouts"), ("hapcut", "download_cutouts")])
def test_zcut_and_hapcut_sizes_are_not_held_to_tesscuts_limit(emulator, clients, tmp_path, service, method):
    # MAST documents a cutout size limit for TESSCut only (fewer than 10,000 pixels); its ZCut
    # and HAPCut API pages give none, and their pixels are 30-60 mas, not TESS's 21". So the
    # client does not hold them to TESSCut's limit: the request goes to the service, whose
    # answer decides. (The emulator happens to refuse more than 10,000 with a 400, which is
    # raised at once, as the server's words, and not retried.)
    client = clients[1] if service == "zcut" else clients[2]
    coord = ZCUT_FIELD if service == "zcut" else HAP_FIELD
    kw = dict(path=str(tmp_path)) if method == "download_cutouts" else {}
    sent = len(emulator.request_log())
    with pytest.raises(InvalidQueryError, match=r"The service refused the request \(400\)"):
        getattr(client, method)(coordinates=coord, size=[101, 100], **kw)
    log = emulator.request_log()[sent:]
    assert [e["status"] for e in log] == [400] and f"/{service}/api/v0.1/astrocut" in log[0]["path"]
