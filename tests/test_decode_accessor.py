"""The ``ds.mastcut`` accessor and chunked datasets written to zarr."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from mastcut_dask import DecodeError, InvalidQueryError, aperture_photometry, image_to_xarray, tpf_to_xarray
from mastcut_dask.emulator.tess import cutout_files
from mastcut_dask.emulator.zcut import zcut_cutout_files


@pytest.fixture(scope="module")
def tpf(tmp_path_factory):
    name, raw = cutout_files(124.5317563, -68.313, 6, 8, "px", sectors=[1], max_cadences=90)[0]
    path = tmp_path_factory.mktemp("acc") / name
    path.write_bytes(raw)
    return path


def test_lightcurve_and_mask_match_the_functions(tpf):
    ds = tpf_to_xarray(tpf)
    xr.testing.assert_identical(ds.mastcut.lightcurve(2.0, quality_bitmask="hard"),
                                aperture_photometry(ds, 2.0, quality_bitmask="hard"))
    assert ds.mastcut.aperture_mask("threshold").dtype == bool


def test_wcs_and_headers(tpf):
    ds = tpf_to_xarray(tpf)
    wcs = ds.mastcut.wcs()
    ra, dec = wcs.pixel_to_world_values(3, 5)
    assert (ra, dec) == pytest.approx((ds.ra.values[5, 3], ds.dec.values[5, 3]), abs=1e-10)
    assert [h["EXTNAME"] for h in ds.mastcut.headers()[1:]] == ["PIXELS", "APERTURE"]
    broken = ds.assign_attrs(wcs_valid=False)
    with pytest.raises(DecodeError, match="no valid WCS"):
        broken.mastcut.wcs()
    for bad in (3, -1, "2"):
        with pytest.raises(InvalidQueryError, match="HDUs 0 to 2"):
            ds.mastcut.wcs(bad)
    _, raw = zcut_cutout_files(189.49206, 62.20615, 10, 10, "px", survey="candels_gn_60mas")[0]
    img = image_to_xarray(raw)
    assert img.mastcut.wcs().pixel_to_world_values(2, 4) == pytest.approx(
        (img.ra.values[4, 2], img.dec.values[4, 2]), abs=1e-10)


def test_plot_frame_draws_the_frame_when_matplotlib_exists(tpf):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    ds = tpf_to_xarray(tpf)
    image = ds.mastcut.plot_frame(4)
    np.testing.assert_array_equal(image.get_array(), ds.flux.values[4])
    assert image.origin == "lower"


def test_chunked_dataset_writes_to_zarr_and_reads_back(tpf, tmp_path):
    lazy = tpf_to_xarray(tpf, chunks=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lazy.to_zarr(tmp_path / "lazy.zarr", zarr_format=3, consolidated=False)
        back = xr.open_zarr(tmp_path / "lazy.zarr", consolidated=False)
    assert back.flux.chunks[0][0] == 32
    xr.testing.assert_identical(back.load(), tpf_to_xarray(tpf))
