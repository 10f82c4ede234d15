"""Aperture photometry and stitching: lightkurve 2.6.0 as oracle, the emulator's truth as target."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mastcut_dask import InvalidQueryError, aperture_photometry, stitch, tpf_to_xarray
from mastcut_dask.emulator.tess import cutout_files, moving_cutout_files, star_truth
from mastcut_dask.decode.photometry import QUALITY_BITMASKS, aperture_mask, quality_mask, threshold_mask

TIC_307210830 = (124.5317563, -68.313)
TIC_1000000001 = (107.18696, -70.50919)  # isolated (no neighbour within 3 px brighter than 1 %)


def _lk(tmp_path, name, raw, bitmask="none"):
    import lightkurve as lk

    path = tmp_path / name
    path.write_bytes(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lk.read(str(path), quality_bitmask=bitmask)


@pytest.fixture(scope="module")
def regular():
    return cutout_files(*TIC_307210830, 9, 7, "px", sectors=[2], max_cadences=200)[0]


@pytest.fixture(scope="module")
def moving():
    return moving_cutout_files("Eleonora", "smallbody", 5, 5, "px", sectors=[6], max_cadences=100)[0]


def _disc(ds, radius):
    yy, xx = np.mgrid[: ds.sizes["y"], : ds.sizes["x"]]
    return (xx - ds.attrs["target_x"]) ** 2 + (yy - ds.attrs["target_y"]) ** 2 <= radius ** 2


def _compare(lc, lklc):
    np.testing.assert_array_equal(lc.time.values, lklc.time.value)
    np.testing.assert_array_equal(lc.quality.values, lklc.quality.value)
    for name in ("flux", "flux_err"):
        np.testing.assert_allclose(lc[name].values, lklc[name].value, rtol=2e-6, atol=0)
        assert lc[name].dtype == np.float32
    for name in ("centroid_col", "centroid_row"):
        np.testing.assert_allclose(lc[name].values, lklc[name].value, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("aperture", ["all", "threshold", 2.5, "aperture"])
def test_regular_tpf_equals_lightkurve(regular, tmp_path, aperture):
    ds = tpf_to_xarray(regular[1])
    tpf = _lk(tmp_path, *regular)
    mask = aperture_mask(ds, aperture).values
    if aperture == 2.5:
        np.testing.assert_array_equal(mask, _disc(ds, 2.5))
    lc = aperture_photometry(ds, aperture)
    _compare(lc, tpf.to_lightcurve(aperture_mask=mask))
    assert lc.attrs["n_pixels"] == int(mask.sum()) > 0
    assert lc.attrs["sector"] == 2 and lc.flux.attrs["units"] == "electron / s"


def test_threshold_mask_equals_lightkurve(regular, moving, tmp_path):
    for name, raw in (regular, moving):
        ds = tpf_to_xarray(raw)
        tpf = _lk(tmp_path, name, raw)
        for threshold in (1.0, 3.0, 10.0):
            np.testing.assert_array_equal(threshold_mask(ds, threshold).values,
                                          tpf.create_threshold_mask(threshold=threshold))
        np.testing.assert_array_equal(threshold_mask(ds, 3, reference_pixel=None).values,
                                      tpf.create_threshold_mask(reference_pixel=None))


@pytest.mark.parametrize("aperture", ["all", "threshold", "centre-disc"])
def test_moving_tpf_equals_lightkurve(moving, tmp_path, aperture):
    ds = tpf_to_xarray(moving[1])
    tpf = _lk(tmp_path, *moving)
    if aperture == "centre-disc":
        yy, xx = np.mgrid[:5, :5]
        aperture = (xx - 2) ** 2 + (yy - 2) ** 2 <= 1.5 ** 2
    mask = aperture_mask(ds, aperture).values
    _compare(aperture_photometry(ds, aperture), tpf.to_lightcurve(aperture_mask=mask))


def test_moving_target_disc_follows_the_track(moving):
    ds = tpf_to_xarray(moving[1])
    mask = aperture_mask(ds, 1.2)
    assert mask.dims == ("time", "y", "x")
    yy, xx = np.mgrid[:5, :5]
    for i in (0, 37, 99):
        expected = (xx - ds.tgt_x.values[i]) ** 2 + (yy - ds.tgt_y.values[i]) ** 2 <= 1.44
        np.testing.assert_array_equal(mask.values[i], expected)
    lc = aperture_photometry(ds, 1.2)
    manual = np.array([np.nansum(ds.flux.values[i][mask.values[i]]) for i in range(ds.sizes["time"])])
    np.testing.assert_allclose(lc.flux.values, manual, rtol=2e-6)


@pytest.mark.parametrize("bitmask", ["default", "hard", "hardest", 32])
def test_quality_bitmask_drops_cadences_like_lightkurve(regular, tmp_path, bitmask):
    ds = tpf_to_xarray(regular[1])
    assert (ds.quality.values != 0).any()  # the emulator flags momentum dumps
    tpf = _lk(tmp_path, *regular, bitmask=bitmask)
    mask = _disc(ds, 2.0)
    lc = aperture_photometry(ds, mask, quality_bitmask=bitmask)
    _compare(lc, tpf.to_lightcurve(aperture_mask=mask))
    assert lc.attrs["quality_bitmask"] == QUALITY_BITMASKS.get(bitmask, bitmask)
    assert lc.sizes["time"] == int(quality_mask(ds, bitmask).sum()) < ds.sizes["time"]


def test_nan_times_dropped_by_any_bitmask_but_none(regular):
    ds = tpf_to_xarray(regular[1])
    time = ds.time.values.copy()
    time[[3, 5]] = np.nan
    ds = ds.assign_coords(time=("time", time, ds.time.attrs))
    assert aperture_photometry(ds, "all", quality_bitmask="none").sizes["time"] == ds.sizes["time"]
    kept = aperture_photometry(ds, "all", quality_bitmask=0x0)
    assert kept.sizes["time"] == ds.sizes["time"]
    dropped = aperture_photometry(ds, "all", quality_bitmask=1 << 20)  # no such flag set: only NaN times go
    assert dropped.sizes["time"] == ds.sizes["time"] - 2


def test_all_nan_aperture_gives_nan_like_lightkurve(regular):
    ds = tpf_to_xarray(regular[1])
    flux = ds.flux.values.copy()
    flux[4] = np.nan
    flux[6, :, :] = 0.0
    ds["flux"] = (ds.flux.dims, flux, ds.flux.attrs)
    lc = aperture_photometry(ds, "all")
    assert np.isnan(lc.flux.values[4]) and np.isnan(lc.flux.values[6])
    assert np.isfinite(lc.flux.values[5])


def test_dask_backed_dataset_stays_lazy_and_matches(regular, tmp_path):
    path = tmp_path / regular[0]
    path.write_bytes(regular[1])
    lazy = tpf_to_xarray(path, chunks=64)
    eager = tpf_to_xarray(path)
    for aperture, background in (("threshold", None), (2.0, "local"), ("threshold", "local")):
        lc = aperture_photometry(lazy, aperture, background=background, quality_bitmask="default")
        assert lc.flux.chunks is not None  # nothing computed yet
        ref = aperture_photometry(eager, aperture, background=background, quality_bitmask="default")
        xr.testing.assert_allclose(lc.compute(), ref, rtol=1e-6)


def test_recovers_injected_transit_period_and_depth():
    """Full sector 1 (1282 cadences) of an isolated emulator star: BLS finds the truth.

    Tolerances: period within 0.5 %; BLS box depth within 15 % (the box includes ingress and
    egress); flat-bottom depth from the recovered light curve within 3 % of the truth.
    """
    from astropy.timeseries import BoxLeastSquares

    from mastcut_dask.emulator.sky import variability

    truth = star_truth(*TIC_1000000001)
    name, raw = cutout_files(*TIC_1000000001, 11, 11, "px", sectors=[1])[0]
    ds = tpf_to_xarray(raw)
    assert ds.sizes["time"] == 1282
    lc = aperture_photometry(ds, 2.5, background="local", quality_bitmask="default")
    ok = np.isfinite(lc.flux.values)
    t, f = lc.time.values[ok], lc.flux.values[ok].astype(float)
    f /= np.median(f)
    result = BoxLeastSquares(t, f).power(np.exp(np.linspace(np.log(1.0), np.log(12.0), 8000)),
                                         [0.1, 0.2, 0.3, 0.4], objective="snr")
    best = int(np.argmax(result.power))
    assert result.period[best] == pytest.approx(truth.period, rel=5e-3)
    assert result.depth[best] == pytest.approx(truth.depth, rel=0.15)
    model = variability(t, truth.period, truth.epoch, truth.duration, truth.depth)
    bottom = 1 - np.median(f[model == model.min()]) / np.median(f[model == 1])
    assert bottom == pytest.approx(truth.depth, rel=0.03)
    # without background subtraction the sky dilutes the transit
    raw_lc = aperture_photometry(ds, 2.5, quality_bitmask="default")
    g = raw_lc.flux.values[ok]
    assert 1 - np.median(g[model == model.min()]) / np.median(g[model == 1]) < 0.85 * truth.depth


def test_stitch_normalises_and_sorts_sectors():
    files = cutout_files(*TIC_307210830, 5, 5, "px", max_cadences=60)
    assert len(files) == 4
    lcs = [aperture_photometry(tpf_to_xarray(raw), 1.5, quality_bitmask="default") for _, raw in files[::-1]]
    joined = stitch(lcs)
    assert joined.sizes["time"] == sum(lc.sizes["time"] for lc in lcs)
    assert np.all(np.diff(joined.time.values) > 0)
    assert sorted(set(joined.sector.values.tolist())) == [1, 2, 9, 36]
    assert joined.sector.dims == ("time",)
    for sector in (1, 2, 9, 36):
        part = joined.flux.where(joined.sector == sector, drop=True)
        assert float(np.nanmedian(part)) == pytest.approx(1.0, abs=1e-6)
    one = lcs[0]
    np.testing.assert_allclose(joined.flux.where(joined.sector == one.attrs["sector"], drop=True).values,
                               one.flux.values / np.nanmedian(one.flux.values), rtol=1e-6)
    with pytest.raises(InvalidQueryError):
        stitch([])


def test_invalid_arguments_raise(regular):
    ds = tpf_to_xarray(regular[1])
    for bad in ({"aperture": "nope"}, {"aperture": -1.0}, {"aperture": np.ones((2, 2), bool)},
                {"aperture": np.ones((7, 9), int)}, {"quality_bitmask": "soft"},
                {"quality_bitmask": -1}, {"background": "global"}):
        with pytest.raises(InvalidQueryError):
            aperture_photometry(ds, **bad)
    with pytest.raises(InvalidQueryError, match="outside the aperture"):
        aperture_photometry(ds, "all", background="local")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(nx=st.integers(1, 8), ny=st.integers(1, 8), n_cad=st.integers(2, 30),
       radius=st.floats(0.5, 4.0), bitmask=st.sampled_from(["none", "default", "hardest"]))
def test_property_photometry_equals_lightkurve_over_shapes(tmp_path, nx, ny, n_cad, radius, bitmask):
    name, raw = cutout_files(*TIC_307210830, nx, ny, "px", sectors=[9], max_cadences=n_cad)[0]
    ds = tpf_to_xarray(raw)
    tpf = _lk(tmp_path, f"{nx}-{ny}-{n_cad}-{name}", raw, bitmask=bitmask)
    for aperture in ("all", radius, "threshold"):
        mask = aperture_mask(ds, aperture, quality_bitmask=bitmask).values
        if aperture == "threshold":
            np.testing.assert_array_equal(mask, tpf.create_threshold_mask())
        if not mask.any():
            continue  # lightkurve warns and returns zeros; nothing to compare
        _compare(aperture_photometry(ds, aperture, quality_bitmask=bitmask),
                 tpf.to_lightcurve(aperture_mask=mask))
