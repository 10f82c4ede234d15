"""The emulator's TESS sky and target pixel files, checked against the pinned facts, astropy and lightkurve."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from hypothesis import given, settings
from hypothesis import strategies as hst

from mastcut_dask.emulator import sky, tess
from mastcut_dask.emulator.errors import BadRequest
from mastcut_dask.emulator.tess import CcdId


# ------------------------------------------------------------------ pinned sector facts
def test_pinned_fixed_position_has_exactly_the_documented_sectors():
    assert tess.sectors_at(135.1408, -5.1915) == [
        CcdId(8, 1, 1), CcdId(34, 1, 2), CcdId(61, 1, 2), CcdId(88, 1, 2)]


def test_tic_32449963_is_covered_by_exactly_sector_10_camera_1_ccd_4():
    pos = tess.tic_position(32449963)
    assert pos is not None
    assert tess.sectors_at(*pos) == [CcdId(10, 1, 4)]


def test_seed_doc_position_includes_sectors_9_27_33():
    found = tess.sectors_at(107.18696, -70.50919)
    assert CcdId(9, 4, 1) in found
    assert {27, 33} <= {c.sector for c in found}


def test_recorded_resolver_position_of_tic_307210830_is_covered_and_pinned():
    assert tess.tic_position(307210830) == (124.531756290083, -68.3129998725044)
    assert len(tess.sectors_at(124.531756290083, -68.3129998725044)) >= 1


def test_moving_target_pins():
    assert tess.moving_sectors("Ceres") == [
        CcdId(29, 1, 4), CcdId(43, 3, 3), CcdId(44, 2, 4), CcdId(92, 4, 3), CcdId(97, 1, 4)]
    assert tess.moving_sectors("Eleonora")[0] == CcdId(6, 1, 1)
    # names are matched case- and whitespace-insensitively, obj_type is accepted
    assert tess.moving_sectors("  eleonora ", "smallbody") == tess.moving_sectors("Eleonora")


def test_other_moving_targets_are_hashed_deterministically_with_at_most_three_sectors():
    counts = set()
    for i in range(40):
        name = f"2001 XY{i}"
        got = tess.moving_sectors(name)
        assert got == tess.moving_sectors(name)
        assert len(got) <= 3
        assert [c.sector for c in got] == sorted({c.sector for c in got})
        counts.add(len(got))
    assert counts == {0, 1, 2, 3}
    assert tess.moving_sectors("") == []


# ------------------------------------------------------------------ geometry
def test_no_slot_is_used_twice_and_most_sky_is_covered_by_one_to_four():
    lay = tess.layout(0)
    assert len(set(lay.slots)) == len(lay.slots) > 300
    rng = np.random.default_rng(1)
    ras = rng.uniform(0, 360, 300)
    decs = np.degrees(np.arcsin(rng.uniform(-1, 1, 300)))
    n = np.array([len(tess.sectors_at(r, d)) for r, d in zip(ras, decs)])
    assert (n == 0).sum() > 0  # some sky is unobserved
    assert ((n >= 1) & (n <= 4)).mean() > 0.6


def test_sectors_at_agrees_with_the_astropy_wcs_of_each_ccd():
    rng = np.random.default_rng(2)
    for _ in range(30):
        ra, dec = rng.uniform(0, 360), rng.uniform(-80, 80)
        for c in tess.sectors_at(ra, dec):
            x, y = tess.ccd_wcs(c).world_to_pixel_values(ra, dec)
            assert 43.5 <= x < 2091.5 and -0.5 <= y < 2047.5


def test_ccd_wcs_has_tess_pixel_scale_and_positive_determinant():
    w = tess.ccd_wcs(CcdId(33, 4, 1))
    cd = w.wcs.get_pc() * w.wcs.cdelt[:, None]
    assert np.linalg.det(cd) > 0
    assert np.sqrt(abs(np.linalg.det(cd))) * 3600 == pytest.approx(21.0)


def test_radius_widens_coverage():
    ra, dec = 135.1408, -5.1915
    assert set(tess.sectors_at(ra, dec)) <= set(tess.sectors_at(ra, dec, 10.0))
    assert len(tess.sectors_at(ra, dec, 10.0)) > 4


@pytest.mark.parametrize("ra,dec,radius", [(float("nan"), 0, 0), (0, 91, 0), (0, 0, -1)])
def test_sectors_at_rejects_bad_input(ra, dec, radius):
    with pytest.raises(BadRequest):
        tess.sectors_at(ra, dec, radius)


# ------------------------------------------------------------------ stars
def test_tic_ids_resolve_to_catalogue_stars():
    for n in (1, 12345, 9_000_000, sky.N_CELLS):
        pos = tess.tic_position(n)
        assert pos is not None
        truth = tess.star_truth(*pos)
        assert truth.tic_id == n
        assert 0.5 <= truth.period <= 15 and 0.002 <= truth.depth <= 0.03
    assert tess.tic_position(sky.N_CELLS + 1) is None
    assert tess.tic_position(0) is None


def test_variability_is_a_transit_of_the_documented_depth():
    st = tess.star_truth(*tess.tic_position(307210830))
    assert st.tic_id == 307210830
    t = st.epoch + st.period * 7
    assert sky.variability(t, st.period, st.epoch, st.duration, st.depth) == pytest.approx(1 - st.depth)
    assert sky.variability(t + st.period / 2, st.period, st.epoch, st.duration, st.depth) == 1.0


# ------------------------------------------------------------------ size parsing
def test_size_parsing():
    assert tess.parse_size(5, 5, "px") == (5, 5)
    assert tess.parse_size("7", "3", "px") == (7, 3)
    # 5 arcmin is exactly 14.29 px -> 15; 7 arcmin is exactly 20 px
    assert tess.parse_size(5 / 60, 7 / 60, "d") == (15, 20)


@pytest.mark.parametrize("x,y,units", [(5, 5, "m"), (0, 5, "px"), (5, -1, "px"), (float("inf"), 5, "px"),
                                       ("abc", 5, "px"), (101, 100, "px"), (1.0, 1.0, "d")])
def test_bad_sizes_are_refused_with_a_message(x, y, units):
    with pytest.raises(BadRequest, match="."):
        tess.parse_size(x, y, units)


# ------------------------------------------------------------------ fixed-target TPFs
def _open(data: bytes) -> fits.HDUList:
    hdul = fits.open(io.BytesIO(data))
    hdul.verify("exception")  # every card and the structure are standard FITS
    return hdul


def test_seed_doc_sector_33_cutout_matches_the_documented_info():
    files = tess.cutout_files(107.18696, -70.50919, 5, 5, "px", sectors=[33])
    assert [name for name, _ in files] == ["tess-s0033-4-1_107.186960_-70.509190_5x5_astrocut.fits"]
    hdul = _open(files[0][1])
    info = hdul.info(output=False)
    assert [(row[1], row[3]) for row in info] == [("PRIMARY", "PrimaryHDU"), ("PIXELS", "BinTableHDU"),
                                                  ("APERTURE", "ImageHDU")]
    assert info[1][5] == "3495R x 12C"
    assert info[1][6] == "[D, E, J, 25J, 25E, 25E, 25E, 25E, J, E, E, 38A]"
    assert info[2][5] == (5, 5) and info[2][6] == "int32"


def test_seed_doc_download_name_for_5_arcmin_in_sector_9():
    files = tess.cutout_files(107.18696, -70.50919, 5 / 60, 5 / 60, "d", sectors=9, max_cadences=3)
    assert [name for name, _ in files] == ["tess-s0009-4-1_107.186960_-70.509190_15x15_astrocut.fits"]
    assert _open(files[0][1])["PIXELS"].data["FLUX"].shape == (3, 15, 15)


def test_tpf_headers_and_columns_follow_astrocut_1x():
    (name, data), = tess.cutout_files(135.1408, -5.1915, 4, 3, "px", sectors=[34], max_cadences=50)
    hdul = _open(data)
    p, t, a = hdul[0].header, hdul["PIXELS"], hdul["APERTURE"]
    assert name == "tess-s0034-1-2_135.140800_-5.191500_4x3_astrocut.fits"
    assert (p["ORIGIN"], p["CREATOR"], p["FFI_TYPE"], p["TELESCOP"]) == ("STScI/MAST", "astrocut", "SPOC", "TESS")
    assert (p["SECTOR"], p["CAMERA"], p["CCD"]) == (34, 1, 2)
    assert p["TICID"] is None and p["OBJECT"] == ""
    assert (p["TIMESYS"], p["BJDREFI"], p["BJDREFF"], p["TIMEUNIT"]) == ("TDB", 2457000, 0.0, "d")
    assert (p["RA_OBJ"], p["DEC_OBJ"]) == (135.1408, -5.1915)
    assert p["TELAPSE"] == pytest.approx(p["TSTOP"] - p["TSTART"])
    assert p["DATE-OBS"].endswith("Z") and p["DATE-OBS"] < p["DATE-END"]
    h = t.header
    assert [t.columns[i].name for i in range(12)] == [
        "TIME", "TIMECORR", "CADENCENO", "RAW_CNTS", "FLUX", "FLUX_ERR", "FLUX_BKG", "FLUX_BKG_ERR",
        "QUALITY", "POS_CORR1", "POS_CORR2", "FFI_FILE"]
    assert (h["TUNIT1"], h["TUNIT5"], h["TDIM5"], h["TNULL4"]) == ("BJD - 2457000, days", "e-/s", "(4, 3)", -1)
    assert h["BJDREFI"] == 2457000 and h["TIMESYS"] == "TDB" and h["SECTOR"] == 34  # inherited
    assert h["TIMEDEL"] == pytest.approx(600 / 86400) and h["EXPOSURE"] == pytest.approx(0.792 * 600 / 86400)
    assert h["CDPP0_5"] is None and h["WCS_FFI"].endswith("-s_ffic.fits")
    assert "1CRV4P" not in h and "1CTYP5" not in h  # no per-column WCS (astrocut >= 1.0)
    d = t.data
    assert d["FLUX"].shape == (50, 3, 4) and d["FLUX"].dtype == np.dtype(">f4")
    assert np.all(d["CADENCENO"] == 0) and np.all(d["RAW_CNTS"] == -1)
    assert np.all(d["FLUX_BKG"] == 0) and np.all(d["POS_CORR1"] == 0)
    assert np.all(np.diff(d["TIME"]) > 0)
    assert all(len(f) == 38 and f.startswith("tess20") and "-s0034-1-2-" in f for f in d["FFI_FILE"])
    assert all(hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1 for hdu in hdul)
    assert a.data.dtype == np.dtype(">i4") and a.data.shape == (3, 4)
    assert (a.header["WCS_MSEP"], a.header["WCS_SIG"], a.header["CTYPE1"]) == (0.0, 0.0, "RA---TAN")


def test_cadences_follow_the_eras_and_carry_quality_flags():
    assert len(tess.sector_times(33)) == 3495
    assert len(tess.sector_times(1)) == 1282
    for sector, step, lo, hi in [(5, 1800, 1100, 1300), (40, 600, 3300, 3700), (70, 200, 10000, 11200)]:
        t = tess.sector_times(sector)
        assert lo <= len(t) <= hi
        dt = np.diff(t) * 86400
        assert np.median(dt) == pytest.approx(step)
        assert dt.max() > 86400 * 0.9  # the orbit gap
    (_, data), = tess.cutout_files(135.1408, -5.1915, 3, 3, "px", sectors=[8])
    q = _open(data)["PIXELS"].data["QUALITY"]
    assert 2 <= (q & 32).astype(bool).sum() <= 12 and (q & 128).any() and (q == 0).mean() > 0.95


def test_max_cadences_keeps_the_first_cadences_and_pixels_are_pure():
    full = _open(tess.cutout_files(135.1408, -5.1915, 6, 6, "px", sectors=[8])[0][1])["PIXELS"].data
    capped = _open(tess.cutout_files(135.1408, -5.1915, 6, 6, "px", sectors=[8], max_cadences=40)[0][1])
    d = capped["PIXELS"].data
    assert len(d) == 40
    np.testing.assert_array_equal(d["TIME"], full["TIME"][:40])
    np.testing.assert_array_equal(d["FLUX"], full["FLUX"][:40])
    # the same request gives the same bytes
    a = tess.cutout_files(135.1408, -5.1915, 6, 6, "px", sectors=[8], max_cadences=40)
    assert a == tess.cutout_files(135.1408, -5.1915, 6, 6, "px", sectors=[8], max_cadences=40)


def test_overlapping_cutouts_agree_pixel_for_pixel_with_each_other_and_with_ccd_pixels():
    ccd = CcdId(61, 1, 2)
    ra, dec = 135.1408, -5.1915
    w = tess.ccd_wcs(ccd)
    x, y = w.world_to_pixel_values(ra, dec)
    ra2, dec2 = w.pixel_to_world_values(x + 3.2, y - 2.1)
    fa = tess.cutout_files(ra, dec, 9, 7, "px", sectors=[61], max_cadences=30)[0][1]
    fb = tess.cutout_files(ra2, dec2, 8, 10, "px", sectors=[61], max_cadences=30)[0][1]
    ra0, ca0 = tess.cutout_window(ccd, ra, dec, 9, 7)
    rb0, cb0 = tess.cutout_window(ccd, ra2, dec2, 8, 10)
    da, db = _open(fa)["PIXELS"].data, _open(fb)["PIXELS"].data
    r = np.arange(max(ra0, rb0), min(ra0 + 7, rb0 + 10))
    c = np.arange(max(ca0, cb0), min(ca0 + 9, cb0 + 8))
    assert len(r) >= 3 and len(c) >= 3
    sub_a = da["FLUX"][:, r - ra0][:, :, c - ca0]
    sub_b = db["FLUX"][:, r - rb0][:, :, c - cb0]
    np.testing.assert_array_equal(sub_a, sub_b)
    flux, err = tess.ccd_pixels(ccd, r, c, np.arange(30))
    np.testing.assert_array_equal(flux, sub_a)
    np.testing.assert_array_equal(err, da["FLUX_ERR"][:, r - ra0][:, :, c - ca0])


def test_cutout_hanging_off_the_science_area_is_nan_there_with_aperture_zero():
    ccd = CcdId(8, 1, 1)
    w = tess.ccd_wcs(ccd)
    ra, dec = w.pixel_to_world_values(45.2, 2.3)  # near the first science column and row
    files = dict(tess.cutout_files(float(ra), float(dec), 9, 9, "px", sectors=[8], max_cadences=5))
    data = files[tess.cutout_name(ccd, float(ra), float(dec), 9, 9)]
    hdul = _open(data)
    ap = hdul["APERTURE"].data
    flux = hdul["PIXELS"].data["FLUX"]
    err = hdul["PIXELS"].data["FLUX_ERR"]
    row0, col0 = tess.cutout_window(ccd, float(ra), float(dec), 9, 9)
    rows, cols = row0 + np.arange(9), col0 + np.arange(9)
    on = ((rows >= 0) & (rows < 2048))[:, None] & ((cols >= 44) & (cols < 2092))[None, :]
    assert 0 < on.sum() < 81
    np.testing.assert_array_equal(ap, on.astype(np.int32))
    assert np.all(np.isnan(flux[:, ~on])) and np.all(np.isnan(err[:, ~on]))
    assert np.all(np.isfinite(flux[:, on]))


def test_a_bright_isolated_star_appears_where_the_aperture_wcs_puts_it():
    ccd = CcdId(88, 1, 2)
    stars = sky.stars_near(135.1408, -5.1915, 1.5)
    checked = 0
    for i in np.argsort(stars["tmag"]):
        ra, dec, flux = stars["ra"][i], stars["dec"][i], stars["flux"][i]
        if ccd not in tess.sectors_at(ra, dec):
            continue
        near = sky.stars_near(ra, dec, 6 * tess.TESS_PIXEL_SCALE_DEG)
        if np.sort(near["flux"])[-2:-1].sum() > 0.02 * flux:
            continue  # a neighbour would pull the centroid
        (_, data), = tess.cutout_files(ra, dec, 7, 7, "px", sectors=[88], max_cadences=20)
        hdul = _open(data)
        x, y = WCS(hdul["APERTURE"].header).world_to_pixel_values(ra, dec)
        img = np.median(hdul["PIXELS"].data["FLUX"], axis=0).astype(float)
        img -= np.median(img[[0, -1], :])
        yy, xx = np.mgrid[:7, :7]
        core = (xx - round(float(x))) ** 2 + (yy - round(float(y))) ** 2 <= 2
        cx, cy = (img * xx)[core].sum() / img[core].sum(), (img * yy)[core].sum() / img[core].sum()
        assert np.unravel_index(np.argmax(img), img.shape) == (round(float(y)), round(float(x)))
        assert abs(cx - x) < 0.35 and abs(cy - y) < 0.35
        assert img[core].sum() == pytest.approx(flux * 0.83, rel=0.15)  # PSF mass within r^2 <= 2
        checked += 1
        if checked == 3:
            break
    assert checked == 3


def test_lightkurve_reads_the_tpf_and_agrees_with_the_truth(tmp_path):
    lk = pytest.importorskip("lightkurve")
    from astropy.coordinates import SkyCoord

    ra, dec = tess.tic_position(307210830)
    files = tess.cutout_files(ra, dec, 11, 9, "px", max_cadences=120)
    assert len(files) >= 1
    for name, data in files:
        ccd = CcdId(*map(int, name.split("_")[0][6:].split("-")))
        path = tmp_path / name
        path.write_bytes(data)
        tpf = lk.read(str(path), quality_bitmask="none")
        assert (tpf.sector, tpf.camera, tpf.ccd) == tuple(ccd)
        assert tpf.shape == (120, 9, 11)
        np.testing.assert_array_equal(tpf.time.value, tess.sector_times(ccd.sector)[:120])
        assert tpf.time.format == "btjd" and tpf.time.scale == "tdb"
        row0, col0 = tess.cutout_window(ccd, ra, dec, 11, 9)
        flux, err = tess.ccd_pixels(ccd, row0 + np.arange(9), col0 + np.arange(11), np.arange(120))
        np.testing.assert_array_equal(tpf.flux.value, flux)
        np.testing.assert_array_equal(tpf.flux_err.value, err)
        assert str(tpf.flux.unit) == "electron / s"
        x, y = tpf.wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
        fx, fy = tess.ccd_wcs(ccd).world_to_pixel_values(ra, dec)
        assert float(x) == pytest.approx(fx - col0, abs=1e-6)
        assert float(y) == pytest.approx(fy - row0, abs=1e-6)


def test_transit_depth_is_recoverable_from_cutout_photometry():
    # the pinned Tmag 10.5 star at the seed position, sector 33 (3495 cadences of 10 min)
    truth = tess.star_truth(107.18696, -70.50919)
    assert truth.tic_id == 1000000001
    (_, data), = tess.cutout_files(107.18696, -70.50919, 9, 9, "px", sectors=[33])
    d = _open(data)["PIXELS"].data
    flux = d["FLUX"].astype(float)
    bkg = np.median(np.concatenate([flux[:, 0, :], flux[:, -1, :]], axis=1), axis=1)
    yy, xx = np.mgrid[:9, :9]
    lc = np.sum(flux[:, (xx - 4) ** 2 + (yy - 4) ** 2 <= 9] - bkg[:, None], axis=1)
    model = sky.variability(d["TIME"], truth.period, truth.epoch, truth.duration, truth.depth)
    in_tr = model < 1 - 0.9 * truth.depth
    assert in_tr.sum() >= 3
    out = model == 1
    measured = 1 - np.median(lc[in_tr]) / np.median(lc[out])
    assert measured == pytest.approx(truth.depth, rel=0.2, abs=0.0015)


def test_cutout_files_refuses_bad_requests_and_returns_nothing_off_coverage():
    with pytest.raises(BadRequest, match="units"):
        tess.cutout_files(10, 10, 5, 5, "arcmin")
    with pytest.raises(BadRequest, match="too large"):
        tess.cutout_files(107.18696, -70.50919, 200, 200, "px")
    with pytest.raises(BadRequest):
        tess.cutout_files(float("nan"), 0, 5, 5, "px")
    assert tess.cutout_files(107.18696, -70.50919, 5, 5, "px", sectors=[50]) == []
    rng = np.random.default_rng(5)
    for _ in range(200):  # find unobserved sky
        ra, dec = rng.uniform(0, 360), rng.uniform(-60, 60)
        if not tess.sectors_at(ra, dec):
            assert tess.cutout_files(ra, dec, 5, 5, "px") == []
            break
    else:
        pytest.fail("no unobserved position found")


# ------------------------------------------------------------------ moving targets
def test_eleonora_sector_6_moving_cutout_matches_the_docs():
    files = tess.moving_cutout_files("Eleonora", None, 5, 5, "px", sectors=[6])
    assert len(files) == 1
    name, data = files[0]
    assert name.startswith("Eleonora_") and name.endswith("_5-x-5_astrocut.fits")
    hdul = _open(data)
    info = hdul.info(output=False)
    assert info[1][5] == "355R x 16C"
    assert info[1][6] == "[D, E, J, 25J, 25E, 25E, 25E, 25E, J, E, E, 38A, D, D, D, D]"
    assert info[2][5] == (2136, 2078) and info[2][6] == "int32"
    ap = hdul["APERTURE"]
    assert ap.data.shape == (2078, 2136)
    assert WCS(ap.header).wcs.crpix.tolist() == [1068.5, 1024.5]
    d = hdul["PIXELS"].data
    assert np.all(np.diff(d["TIME"]) > 0)
    assert hdul[0].header["OBJECT"] == "Eleonora"
    assert hdul[0].header["TSTART"] == d["TIME"][0] and hdul[0].header["TSTOP"] == d["TIME"][-1]
    assert "1CTYP5" not in hdul["PIXELS"].header
    # TGT_RA/TGT_DEC follow the truth, and the object sits at TGT_X/TGT_Y
    ra, dec = tess.moving_truth("Eleonora", CcdId(6, 1, 1), d["TIME"])
    np.testing.assert_allclose(d["TGT_RA"], ra, atol=1e-9)
    np.testing.assert_allclose(d["TGT_DEC"], dec, atol=1e-9)
    x, y = WCS(ap.header).world_to_pixel_values(d["TGT_RA"], d["TGT_DEC"])
    assert np.all((x - np.floor(x - 2 + 0.5) - d["TGT_X"]) < 1e-6)
    assert np.all((np.abs(d["TGT_X"] - 2) <= 0.5) & (np.abs(d["TGT_Y"] - 2) <= 0.5))
    peak = np.array([np.unravel_index(np.argmax(f), f.shape) for f in d["FLUX"]])
    assert np.mean(peak == 2) > 0.9
    # every pixel a window used is marked in the FFI-sized APERTURE
    assert ap.data.sum() >= 355 * 5


def test_moving_cutout_cap_and_other_objects():
    capped = tess.moving_cutout_files("Eleonora", "smallbody", 3, 3, "px", sectors=[6], max_cadences=25)
    d = _open(capped[0][1])["PIXELS"].data
    assert len(d) == 25 and d["FLUX"].shape == (25, 3, 3)
    ceres = tess.moving_cutout_files("Ceres", None, 3, 3, "px", max_cadences=5)
    assert [int(_open(b)[0].header["SECTOR"]) for _, b in ceres] == [29, 43, 44, 92, 97]
    assert len({n for n, _ in ceres}) == 5
    assert tess.moving_cutout_files("Ceres", None, 3, 3, "px", sectors=[43], max_cadences=5)[0][0] == ceres[1][0]
    for i in range(8):
        name = f"2001 XY{i}"
        files = tess.moving_cutout_files(name, None, 3, 3, "px", max_cadences=3)
        assert len(files) <= len(tess.moving_sectors(name))
        for fname, _ in files:
            assert fname.startswith("2001_XY") and "/" not in fname
    hostile = tess.moving_cutout_files("../../etc/passwd", None, 3, 3, "px", max_cadences=2)
    assert all(".." not in n and "/" not in n for n, _ in hostile)


# ------------------------------------------------------------------ through the HTTP server
def test_the_served_zip_holds_exactly_these_files(emulator):
    import zipfile
    from urllib.parse import urljoin

    import requests

    url = urljoin(emulator.url.rstrip("/") + "/", "tesscut/api/v0.1/astrocut")
    params = {"ra": 107.18696, "dec": -70.50919, "x": 7, "y": 4, "units": "px"}
    reply = requests.get(url, params=params, timeout=60)
    assert reply.status_code == 200
    with zipfile.ZipFile(io.BytesIO(reply.content)) as zf:
        served = {n: zf.read(n) for n in zf.namelist()}
    expected = dict(tess.cutout_files(107.18696, -70.50919, 7, 4, "px", max_cadences=emulator.max_cadences,
                                      seed=emulator.seed))
    assert served == expected
    assert len(expected) == len(tess.sectors_at(107.18696, -70.50919, seed=emulator.seed))
    sectors = requests.get(urljoin(emulator.url.rstrip("/") + "/", "tesscut/api/v0.1/moving_target/sector"),
                           params={"obj_id": "Ceres"}, timeout=60).json()["results"]
    assert [(r["sector"], r["camera"], r["ccd"]) for r in sectors] == [
        ("29", "1", "4"), ("43", "3", "3"), ("44", "2", "4"), ("92", "4", "3"), ("97", "1", "4")]


@pytest.mark.parametrize("seed", [1, 7])
def test_pins_hold_for_other_seeds_while_the_rest_of_the_sky_changes(seed):
    assert tess.sectors_at(135.1408, -5.1915, seed=seed) == [
        CcdId(8, 1, 1), CcdId(34, 1, 2), CcdId(61, 1, 2), CcdId(88, 1, 2)]
    assert tess.sectors_at(*tess.tic_position(32449963, seed=seed), seed=seed) == [CcdId(10, 1, 4)]
    assert tess.moving_sectors("Ceres", seed=seed) == tess.moving_sectors("Ceres")
    d = _open(tess.moving_cutout_files("Eleonora", None, 5, 5, "px", sectors=[6], seed=seed)[0][1])
    assert len(d["PIXELS"].data) == 355
    assert tess.tic_position(777, seed=seed) != tess.tic_position(777)
    assert tess.layout(seed).slots != tess.layout(0).slots


@pytest.mark.parametrize("obj_id", ["Ünïcode ☄ object", "x" * 300, "O'Brien's comet", "a\nb\tc"])
def test_moving_target_names_from_the_wire_make_valid_files(obj_id):
    files = []
    for i in range(40):  # find a variant the hashed sky places on a CCD
        files = tess.moving_cutout_files(f"{obj_id}{i}", None, 3, 3, "px", max_cadences=2)
        if files:
            break
    assert files
    printable = "".join(ch if " " <= ch <= "~" else "?" for ch in f"{obj_id}{i}")
    for name, data in files:
        assert name.isascii() and "/" not in name and len(name) < 200
        obj = _open(data)[0].header["OBJECT"]
        assert obj == printable[:len(obj)] and len(obj) >= min(len(printable), 60)


@settings(max_examples=12, deadline=None)
@given(dx=hst.floats(-6, 6), dy=hst.floats(-6, 6), w1=hst.integers(1, 9), h1=hst.integers(1, 9),
       w2=hst.integers(1, 9), h2=hst.integers(1, 9))
def test_any_two_cutouts_agree_with_ccd_pixels_bit_for_bit(dx, dy, w1, h1, w2, h2):
    ccd = CcdId(34, 1, 2)
    w = tess.ccd_wcs(ccd)
    x0, y0 = w.world_to_pixel_values(135.1408, -5.1915)
    for (ox, oy, nx, ny) in ((0.0, 0.0, w1, h1), (dx, dy, w2, h2)):
        ra, dec = (float(v) for v in w.pixel_to_world_values(x0 + ox, y0 + oy))
        files = dict(tess.cutout_files(ra, dec, nx, ny, "px", sectors=[34], max_cadences=6))
        d = _open(files[tess.cutout_name(ccd, ra, dec, nx, ny)])["PIXELS"].data
        row0, col0 = tess.cutout_window(ccd, ra, dec, nx, ny)
        # the window is centred on the target pixel
        assert abs(row0 + (ny - 1) / 2 - (y0 + oy)) <= 0.5 + 1e-9
        assert abs(col0 + (nx - 1) / 2 - (x0 + ox)) <= 0.5 + 1e-9
        flux, err = tess.ccd_pixels(ccd, row0 + np.arange(ny), col0 + np.arange(nx), np.arange(6))
        np.testing.assert_array_equal(d["FLUX"], flux)
        np.testing.assert_array_equal(d["FLUX_ERR"], err)


def test_flux_err_is_the_true_noise_sigma():
    # second differences in time cancel the smooth background drift and leave sqrt(6) sigma
    # of noise (transit ramps are too rare to matter)
    ccd = CcdId(33, 4, 1)
    flux, err = tess.ccd_pixels(ccd, np.arange(600, 640), np.arange(900, 940), np.arange(400))
    z = np.diff(flux.astype(float), n=2, axis=0) / (np.sqrt(6) * err[1:-1].astype(float))
    z = z[np.isfinite(z)]
    assert z.size > 500_000
    assert np.median(np.abs(z)) / 0.6745 == pytest.approx(1.0, abs=0.03)
    assert abs(np.mean(z)) < 0.01
