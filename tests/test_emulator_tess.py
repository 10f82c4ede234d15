"""The emulator's TESS sky and target pixel files, checked against the pinned facts, astropy and lightkurve."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

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
