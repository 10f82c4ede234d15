"""TPF decoder on emulator files: lightkurve 2.6.0 as oracle, property tests, edited-file quirks.

Quirk files are made by editing emulator TPFs with astropy (never by a second TPF writer).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mastcut_dask import tpf_to_xarray
from mastcut_dask.emulator.tess import ccd_wcs, cutout_files, moving_cutout_files, sectors_at

TIC_307210830 = (124.5317563, -68.313)  # sectors 1, 2, 9, 36 in the emulator


def _lk_read(tmp_path, name, raw):
    import lightkurve as lk

    path = tmp_path / name
    path.write_bytes(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return path, lk.read(str(path), quality_bitmask="none")


def _edit(raw: bytes, edit) -> bytes:
    """Apply ``edit(hdul)`` to a copy of a FITS file and return the new bytes."""
    with fits.open(io.BytesIO(raw)) as hdul:
        hdul = fits.HDUList([hdu.copy() for hdu in hdul])
    hdul = edit(hdul) or hdul
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hdul.writeto(out, output_verify="silentfix")
    return out.getvalue()


@pytest.fixture(scope="module")
def regular():
    return cutout_files(*TIC_307210830, 7, 5, "px", sectors=[1], max_cadences=150)[0]


@pytest.fixture(scope="module")
def moving():
    return moving_cutout_files("Eleonora", "smallbody", 5, 5, "px", sectors=[6], max_cadences=120)[0]


@pytest.mark.parametrize("kind", ["regular", "moving"])
def test_rows_equal_lightkurve(kind, regular, moving, tmp_path):
    name, raw = regular if kind == "regular" else moving
    path, tpf = _lk_read(tmp_path, name, raw)
    ds = tpf_to_xarray(path)
    np.testing.assert_array_equal(ds.time.values, tpf.time.value)
    np.testing.assert_array_equal(ds.flux.values, tpf.flux.value)
    np.testing.assert_array_equal(ds.flux_err.values, tpf.flux_err.value)
    np.testing.assert_array_equal(ds.quality.values, tpf.quality)
    np.testing.assert_array_equal(ds.flux_bkg.values, tpf.flux_bkg.value)
    assert ds.attrs["sector"] == tpf.sector and ds.attrs["source_file"] == name
    assert ds.attrs["camera"] == tpf.camera and ds.attrs["ccd"] == tpf.ccd
    assert ds.attrs["quirks"] == sorted(ds.attrs["quirks"])
    assert "ffi_file_truncated" in ds.attrs["quirks"]  # astrocut's 38A column
    assert all(len(v) == 38 for v in ds.ffi_file.values)


def test_regular_tpf_has_sky_coords_from_aperture_wcs(regular, tmp_path):
    name, raw = regular
    path, tpf = _lk_read(tmp_path, name, raw)
    ds = tpf_to_xarray(raw)
    assert ds.attrs["wcs_valid"] is True and ds.attrs["column_wcs"] == "absent"  # astrocut >= 1.0
    assert "row" not in ds.coords  # astrocut >= 1.0 files carry no CCD position
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    sky = tpf.wcs.pixel_to_world(*np.meshgrid(np.arange(nx), np.arange(ny)))
    np.testing.assert_allclose(ds.ra.values, sky.ra.deg, atol=1e-9, rtol=0)
    np.testing.assert_allclose(ds.dec.values, sky.dec.deg, atol=1e-9, rtol=0)
    tx, ty = tpf.wcs.world_to_pixel_values(*TIC_307210830)
    assert (ds.attrs["target_x"], ds.attrs["target_y"]) == pytest.approx((float(tx), float(ty)))
    assert ds.time.attrs == {"units": "d", "reference": "BJD - 2457000", "scale": "tdb",
                             "long_name": "barycentric TESS Julian date (BTJD), mid-exposure"}


def test_moving_tpf_has_target_track_and_no_common_wcs(moving):
    name, raw = moving
    ds = tpf_to_xarray(raw)
    assert ds.attrs["moving"] is True and ds.attrs["wcs_valid"] is False
    assert "ra" not in ds.coords
    assert "aperture_not_cutout" in ds.attrs["quirks"]  # the full-FFI APERTURE of center_on_path
    with fits.open(io.BytesIO(raw)) as hdul:
        for col in ("TGT_X", "TGT_Y", "TGT_RA", "TGT_DEC"):
            np.testing.assert_array_equal(ds[col.lower()].values, hdul[1].data[col])
            assert ds[col.lower()].dims == ("time",)
    assert ds.attrs["object"] == "Eleonora"
    assert np.all(np.diff(ds.time.values) > 0)


def _edge_position(nx_off: int):
    """A sky position whose cutout hangs ``nx_off`` columns off the science area's left edge."""
    c = sectors_at(*TIC_307210830)[0]
    wcs = ccd_wcs(c)
    # first science column is 0-based 44; centre a cutout so that nx_off columns fall left of it
    col = 44 + 3 - nx_off
    ra, dec = wcs.pixel_to_world_values(col, 1000.0)
    return float(ra), float(dec), c.sector


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(nx=st.integers(1, 9), ny=st.integers(1, 9), n_cad=st.integers(1, 40), off=st.integers(0, 3))
def test_property_shapes_cadences_and_nan_padding(nx, ny, n_cad, off):
    ra, dec, sector = _edge_position(off)
    files = cutout_files(ra, dec, nx, ny, "px", sectors=[sector], max_cadences=n_cad)
    if not files:  # the position itself fell off the detector for this offset
        return
    name, raw = files[0]
    ds = tpf_to_xarray(raw)
    with fits.open(io.BytesIO(raw)) as hdul:
        flux = hdul[1].data["FLUX"]
        aperture = hdul[2].data
    assert ds.flux.shape == (n_cad, ny, nx) == flux.reshape(n_cad, ny, nx).shape
    np.testing.assert_array_equal(ds.flux.values, flux.reshape(n_cad, ny, nx))
    np.testing.assert_array_equal(ds.aperture.values, aperture != 0)
    # padded (off-detector) pixels are NaN in every cadence, and only those
    np.testing.assert_array_equal(np.isnan(ds.flux.values).all(axis=0), ~ds.aperture.values)
    assert ds.time.size == n_cad and np.all(np.diff(ds.time.values) > 0)
    assert ds.flux.dtype.isnative and ds.quality.dtype == np.int32
    lazy = tpf_to_xarray(raw, chunks=7)
    assert lazy.flux.chunks is not None
    xr.testing.assert_identical(lazy.compute(), ds)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(f"{tmp}/p.zarr", zarr_format=3, consolidated=False)
        assert xr.open_zarr(f"{tmp}/p.zarr", consolidated=False).load().identical(ds)


def test_nan_padding_really_happens_at_the_edge():
    ra, dec, sector = _edge_position(3)
    ds = tpf_to_xarray(cutout_files(ra, dec, 7, 5, "px", sectors=[sector], max_cadences=3)[0][1])
    assert (~ds.aperture).sum() > 0 and np.isnan(ds.flux.values).any()


def test_chunked_path_read_is_lazy_and_equal(regular, tmp_path):
    name, raw = regular
    path = tmp_path / name
    path.write_bytes(raw)
    lazy = tpf_to_xarray(path, chunks={"time": 40})
    assert lazy.flux.data.chunks[0] == (40, 40, 40, 30)
    xr.testing.assert_identical(lazy.compute(), tpf_to_xarray(path))


def test_chunked_relative_path_is_read_from_where_it_was_decoded(regular, tmp_path, monkeypatch):
    # a lazy dataset must keep reading its own file after a change of directory, and two files
    # with the same relative name must not share dask keys (or one would get the other's pixels)
    name, raw = regular

    def doubled(hdul):
        hdul[1].data["FLUX"] *= 2

    for sub, data in (("a", raw), ("b", _edit(raw, doubled))):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / name).write_bytes(data)
    monkeypatch.chdir(tmp_path / "a")
    lazy_a = tpf_to_xarray(name, chunks={"time": 40})
    monkeypatch.chdir(tmp_path / "b")
    lazy_b = tpf_to_xarray(name, chunks={"time": 40})
    eager_a, eager_b = tpf_to_xarray(tmp_path / "a" / name), tpf_to_xarray(tmp_path / "b" / name)
    both = xr.concat([lazy_a.flux, lazy_b.flux], dim="file").compute()
    np.testing.assert_array_equal(both.values[0], eager_a.flux.values)
    np.testing.assert_array_equal(both.values[1], eager_b.flux.values)


def test_a_file_rewritten_under_its_name_gets_new_lazy_keys(regular, tmp_path):
    """A refetch rewrites a TPF in place: lazy arrays of the new file must not share dask keys
    with the old one (a persistent cluster would answer from the old file's results)."""
    import os

    name, raw = regular
    path = tmp_path / name
    path.write_bytes(raw)
    old = tpf_to_xarray(path, chunks={"time": 40})

    def doubled(hdul):
        hdul[1].data["FLUX"] *= 2

    path.write_bytes(_edit(raw, doubled))
    os.utime(path, ns=(1, 1))  # same size; only the modification time tells the versions apart
    new = tpf_to_xarray(path, chunks={"time": 40})
    assert old.flux.data.name != new.flux.data.name
    np.testing.assert_array_equal(new.flux.values, 2 * tpf_to_xarray(raw).flux.values)


# ---- quirks made by editing emulator files ---------------------------------------------------
def _set(hdul, key, value, hdus=(0, 1, 2)):
    for i in hdus:
        if key in hdul[i].header:
            hdul[i].header[key] = value


def test_quirk_empty_sector(regular):
    ref = tpf_to_xarray(regular[1])
    ds = tpf_to_xarray(_edit(regular[1], lambda h: _set(h, "SECTOR", "")))
    assert "sector_empty" in ds.attrs["quirks"] and "sector_unknown" not in ds.attrs["quirks"]
    assert ds.attrs["sector"] == ref.attrs["sector"] == 1  # recovered from FFI_FILE
    xr.testing.assert_identical(ds.drop_attrs(), ref.drop_attrs())


def test_quirk_undefined_sector_and_unknown_everywhere(regular):
    def edit(h):
        _set(h, "SECTOR", None)
        cols = [c if c.name != "FFI_FILE" else fits.Column(name="FFI_FILE", format="38A",
                                                            array=np.array(["x"] * len(h[1].data)))
                for c in h[1].columns]
        h[1] = fits.BinTableHDU.from_columns(cols, header=h[1].header)

    ds = tpf_to_xarray(_edit(regular[1], edit))
    assert {"sector_empty", "sector_unknown"} <= set(ds.attrs["quirks"])
    assert ds.attrs["sector"] == -1 and ds.attrs["camera"] == 4


def test_quirk_float_aperture(regular):
    ref = tpf_to_xarray(regular[1])

    def edit(h):
        h[2] = fits.ImageHDU(h[2].data.astype(np.float64), header=h[2].header, name="APERTURE")

    ds = tpf_to_xarray(_edit(regular[1], edit))
    assert "aperture_float" in ds.attrs["quirks"]
    np.testing.assert_array_equal(ds.aperture.values, ref.aperture.values)
    assert ds.aperture.dtype == bool and ds.attrs["wcs_valid"] is True


def test_quirk_missing_bjdrefi(regular):
    ref = tpf_to_xarray(regular[1])

    def edit(h):
        for hdu in h:
            for key in ("BJDREFI", "BJDREFF"):
                hdu.header.remove(key, ignore_missing=True, remove_all=True)

    ds = tpf_to_xarray(_edit(regular[1], edit))
    assert "bjdrefi_missing" in ds.attrs["quirks"]
    np.testing.assert_array_equal(ds.time.values, ref.time.values)  # TUNIT1 says BTJD


def test_other_bjdrefi_is_converted_to_btjd(regular):
    ref = tpf_to_xarray(regular[1])

    def edit(h):
        h[1].data["TIME"] += 7000.0  # times relative to BJD 2450000
        _set(h, "BJDREFI", 2450000)

    ds = tpf_to_xarray(_edit(regular[1], edit))
    np.testing.assert_allclose(ds.time.values, ref.time.values, rtol=0, atol=1e-9)


def _column_wcs_cards(h, n, *, broken: bool, col0=101, row0=202):
    hdr = h[1].header
    ap = h[2].header
    if broken:  # as the 2018 service wrote them: numbers in CTYP, unfilled PC, CRVAL spelt out
        cards = {f"WCAX{n}": 2, f"1CTYP{n}": ap["CRPIX1"], f"2CTYP{n}": ap["CRPIX2"],
                 f"1CRVAL{n}": ap["CRVAL1"], f"2CRVAL{n}": ap["CRVAL2"],
                 f"11PC{n}": 0, f"12PC{n}": 0, f"21PC{n}": 0, f"22PC{n}": 0}
    else:  # as astrocut 0.5 wrote them: the APERTURE WCS per column
        cards = {f"WCAX{n}": 2, f"1CTYP{n}": "RA---TAN", f"2CTYP{n}": "DEC--TAN",
                 f"1CRPX{n}": ap["CRPIX1"], f"2CRPX{n}": ap["CRPIX2"],
                 f"1CRVL{n}": ap["CRVAL1"], f"2CRVL{n}": ap["CRVAL2"],
                 f"1CUNI{n}": "deg", f"2CUNI{n}": "deg", f"1CDLT{n}": 1.0, f"2CDLT{n}": 1.0,
                 f"11PC{n}": ap["PC1_1"], f"12PC{n}": ap["PC1_2"], f"21PC{n}": ap["PC2_1"],
                 f"22PC{n}": ap["PC2_2"]}
    cards.update({f"WCSN{n}P": "PHYSICAL", f"WCAX{n}P": 2, f"1CTY{n}P": "RAWX", f"2CTY{n}P": "RAWY",
                  f"1CRV{n}P": col0, f"2CRV{n}P": row0, f"1CDL{n}P": 1.0, f"2CDL{n}P": 1.0,
                  f"1CRP{n}P": 1, f"2CRP{n}P": 1})
    after = f"TDIM{n}"
    for key, value in cards.items():
        hdr.insert(after, (key, value), after=True)
        after = key


@pytest.mark.parametrize("broken", [True, False])
def test_column_wcs_present_valid_or_malformed(regular, broken):
    ref = tpf_to_xarray(regular[1])

    def edit(h):
        for n in (4, 5, 6, 7, 8):
            _column_wcs_cards(h, n, broken=broken)

    ds = tpf_to_xarray(_edit(regular[1], edit))
    # the CCD position is read either way (lightkurve reads 1CRV5P/2CRV5P too)
    assert int(ds.column.values[0, 0]) == 101 and int(ds.row.values[-1, 0]) == 202 + ds.sizes["y"] - 1
    if broken:
        assert ds.attrs["column_wcs"] == "malformed" and ds.attrs["wcs_valid"] is False
        assert "column_wcs_malformed" in ds.attrs["quirks"] and "ra" not in ds.coords
    else:
        assert ds.attrs["column_wcs"] == "valid" and ds.attrs["wcs_valid"] is True
        np.testing.assert_array_equal(ds.ra.values, ref.ra.values)
    np.testing.assert_array_equal(ds.flux.values, ref.flux.values)


def test_undefined_header_values_are_flagged_and_attrs_stay_json_safe(regular):
    ds = tpf_to_xarray(regular[1])
    assert "undefined_keywords" in ds.attrs["quirks"]
    import json

    json.dumps({k: v for k, v in ds.attrs.items()})  # no None, no numpy scalars
    for value in ds.attrs.values():
        assert value is not None and type(value).__module__ == "builtins"


@pytest.mark.parametrize("kind", ["regular", "moving"])
def test_zarr_v3_round_trip_emulator_files(kind, regular, moving, tmp_path):
    ds = tpf_to_xarray((regular if kind == "regular" else moving)[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(tmp_path / "t.zarr", zarr_format=3, consolidated=False)
        back = xr.open_zarr(tmp_path / "t.zarr", consolidated=False).load()
    assert back.identical(ds)
    assert {k: back[k].dtype for k in back.variables} == {k: ds[k].dtype for k in ds.variables}


def test_bad_chunks_are_refused(regular):
    from mastcut_dask import InvalidQueryError

    for bad in (0, -5, "lots", {"time": 0}):
        with pytest.raises(InvalidQueryError, match="chunks"):
            tpf_to_xarray(regular[1], chunks=bad)


def test_zero_placeholder_columns_keep_exact_values(regular):
    ds = tpf_to_xarray(regular[1])
    assert (ds.flux_bkg.values == 0).all() and not np.signbit(ds.flux_bkg.values).any()

    def edit(h):
        h[1].data["FLUX_BKG"][3, 1, 2] = -0.0
        h[1].data["FLUX_BKG_ERR"][-1, -1, -1] = 1e-30

    edited = tpf_to_xarray(_edit(regular[1], edit))
    assert np.signbit(edited.flux_bkg.values[3, 1, 2]) and edited.flux_bkg_err.values[-1, -1, -1] == np.float32(1e-30)
    assert np.count_nonzero(edited.flux_bkg_err.values) == 1
