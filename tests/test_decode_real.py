"""Decoders on real MAST files (shipped by astroquery and lightkurve; see data/ATTRIBUTION.md).

lightkurve 2.6.0 reads the same files independently and is the oracle for pixels and times.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from mastcut_dask import DecodeError, image_to_xarray, tpf_to_xarray
from mastcut_dask.decode.headers import fits_headers

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Real files extracted from the shipped zips: {'tpf2018', 'zcut_fits', 'jpgs', 'asteroid', 'spoc'}."""
    out = tmp_path_factory.mktemp("real")
    files = {}
    for zname in ("astrocut_107.27_-70.0_5x5.zip", "astrocut_189.49206_62.20615_100x100px_f.zip",
                  "astrocut_189.49206_62.20615_100x100px.zip"):
        with zipfile.ZipFile(DATA / zname) as zf:
            for member in zf.namelist():
                target = out / Path(member).name
                target.write_bytes(zf.read(member))
    files["tpf2018"] = out / "tess-s0001-4-3_107.27_-70.0_5x5_astrocut.fits"
    files["zcut_fits"] = out / "candels_gn_30mas_189.492060_62.206150_100.0pix-x-100.0pix_astrocut.fits"
    files["jpgs"] = sorted(out.glob("*.jpg"))
    files["asteroid"] = DATA / "asteroid_test.fits"
    files["spoc"] = DATA / "tess25155310-s01-first-cadences.fits.gz"
    return files


def _lk(path, **kwargs):
    import lightkurve as lk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lk.read(str(path), quality_bitmask="none", **kwargs)


@pytest.mark.parametrize("name", ["tpf2018", "asteroid", "spoc"])
def test_tpf_pixels_and_times_equal_lightkurve(real, name):
    ds = tpf_to_xarray(real[name])
    tpf = _lk(real[name])
    assert ds.flux.dims == ("time", "y", "x")
    assert ds.flux.shape == tpf.shape
    np.testing.assert_array_equal(ds.flux.values, tpf.flux.value)
    np.testing.assert_array_equal(ds.flux_err.values, tpf.flux_err.value)
    np.testing.assert_array_equal(ds.quality.values, tpf.quality)
    np.testing.assert_array_equal(ds.flux_bkg.values, tpf.flux_bkg.value)  # non-zero in the SPOC file
    # lightkurve labels the 2018 file's times 'jd' (no BJDREFI) but the numbers are BTJD
    np.testing.assert_array_equal(ds.time.values, tpf.time.value)
    for var in ("flux", "flux_err", "flux_bkg", "flux_bkg_err"):
        assert ds[var].dtype == np.float32 and ds[var].dtype.isnative
        assert ds[var].attrs["units"] == "electron / s"
    assert ds.time.dtype == np.float64 and ds.time.attrs["reference"] == "BJD - 2457000"
    assert ds.quality.dtype == np.int32 and ds.aperture.dtype == bool
    assert int(ds.row.values[0, 0]) == tpf.row and int(ds.column.values[0, 0]) == tpf.column
    assert ds.attrs["camera"] == tpf.camera and ds.attrs["ccd"] == tpf.ccd


def test_2018_service_file_quirks_are_flagged(real):
    ds = tpf_to_xarray(real["tpf2018"])
    quirks = set(ds.attrs["quirks"])
    assert {"sector_empty", "aperture_float", "bjdrefi_missing", "column_wcs_malformed",
            "ffi_file_truncated", "aperture_wcs_invalid"} <= quirks
    assert ds.attrs["sector"] == 1  # the header says '', FFI_FILE says s0001
    assert ds.attrs["wcs_valid"] is False and ds.attrs["column_wcs"] == "malformed"
    assert "ra" not in ds.coords and "dec" not in ds.coords
    assert ds.aperture.values.all()
    assert ds.sizes == {"time": 1282, "y": 5, "x": 5}
    assert all(len(name) == 38 for name in ds.ffi_file.values)
    np.testing.assert_array_equal(ds.cadenceno.values, np.arange(1, 1283))
    assert ds.attrs["procver"].startswith("spoc-") and ds.attrs["creator"] == "114 FfiExporter"


def test_astrocut_05_file_has_valid_wcs_and_sky_coords(real):
    ds = tpf_to_xarray(real["asteroid"])
    tpf = _lk(real["asteroid"])
    assert ds.sizes == {"time": 1, "y": 10, "x": 11}  # non-square: 11 columns, 10 rows
    assert ds.attrs["wcs_valid"] is True and ds.attrs["column_wcs"] == "valid"
    assert ds.attrs["sector"] == 18 and ds.attrs["quirks"] == ["ffi_file_truncated"]
    yy, xx = np.mgrid[:10, :11]
    sky = tpf.wcs.pixel_to_world(xx, yy)
    np.testing.assert_allclose(ds.ra.values, sky.ra.deg, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ds.dec.values, sky.dec.deg, rtol=0, atol=1e-9)
    tx, ty = tpf.wcs.world_to_pixel_values(tpf.ra, tpf.dec)
    assert ds.attrs["target_x"] == pytest.approx(float(tx)) and ds.attrs["target_y"] == pytest.approx(float(ty))


def test_sources_path_bytes_hdulist_and_fsspec_url_agree(real):
    import fsspec

    path = real["tpf2018"]
    ref = tpf_to_xarray(path)
    data = path.read_bytes()
    assert tpf_to_xarray(data).drop_attrs().identical(ref.drop_attrs())
    with fits.open(path) as hdul:
        assert tpf_to_xarray(hdul).identical(ref)
        # an HDUList edited in memory decodes as edited, not as the file on disk
        hdul[0].header["OBJECT"] = "edited"
        hdul[1].data["FLUX"][0] = -1.0
        edited = tpf_to_xarray(hdul)
        assert edited.attrs["object"] == "edited" and (edited.flux.values[0] == -1.0).all()
        assert fits_headers(edited)[0]["OBJECT"] == "edited"
    fs = fsspec.filesystem("memory")
    fs.pipe("/decode-test/" + path.name, data)
    url = "memory://decode-test/" + path.name
    assert tpf_to_xarray(url).identical(ref)
    lazy = tpf_to_xarray(url, chunks=300)
    assert lazy.flux.chunks is not None
    assert lazy.load().identical(ref)


def test_lazy_remote_decode_reads_the_table_once(real):
    """A chunked decode of an fsspec URL fetches the PIXELS rows once for all per-cadence columns."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    read = {"bytes": 0}

    class CountingFile(io.BytesIO):
        def read(self, n=-1):
            out = super().read(n)
            read["bytes"] += len(out)
            return out

    class CountingFS(MemoryFileSystem):
        protocol = ("countmem",)
        store: dict = {}
        pseudo_dirs = [""]

        @classmethod
        def _strip_protocol(cls, path):
            return MemoryFileSystem._strip_protocol(path.replace("countmem://", "memory://"))

        def _open(self, path, mode="rb", **kwargs):
            if "r" in mode:
                return CountingFile(self.cat_file(path))
            return super()._open(path, mode, **kwargs)

    fsspec.register_implementation("countmem", CountingFS, clobber=True)
    raw = real["tpf2018"].read_bytes()
    CountingFS().pipe("/decode-count/" + real["tpf2018"].name, raw)
    lazy = tpf_to_xarray("countmem://decode-count/" + real["tpf2018"].name, chunks=300)
    assert read["bytes"] <= 1.1 * len(raw)  # was ~4.8x: the table re-read for each column
    assert lazy.load().identical(tpf_to_xarray(raw).assign_attrs(source_file=real["tpf2018"].name))


def test_chunked_decode_reads_pixels_only_on_compute(real, tmp_path):
    path = tmp_path / real["tpf2018"].name
    path.write_bytes(real["tpf2018"].read_bytes())
    lazy = tpf_to_xarray(path, chunks={"time": 200})
    assert lazy.flux.data.chunks[0][0] == 200
    assert lazy.time.values.size == 1282  # per-cadence columns are read at once
    # rewrite the pixels after decoding: the lazy dataset must see the new values
    with fits.open(path, mode="update") as hdul:
        hdul[1].data["FLUX"][:] = 7.0
    assert float(lazy.flux.isel(time=slice(0, 400)).max()) == 7.0
    assert np.all(lazy.flux.values == 7.0)
    eager = tpf_to_xarray(path)
    # (astropy's update mode rewrites header cards, so compare everything but the header text)
    xr.testing.assert_identical(lazy.load().drop_attrs(), eager.drop_attrs())


@pytest.mark.parametrize("name", ["tpf2018", "asteroid", "spoc", "zcut_fits"])
def test_zarr_v3_round_trip_is_identical_and_headers_rebuild(real, tmp_path, name):
    decode = image_to_xarray if name == "zcut_fits" else tpf_to_xarray
    ds = decode(real[name])
    store = tmp_path / "rt.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's notes about v3 string dtypes
        ds.to_zarr(store, zarr_format=3, consolidated=False)
        back = xr.open_zarr(store, consolidated=False).load()
    assert back.identical(ds)
    for name_ in back.variables:
        assert back[name_].dtype == ds[name_].dtype
    with fits.open(real[name]) as hdul:
        rebuilt = fits_headers(back)
        assert len(rebuilt) == len(hdul)
        for original, again in zip(hdul, rebuilt):
            assert again.tostring() == original.header.tostring()


def test_zcut_fits_bands_come_from_filters_never_extname(real):
    ds = image_to_xarray(real["zcut_fits"])
    assert ds.image.dims == ("band", "y", "x") and ds.image.shape == (3, 100, 100)
    assert list(ds.band.values) == ["F606W", "F814W", "F850LP"]
    assert ds.attrs["service"] == "ZCut" and ds.attrs["survey"] == "candels_gn_30mas"
    assert ds.ra.dims == ("y", "x")  # all three bands share the WCS
    with fits.open(real["zcut_fits"]) as hdul:
        np.testing.assert_array_equal(ds.image.values[1], hdul[2].data)
        from astropy.wcs import WCS

        sky = WCS(hdul[1].header).pixel_to_world(37, 12)
    assert ds.ra.values[12, 37] == pytest.approx(sky.ra.deg, abs=1e-10)
    assert ds.dec.values[12, 37] == pytest.approx(sky.dec.deg, abs=1e-10)
    # the requested centre lies in the middle of the cutout
    centre = (ds.ra.values[49:51, 49:51].mean(), ds.dec.values[49:51, 49:51].mean())
    assert centre == pytest.approx((ds.attrs["ra_obj"], ds.attrs["dec_obj"]), abs=2e-5)


def test_zcut_jpgs_decode_with_stated_row_order(real):
    fits_ds = image_to_xarray(real["zcut_fits"])
    for path in real["jpgs"]:
        ds = image_to_xarray(path)
        assert ds.image.dims == ("y", "x") and ds.image.dtype == np.uint8
        # the 2020 service JPGs carry no metadata and are not flipped: row 0 = FITS row 0
        assert ds.attrs["origin"] == "lower"
        band = next(b for b in fits_ds.band.values if b.lower() in path.name)
        ref = np.nan_to_num(fits_ds.image.sel(band=band).values)
        as_stated = np.corrcoef(ref.ravel(), ds.image.values.astype(float).ravel())[0, 1]
        flipped = np.corrcoef(ref[::-1].ravel(), ds.image.values.astype(float).ravel())[0, 1]
        assert as_stated > 0.8 > 0.3 > flipped
        assert image_to_xarray(path, origin="upper").attrs["origin"] == "upper"


def test_xarray_backend_entry_point(real):
    for name, decode in (("tpf2018", tpf_to_xarray), ("zcut_fits", image_to_xarray)):
        ds = xr.open_dataset(real[name], engine="mastcut")
        assert ds.identical(decode(real[name]))
    chunked = xr.open_dataset(real["asteroid"], engine="mastcut", chunks={})
    assert chunked.flux.chunks is not None
    dropped = xr.open_dataset(real["tpf2018"], engine="mastcut", drop_variables=["flux_bkg"])
    assert "flux_bkg" not in dropped and "flux" in dropped


def test_not_a_tpf_or_cutout_raises_decode_error_saying_what_is_missing(real, tmp_path):
    image_only = fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4), np.float32))])
    with pytest.raises(DecodeError, match="FLUX and QUALITY"):
        tpf_to_xarray(image_only)
    table_only = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="A", format="E", array=np.zeros(3))])])
    with pytest.raises(DecodeError, match="no 2-D image"):
        image_to_xarray(table_only)
    with pytest.raises(DecodeError, match="not a FITS, JPEG or PNG"):
        tpf_to_xarray(b"<html>503 Service Unavailable</html>")
    with pytest.raises(DecodeError, match="JPEG/PNG"):
        tpf_to_xarray(real["jpgs"][0])
    with pytest.raises(DecodeError, match="no such file"):
        tpf_to_xarray(tmp_path / "missing.fits")
    # a TPF whose PIXELS table lost TIME
    with fits.open(real["asteroid"]) as hdul:
        cols = [c for c in hdul[1].columns if c.name != "TIME"]
        broken = fits.HDUList([hdul[0].copy(), fits.BinTableHDU.from_columns(cols, header=hdul[1].header),
                               hdul[2].copy()])
        with pytest.raises(DecodeError, match="no TIME column"):
            tpf_to_xarray(broken)
    with pytest.raises(DecodeError):
        tpf_to_xarray(12345)


def test_gzip_bomb_guard_and_corrupt_gzip(real):
    import gzip

    with pytest.raises(DecodeError, match="gzip"):
        tpf_to_xarray(gzip.compress(b"SIMPLE  =")[:-6])
    raw = real["spoc"].read_bytes()
    # a damaged deflate stream (zlib.error, not OSError) is a DecodeError too
    damaged = bytearray(raw)
    damaged[100:116] = b"\xff" * 16  # inside the first deflate block's code tables
    with pytest.raises(DecodeError, match="gzip"):
        tpf_to_xarray(bytes(damaged))
    ds = tpf_to_xarray(raw)
    assert ds.attrs["service"] == "SPOC" and ds.sizes["time"] == 5


@pytest.mark.parametrize("value", [1e300, 2**40, -(2**35)])
def test_absurd_ccd_position_is_dropped_not_fatal(real, value):
    # 1CRVnP/2CRVnP are "never required": a value no CCD has must not crash the decode
    with fits.open(real["asteroid"]) as hdul:
        for n in (4, 5, 6, 7, 8):
            if f"1CRV{n}P" in hdul[1].header:
                hdul[1].header[f"1CRV{n}P"] = value
        out = io.BytesIO()
        hdul.writeto(out)
    ds = tpf_to_xarray(out.getvalue())
    assert "column" not in ds.coords and "row" not in ds.coords
    assert ds.flux.shape == (1, 10, 11)


def test_mission_tpf_bitflag_aperture_is_collected_pixels(real):
    ds = tpf_to_xarray(real["spoc"])
    with fits.open(real["spoc"]) as hdul:
        np.testing.assert_array_equal(ds.aperture.values, hdul["APERTURE"].data != 0)
    assert ds.attrs["object"] == "TIC 25155310"
    np.testing.assert_array_equal(ds.cadenceno.values, np.arange(70444, 70449))


def test_image_bytes_input_is_sniffed(real):
    raw = real["jpgs"][0].read_bytes()
    ds = image_to_xarray(raw)
    assert ds.image.shape == (100, 100)
    assert io.BytesIO(raw).read(3) == b"\xff\xd8\xff"


def test_unparsable_header_card_is_kept_raw_not_fatal(real):
    raw = bytearray(real["asteroid"].read_bytes())
    card = raw.index(b"OBJECT  = ")
    raw[card:card + 80] = b"CONTINUE  'an unterminated long string".ljust(80)
    ds = tpf_to_xarray(bytes(raw))
    assert ds.flux.shape == (1, 10, 11)
    assert "CONTINUE  'an unterminated long string" in ds.attrs["fits_headers"][0]
    assert ds.attrs["object"] == ""


@pytest.mark.parametrize("cut", [3000, 20000, 400000, 763300])
def test_truncated_files_raise_decode_error(real, cut):
    raw = real["tpf2018"].read_bytes()[:cut]
    with pytest.raises(DecodeError):
        tpf_to_xarray(raw)


def test_table_size_beyond_any_file_is_a_decode_error(real):
    # astropy seeks past a data size that does not fit in a C ssize_t: OverflowError, not OSError
    raw = bytearray(real["asteroid"].read_bytes())
    card = raw.index(b"NAXIS2  = ", raw.index(b"XTENSION= 'BINTABLE'"))
    raw[card:card + 80] = b"NAXIS2  = 99999999999999999999".ljust(80)
    with pytest.raises(DecodeError, match="OverflowError"):
        tpf_to_xarray(bytes(raw))


def test_truncated_image_raises_decode_error(real):
    with pytest.raises(DecodeError):
        image_to_xarray(real["jpgs"][0].read_bytes()[:200])
    with pytest.raises(DecodeError):
        image_to_xarray(real["zcut_fits"].read_bytes()[:10000])
