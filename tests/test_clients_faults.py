"""The clients against the emulator's faults: retried where a retry helps, refused where the
archive is hostile, and never more than max_concurrency requests in flight."""

from __future__ import annotations

import os
import pickle
import threading
import warnings

import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from mastcut_dask.services.clients import HapcutClass, TesscutClass, ZcutClass
from mastcut_dask.emulator import MastEmulator
from mastcut_dask.exceptions import (
    NoResultsWarning,
    ServiceUnavailableError,
    UnexpectedResponseError,
    UnsafeArchiveError,
)

C = SkyCoord(107.18696, -70.50919, unit="deg")
KW = dict(coordinates=C, sector=33, size=3)
SEED = 7   # the emulator's sky depends on its seed too: the clean run and the faulty ones share it


def tess(emu, **kw):
    opts = dict(base_url=emu.url, resolver_url=emu.resolver_url, backoff_base=0.01, backoff_cap=0.05,
                max_retries=10, timeout=5)
    opts.update(kw)
    return TesscutClass(**opts)


def files_under(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@pytest.fixture(scope="module")
def clean():
    with MastEmulator(max_cadences=20, seed=SEED) as emu:
        client = tess(emu)
        hdus = client.get_cutouts(**KW)
        return [(h.filename, np.array(h["PIXELS"].data["FLUX"])) for h in hdus]


def same_as_clean(hdus, clean):
    assert [h.filename for h in hdus] == [name for name, _ in clean]
    for h, (_, flux) in zip(hdus, clean):
        np.testing.assert_array_equal(h["PIXELS"].data["FLUX"], flux)


@pytest.mark.parametrize("fault", ["503", "504", "truncate", "reset", "badzip", "html200"])
def test_cutouts_survive_transient_faults(fault, clean, tmp_path):
    with MastEmulator(max_cadences=20, faults={fault: 0.5}, seed=SEED) as emu:
        client = tess(emu)
        for _ in range(3):
            same_as_clean(client.get_cutouts(**KW), clean)
        table = client.download_cutouts(path=str(tmp_path), **KW)
        stats = emu.stats()
    assert stats["fault_counts"].get(fault, 0) > 0 and stats["requests"] > 4
    assert [os.path.basename(p) for p in table["Local Path"]] == [name for name, _ in clean]
    assert files_under(tmp_path) == [name for name, _ in clean]     # no .part, no zip left


def test_stall_times_out_then_the_retry_succeeds(clean, tmp_path):
    with MastEmulator(max_cadences=20, faults={"stall": 0.5}, stall_seconds=30, seed=SEED) as emu:
        client = tess(emu, timeout=(2.0, 0.3))
        for _ in range(3):
            same_as_clean(client.get_cutouts(**KW), clean)
        assert emu.stats()["requests"] > 3


def test_persistent_503_is_a_clear_error(tmp_path):
    with MastEmulator(faults={"503": 1.0}) as emu:
        client = tess(emu, max_retries=3)
        with pytest.raises(ServiceUnavailableError) as info:
            client.download_cutouts(path=str(tmp_path), **KW)
        assert emu.stats()["requests"] == 4
    err = info.value
    assert err.status == 503 and err.attempts == 4
    assert "/tesscut/api/v0.1/astrocut" in err.url and "sector=33" in err.url
    assert "after 4 tries" in str(err) and "HTTP 503" in str(err)
    assert "107.18696" in err.target
    back = pickle.loads(pickle.dumps(err))       # workers send errors home
    assert (type(back), back.url, back.status, back.attempts, back.target, str(back)) == \
        (type(err), err.url, err.status, err.attempts, err.target, str(err))
    assert files_under(tmp_path) == []


def test_html_page_with_200_is_an_unexpected_response(tmp_path):
    with MastEmulator(faults={"html200": 1.0}) as emu:
        client = tess(emu, max_retries=1)
        with pytest.raises(UnexpectedResponseError, match="neither a zip archive nor JSON"):
            client.get_cutouts(**KW)
        with pytest.raises(UnexpectedResponseError):
            client.download_cutouts(path=str(tmp_path), **KW)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("fault", ["zipslip", "zipbomb"])
def test_hostile_archives_are_refused_and_nothing_is_written(fault, tmp_path):
    outside = tmp_path / "outside"
    path = outside / "inside" / "out"
    with MastEmulator(max_cadences=20, faults={fault: 1.0}) as emu:
        client = tess(emu, max_retries=2)
        with pytest.raises(UnsafeArchiveError, match="refused"):
            client.download_cutouts(path=str(path), **KW)
        with pytest.raises(UnsafeArchiveError):
            client.get_cutouts(**KW)
        assert emu.stats()["requests"] == 2          # hostile is not retried
    assert files_under(tmp_path) == []
    assert not os.path.exists("/abs/evil.fits")


def test_transient_no_data_is_an_outcome_not_a_retry(tmp_path):
    with MastEmulator(max_cadences=20, faults={"nodata_transient": 1.0}) as emu:
        client = tess(emu)
        with pytest.warns(NoResultsWarning, match="No FFIs found"):
            assert client.get_cutouts(**KW) == []
        with pytest.warns(NoResultsWarning):
            table = client.download_cutouts(path=str(tmp_path), **KW)
        assert len(table) == 0 and emu.stats()["requests"] == 2
    assert files_under(tmp_path) == []


def test_30_threads_never_exceed_10_in_flight():
    with MastEmulator(max_cadences=20, latency=0.05, max_concurrency=10) as emu:
        client = tess(emu, max_retries=0)    # a single 503 would fail a call
        start = threading.Barrier(30)
        results, errors = [], []

        def call():
            start.wait()
            try:
                results.append(client.get_cutouts(**KW))
            except Exception as err:  # collected and asserted on below
                errors.append(err)

        threads = [threading.Thread(target=call) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = emu.stats()
    assert errors == []
    assert len(results) == 30 and all(len(r) == len(results[0]) for r in results)
    assert stats["max_in_flight"] <= 10
    assert stats["max_in_flight"] >= 2          # the threads really did overlap
    assert 503 not in stats["status_counts"]
    assert client.throttle.max_in_flight <= 10


def test_two_client_instances_share_one_budget():
    with MastEmulator(max_cadences=20, latency=0.05, max_concurrency=10) as emu:
        clients = [tess(emu, max_retries=0), tess(emu, max_retries=0)]
        assert clients[0].throttle is clients[1].throttle
        start = threading.Barrier(30)
        errors = []

        def call(client):
            start.wait()
            try:
                client.get_cutouts(**KW)
            except Exception as err:  # collected and asserted on below
                errors.append(err)

        threads = [threading.Thread(target=call, args=(clients[i % 2],)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = emu.stats()
    assert errors == [] and stats["max_in_flight"] <= 10 and 503 not in stats["status_counts"]


def test_parallel_downloads_into_one_folder_do_not_collide(tmp_path):
    with MastEmulator(max_cadences=20) as emu:
        client = tess(emu)
        tables = []

        def call():
            tables.append(client.download_cutouts(path=str(tmp_path), inflate=False, **KW))

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    zips = [t["Local Path"][0] for t in tables]
    assert len(set(zips)) == 8 and sorted(os.path.basename(z) for z in zips) == files_under(tmp_path)


def test_zcut_and_hapcut_share_the_plumbing(tmp_path):
    with MastEmulator(faults={"503": 0.5}, seed=5) as emu:
        kw = dict(base_url=emu.url, backoff_base=0.01, backoff_cap=0.05, max_retries=10)
        z = ZcutClass(**kw)
        coord = SkyCoord(189.49206, 62.20615, unit="deg")
        assert z.get_surveys(coordinates=coord)
        assert z.download_cutouts(coordinates=coord, survey="goods_north", path=str(tmp_path / "z"))["Local Path"]
        h = HapcutClass(**kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert h.get_cutouts(coordinates=SkyCoord(351.347812, 28.497808, unit="deg"), size=3)
        assert emu.stats()["status_counts"].get(503, 0) > 0


def test_stage_functions_for_the_pipeline(emulator, tmp_path):
    from mastcut_dask.services.archive import CutoutArchive, NoData
    from mastcut_dask.services.queries import download_cutout_archive, extract_cutout_archive, fetch_cutout_members, read_cutout_members
    from mastcut_dask.options import ServiceOptions
    from mastcut_dask.services.request import CutoutRequest
    from mastcut_dask.targets.size import parse_size

    opts = ServiceOptions(base_url=emulator.url, resolver_url=emulator.resolver_url)
    covered = CutoutRequest("tesscut", size=parse_size(3), ra=107.18696, dec=-70.50919, sector=33,
                            target_id="t1")
    got = download_cutout_archive(opts, covered, str(tmp_path / "zips"), final_name="t1.zip")
    assert isinstance(got, CutoutArchive) and got.path == str(tmp_path / "zips" / "t1.zip")
    assert files_under(tmp_path / "zips") == ["t1.zip"] and got.members
    members = read_cutout_members(got, opts)
    assert [m for m, _ in members] == list(got.members)
    assert fetch_cutout_members(opts, covered) == members            # GET and POST give the same bytes
    paths = extract_cutout_archive(got, str(tmp_path / "fits"), opts)
    assert [os.path.basename(p) for p in paths] == list(got.members) and not os.path.exists(got.path)

    nowhere = CutoutRequest("tesscut", size=parse_size(3), ra=180.0, dec=0.0, target_id="t2")
    nodata = download_cutout_archive(opts, nowhere, str(tmp_path / "zips"), final_name="t2.zip")
    assert isinstance(nodata, NoData) and "No FFIs" in nodata.message and "astrocut" in nodata.url
    assert files_under(tmp_path / "zips") == []
    assert isinstance(fetch_cutout_members(opts, nowhere), NoData)


def test_sector_reply_with_a_msg_next_to_its_results_is_accepted(loopback):
    # MAST's replies put "msg" next to "results" (HAPCut does); a sector list that carries an
    # empty or informative msg is still a sector list, as astroquery's .get("results") reads it,
    # not an unexpected reply to be retried until it fails.
    from mastcut_dask.services.queries import query_sectors
    from mastcut_dask.options import ServiceOptions

    rows = [{"sectorName": "tess-s0001-1-3", "sector": "1", "camera": "1", "ccd": "3"}]
    with _json_server(loopback, {"msg": "", "results": rows}) as server:
        opts = ServiceOptions(base_url=server.url, max_retries=0)
        assert query_sectors(opts, ra=1.0, dec=2.0) == [
            {"sectorName": "tess-s0001-1-3", "sector": 1, "camera": 1, "ccd": 3}]


def _json_server(loopback, reply: dict):
    """A loopback server answering every POST with ``reply`` (a shape the emulator never sends);
    any other method gets 501, as a server that only knows POST answers."""
    return loopback(lambda request: loopback.Reply.json(reply) if request.method == "POST"
                    else loopback.Reply(501))


MSG_ONLY = {"msg": "No data found for the given target."}


def test_sector_reply_with_only_a_msg_is_no_sector_as_in_astroquery(monkeypatch, caplog, loopback):
    # MAST may answer a sector query with a "msg" and no "results" at all. astroquery 0.4.11 reads
    # .get("results", []): an empty table and its "not in any TESS sector" warning. We retried it
    # as an unexpected reply and raised UnexpectedResponseError.
    from astroquery.exceptions import NoResultsWarning as AqNoResultsWarning
    from astroquery.mast.cutouts import TesscutClass as AqTesscut
    from astroquery.mast.services import ServiceAPI

    from mastcut_dask.services.queries import query_sectors
    from mastcut_dask.options import ServiceOptions

    with _json_server(loopback, MSG_ONLY) as server:
        url = server.url
        opts = ServiceOptions(base_url=url, max_retries=3, backoff_base=0.01, backoff_cap=0.02)
        with caplog.at_level("INFO", logger="mastcut_dask.services.queries"):
            assert query_sectors(opts, ra=1.0, dec=2.0) == []          # discovery: "no_coverage"
        assert server.targets == ["/tesscut/api/v0.1/sector"]             # an outcome: not retried
        assert MSG_ONLY["msg"] in caplog.text

        with pytest.warns(NoResultsWarning, match="^Coordinates are not in any TESS sector.$"):
            ours = TesscutClass(base_url=url, max_retries=3, backoff_base=0.01).get_sectors(coordinates=C)
        with pytest.warns(NoResultsWarning):
            moving = TesscutClass(base_url=url, max_retries=3, backoff_base=0.01).get_sectors(
                objectname="Ceres", moving_target=True)
        assert server.targets[1:] == ["/tesscut/api/v0.1/sector", "/tesscut/api/v0.1/moving_target/sector"]

        monkeypatch.setattr(ServiceAPI, "SERVICE_URL", url)   # astroquery's own server setting
        with pytest.warns(AqNoResultsWarning, match="^Coordinates are not in any TESS sector.$"):
            theirs = AqTesscut().get_sectors(coordinates=C)
    for table in (ours, moving):
        assert table.colnames == theirs.colnames == ["sectorName", "sector", "camera", "ccd"]
        assert [table[c].dtype for c in table.colnames] == [theirs[c].dtype for c in theirs.colnames]
        assert len(table) == len(theirs) == 0


def test_survey_reply_with_only_a_msg_is_no_survey(caplog, loopback):
    """As for sectors: a survey reply that only carries a "msg" is "nothing here", answered at
    once, not a garbled reply retried until it fails (discovery: no_coverage, not failed)."""
    from mastcut_dask.services.queries import query_surveys
    from mastcut_dask.options import ServiceOptions

    with _json_server(loopback, {"msg": "No survey covers this position."}) as server:
        url = server.url
        opts = ServiceOptions(base_url=url, max_retries=3, backoff_base=0.01, backoff_cap=0.02)
        with caplog.at_level("INFO", logger="mastcut_dask.services.queries"):
            assert query_surveys(opts, ra=1.0, dec=2.0) == []
        assert "No survey covers this position." in caplog.text
        with pytest.warns(NoResultsWarning):
            assert ZcutClass(base_url=url, max_retries=3, backoff_base=0.01).get_surveys(coordinates=C) == []
    assert server.targets == ["/zcut/api/v0.1/survey"] * 2


def test_sector_reply_with_a_non_list_results_is_still_refused(loopback):
    from mastcut_dask.services.queries import query_sectors
    from mastcut_dask.options import ServiceOptions

    with _json_server(loopback, {"msg": "", "results": "tess-s0001-1-3"}) as server:
        opts = ServiceOptions(base_url=server.url, max_retries=1, backoff_base=0.01, backoff_cap=0.02)
        with pytest.raises(UnexpectedResponseError):
            query_sectors(opts, ra=1.0, dec=2.0)
    assert len(server.targets) == 2
