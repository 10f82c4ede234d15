"""Size and coordinate parsing: the same as astroquery 0.4.11 where it accepts input, stricter where it should be."""

from __future__ import annotations

import math
import pickle
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astroquery.exceptions import InputWarning as AqInputWarning
from astroquery.exceptions import InvalidQueryError as AqInvalidQueryError
from astroquery.mast.cutouts import _parse_cutout_size

from mastcut_dask.exceptions import InputWarning, InvalidQueryError
from mastcut_dask.services.request import CutoutRequest
from mastcut_dask.targets.position import parse_coordinates, parse_radius
from mastcut_dask.targets.size import CutoutSize, parse_size
from mastcut_dask.targets.target import Target, make_target_id

SAME_AS_ASTROQUERY = [
    5,
    7.5,
    np.int64(9),
    [3, 7],
    (4, 6),
    np.array([8, 2]),
    5 * u.pixel,
    [3, 7] * u.pixel,
    [1, 2] * u.arcmin,
    30 * u.arcsec,
    [5, 5] * u.arcmin,
    0.01 * u.deg,
    [0.2, 0.1] * u.deg,
]


@pytest.mark.parametrize("size", SAME_AS_ASTROQUERY, ids=repr)
def test_parse_size_matches_astroquery(size):
    theirs = _parse_cutout_size(size)
    ours = parse_size(size)
    assert ours.units == theirs["units"]
    # astroquery writes the values with str(): the wire text must be identical.
    assert str(ours.x) == str(theirs["x"])
    assert str(ours.y) == str(theirs["y"])


def test_two_elements_are_ny_nx():
    s = parse_size([3, 7])
    assert (s.x, s.y) == (7, 3)
    assert s.wire() == {"x": 7, "y": 3, "units": "px"}


def test_too_many_dimensions_warns_like_astroquery():
    with pytest.warns(AqInputWarning, match="Too many dimensions"):
        theirs = _parse_cutout_size([3, 4, 5])
    with pytest.warns(InputWarning, match="Too many dimensions in cutout size, only the first two will be used."):
        ours = parse_size([3, 4, 5])
    assert (ours.x, ours.y) == (theirs["x"], theirs["y"])


def test_bad_unit_same_message_as_astroquery():
    with pytest.raises(AqInvalidQueryError) as theirs:
        _parse_cutout_size(5 * u.s)
    with pytest.raises(InvalidQueryError) as ours:
        parse_size(5 * u.s)
    assert str(ours.value) == str(theirs.value) == "Cutout size must be in pixels or angular quantity."


@pytest.mark.parametrize("size", [0, -3, [5, 0], [5, -1], float("nan"), float("inf"), [np.nan, 4],
                                  0 * u.arcmin, -1 * u.pixel, "five", None, True, []])
def test_refused_sizes(size):
    with pytest.raises(InvalidQueryError):
        parse_size(size)


def test_oversized_cutouts_refused_in_pixels_and_in_angle():
    parse_size(100)            # 10,000 pixels: the limit itself is allowed
    with pytest.raises(InvalidQueryError, match="10000"):
        parse_size(101)
    with pytest.raises(InvalidQueryError, match="smaller"):
        parse_size([50, 201])
    # 40 arcmin at 21"/px is ~114 px a side on TESS
    with pytest.raises(InvalidQueryError):
        parse_size(40 * u.arcmin)
    # ...but fine where no pixel scale is known (ZCut/HAPCut pixels are far smaller, checked server-side)
    assert parse_size(40 * u.arcsec, pixel_arcsec=None).units == "d"


def test_units_keyword():
    assert parse_size([5, 10], units="px") == CutoutSize(10, 5, "px")
    s = parse_size(3, units="arcmin")
    assert s.units == "d" and math.isclose(s.x, 0.05)
    with pytest.raises(InvalidQueryError, match="units"):
        parse_size(5, units="furlongs")
    with pytest.raises(InvalidQueryError, match="units"):
        parse_size(5, units="kg")


def test_parse_coordinates_forms():
    sc = SkyCoord(135.1408, -5.1915, unit="deg")
    assert parse_coordinates(sc) == pytest.approx((135.1408, -5.1915))
    gal = sc.galactic
    assert parse_coordinates(gal) == pytest.approx((135.1408, -5.1915))
    with pytest.warns(InputWarning, match="ICRS"):
        assert parse_coordinates("10.5 -20.25") == pytest.approx((10.5, -20.25))
    with pytest.warns(InputWarning):
        assert parse_coordinates("10.5, -20.25") == pytest.approx((10.5, -20.25))
    with pytest.warns(InputWarning):
        ra, dec = parse_coordinates("00h42m44.3s +41d16m09s")
    assert ra == pytest.approx(10.684583, abs=1e-5) and dec == pytest.approx(41.269167, abs=1e-5)
    assert parse_coordinates((10, 20)) == (10.0, 20.0)
    assert parse_coordinates([10 * u.deg, 20 * u.deg]) == pytest.approx((10.0, 20.0))


@pytest.mark.parametrize("bad", ["", "M104 please", (10, 95), (float("nan"), 3), ("a", "b"), 42, (1, 2, 3)])
def test_parse_coordinates_refuses(bad):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        with pytest.raises(InvalidQueryError):
            parse_coordinates(bad)


def test_parse_radius():
    assert parse_radius(0) == 0.0
    assert parse_radius(2 * u.arcmin) == pytest.approx(0.03333333333333333)
    assert parse_radius("0d") == 0.0
    assert parse_radius("1 arcmin") == pytest.approx(1 / 60)
    with pytest.raises(InvalidQueryError):
        parse_radius(-1)
    with pytest.raises(InvalidQueryError):
        parse_radius("wide")


def test_records_are_frozen_and_pickle():
    t = Target(target_id=make_target_id("TIC 307210830"), name="TIC 307210830", ra=124.53, dec=-68.31,
               size=parse_size(7), sector=8)
    assert t.target_id == "tic_307210830"
    assert pickle.loads(pickle.dumps(t)) == t
    with pytest.raises(AttributeError):
        t.ra = 0  # type: ignore[misc]
    req = CutoutRequest.for_target("tesscut", t)
    assert (req.ra, req.dec, req.sector, req.size.x) == (124.53, -68.31, 8, 7)
    mt = Target(target_id="ceres", name="Ceres", moving=True, mt_type="smallbody")
    mreq = CutoutRequest.for_target("tesscut", mt)
    assert mreq.moving and mreq.obj_id == "Ceres" and mreq.obj_type == "smallbody" and mreq.ra is None
    with pytest.raises(InvalidQueryError, match="moving"):
        Target(target_id="x", name="Ceres", moving=True, ra=1.0, dec=2.0)
    with pytest.raises(InvalidQueryError, match="resolve"):
        CutoutRequest.for_target("tesscut", Target(target_id="m104", name="M104"))
    assert make_target_id(ra=10.5, dec=-20.25) == "ra010.500000_dec-20.250000"


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_side = st.one_of(st.integers(1, 100), st.floats(0.5, 100.0, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(st.one_of(_side, st.tuples(_side, _side).filter(lambda p: p[0] * p[1] <= 10_000),
                 st.tuples(st.floats(0.001, 0.05), st.floats(0.001, 0.05)).map(lambda p: list(p) * u.deg),
                 st.floats(1, 100).map(lambda v: v * u.arcsec)))
def test_any_valid_size_goes_on_the_wire_as_astroquery_sends_it(size):
    if not isinstance(size, u.Quantity) and np.isscalar(size) and size * size > 10_000:
        return
    theirs = _parse_cutout_size(size)
    ours = parse_size(size)
    assert (str(ours.x), str(ours.y), ours.units) == (str(theirs["x"]), str(theirs["y"]), theirs["units"])
