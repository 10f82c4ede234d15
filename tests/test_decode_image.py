"""Image-cutout decoder on emulator ZCut products (FITS, JPG, PNG), and HAPCut when it exists."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mastcut_dask import image_to_xarray
from mastcut_dask.decode.headers import fits_headers
from mastcut_dask.emulator.zcut import zcut_cutout_files

ANCHOR = (189.49206, 62.20615)  # the emulator's bright star in GOODS-N


def _one(files, prefix=""):
    matches = [(n, b) for n, b in files if n.startswith(prefix)]
    assert matches, [n for n, _ in files]
    return matches[0]


def test_zcut_fits_every_survey_decodes_with_bands_and_sky():
    files = zcut_cutout_files(*ANCHOR, 30, 20, "px")
    assert len(files) == 4
    for name, raw in files:
        ds = image_to_xarray(raw)
        with fits.open(__import__("io").BytesIO(raw)) as hdul:
            n_img = len(hdul) - 1
            filters = [h.header["FILTER"] for h in hdul[1:]]
            assert all(h.name == "CUTOUT" for h in hdul[1:])
            np.testing.assert_array_equal(ds.image.values[-1], hdul[-1].data)
            wcs = WCS(hdul[1].header)
        assert ds.image.dims == ("band", "y", "x") and ds.image.shape == (n_img, 20, 30)
        assert list(ds.band.values) == filters  # from FILTER, never EXTNAME
        sky = wcs.pixel_to_world(np.arange(30)[None, :], np.arange(20)[:, None])
        np.testing.assert_allclose(ds.ra.values, sky.ra.deg, atol=1e-10, rtol=0)
        np.testing.assert_allclose(ds.dec.values, sky.dec.deg, atol=1e-10, rtol=0)
        assert ds.attrs["wcs_valid"] is True and ds.attrs["service"] == "ZCut"


def test_anchor_star_sits_where_the_decoded_sky_coords_say():
    _, raw = _one(zcut_cutout_files(*ANCHOR, 25, 25, "px", survey="candels_gn_30mas"))
    ds = image_to_xarray(raw)
    img = np.nan_to_num(ds.image.sel(band="F814W").values)
    iy, ix = np.unravel_index(np.argmax(img), img.shape)
    ra, dec = ds.ra.values[iy, ix], ds.dec.values[iy, ix]
    sep_arcsec = 3600 * np.hypot((ra - ANCHOR[0]) * np.cos(np.radians(dec)), dec - ANCHOR[1])
    assert sep_arcsec < 0.05  # within 1.5 pixels of 0.03"


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_raster_cutouts_state_their_row_order(fmt):
    # centred 7 rows north of the bright star, so the image is far from up-down symmetric
    centre = (ANCHOR[0], ANCHOR[1] + 7 * 0.03 / 3600)
    fits_ds = image_to_xarray(_one(zcut_cutout_files(*centre, 40, 24, "px", survey="candels_gn_30mas"))[1])
    rasters = zcut_cutout_files(*centre, 40, 24, "px", survey="candels_gn_30mas", fmt=fmt)
    assert len(rasters) == 3
    for (name, raw), band in zip(rasters, fits_ds.band.values):
        ds = image_to_xarray(raw)
        assert ds.image.dims == ("y", "x") and ds.image.shape == (24, 40) and ds.image.dtype == np.uint8
        assert ds.attrs["format"] == ("jpeg" if fmt == "jpg" else "png")
        ref = np.nan_to_num(fits_ds.image.sel(band=band).values)
        # the stated origin tells which way round the rows are: 'lower' = FITS row order
        rows = ds.image.values.astype(float)
        if ds.attrs["origin"] == "upper":
            rows = rows[::-1]
        assert np.corrcoef(ref.ravel(), rows.ravel())[0, 1] > 0.5
        assert np.corrcoef(ref[::-1].ravel(), rows.ravel())[0, 1] < 0.5


@pytest.mark.parametrize("fmt", ["fits", "png"])
def test_bad_origin_is_an_invalid_query_for_every_format(fmt):
    # a wrong argument is the caller's mistake, not a corrupt file, and is refused whatever the input
    from mastcut_dask.exceptions import DecodeError, InvalidQueryError

    raw = _one(zcut_cutout_files(*ANCHOR, 8, 6, "px", survey="candels_gn_30mas", fmt=fmt))[1]
    with pytest.raises(InvalidQueryError, match="origin") as info:
        image_to_xarray(raw, origin="top")
    assert not isinstance(info.value, DecodeError)


def test_png_claiming_a_giant_size_is_a_decode_error():
    # hostile bytes: Pillow refuses the size with its own DecompressionBombError (not an OSError),
    # which must come out as a DecodeError like every other unreadable file
    import struct
    import zlib

    from mastcut_dask.exceptions import DecodeError

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))
    with pytest.raises(DecodeError, match="pixels"):
        image_to_xarray(png)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nx=st.integers(1, 23), ny=st.integers(1, 23))
def test_property_zcut_shapes_including_1xn(nx, ny):
    _, raw = _one(zcut_cutout_files(*ANCHOR, nx, ny, "px", survey="candels_gn_60mas"))
    ds = image_to_xarray(raw)
    assert ds.image.shape == (3, ny, nx)
    assert ds.ra.shape == (ny, nx) and np.isfinite(ds.ra.values).all()
    if nx > 1:  # RA grows to the east (left) in a north-up image: x and RA run opposite ways
        assert ds.ra.values[0, 0] > ds.ra.values[0, -1]
    if ny > 1:
        assert ds.dec.values[-1, 0] > ds.dec.values[0, 0]


def test_zcut_zarr_round_trip_and_header_rebuild(tmp_path):
    _, raw = _one(zcut_cutout_files(*ANCHOR, 12, 9, "px", survey="3dhst_goods-n"))
    ds = image_to_xarray(raw)
    assert ds.sizes["band"] == 10 and len(set(ds.band.values)) == 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(tmp_path / "z.zarr", zarr_format=3, consolidated=False)
        back = xr.open_zarr(tmp_path / "z.zarr", consolidated=False).load()
    assert back.identical(ds)
    with fits.open(__import__("io").BytesIO(raw)) as hdul:
        assert [h.tostring() for h in fits_headers(back)] == [h.header.tostring() for h in hdul]


def test_off_footprint_pixels_are_nan_not_fatal():
    # a cutout straddling the survey edge: the emulator fills off-footprint pixels with NaN
    files = zcut_cutout_files(189.28065571, 62.17415175, 60, 60, "px", survey="goods_north")
    ds = image_to_xarray(_one(files)[1])
    assert ds.image.shape[1:] == (60, 60)
    assert np.isfinite(ds.ra.values).all()


def _hapcut():
    return pytest.importorskip("mastcut_dask.emulator.deepfields", reason="HAPCut emulator not available")


def test_hapcut_sci_wht_and_validity():
    deepfields = _hapcut()
    files = None
    files = deepfields.hapcut_cutout_files(351.347812, 28.497808, 20, 15, "px")  # skycell p2007x09y05
    assert len(files) >= 2
    name, raw = files[0]
    ds = image_to_xarray(raw)
    assert ds.attrs["service"] == "HAPCut"
    assert ds.sci.dims == ("y", "x") and sorted(ds.sci.shape) == [15, 20]
    with fits.open(__import__("io").BytesIO(raw)) as hdul:
        sci = [h for h in hdul[1:] if h.name.startswith("SCI") or h.header.get("O_EXT_NM") == "SCI"][0]
        wht = [h for h in hdul[1:] if h.name.startswith("WHT") or h.header.get("O_EXT_NM") == "WHT"][0]
        np.testing.assert_array_equal(ds.sci.values, sci.data)  # shapes come from the data
        np.testing.assert_array_equal(ds.wht.values, wht.data)
        sky = WCS(sci.header).pixel_to_world(3, 2)
    assert ds.ra.values[2, 3] == pytest.approx(sky.ra.deg, abs=1e-10)
    assert ds.attrs["filter"] in name.upper()
    np.testing.assert_array_equal(ds.valid.values, np.nan_to_num(ds.wht.values) > 0)


def _reencode_with_metadata(raw: bytes, fmt: str, meta: dict, flip: bool) -> bytes:
    """An emulator raster re-encoded as astrocut 1.4 writes it: flipped, metadata embedded."""
    import io
    import json

    from PIL import Image, PngImagePlugin

    with Image.open(io.BytesIO(raw)) as image:
        pixels = np.array(image)
    out = Image.fromarray(pixels[::-1] if flip else pixels)
    buffer = io.BytesIO()
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        for key, value in meta.items():
            info.add_text(key, str(value))
        out.save(buffer, format="PNG", pnginfo=info)
    else:
        exif = Image.Exif()
        exif[270] = json.dumps(meta)
        out.save(buffer, format="JPEG", exif=exif, quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_embedded_metadata_and_flipped_rows(fmt):
    centre = (ANCHOR[0], ANCHOR[1] + 7 * 0.03 / 3600)
    fits_ds = image_to_xarray(_one(zcut_cutout_files(*centre, 40, 24, "px", survey="candels_gn_30mas"))[1])
    _, raw = zcut_cutout_files(*centre, 40, 24, "px", survey="candels_gn_30mas", fmt=fmt)[0]
    meta = {"input_file": "hlsp_candels_hst_acs_gn-tot-30mas_f606w_v1.0_drz.fits", "cutout_size_x_pix": 40,
            "cutout_size_y_pix": 24, "center_ra_deg": centre[0], "center_dec_deg": centre[1],
            "version": "1.4.0"}
    ds = image_to_xarray(_reencode_with_metadata(raw, fmt, meta, flip=True))
    assert ds.attrs["origin"] == "upper"  # astrocut >= 1.4 embeds metadata and flips
    assert ds.attrs["meta_input_file"] == meta["input_file"]
    assert str(ds.attrs["meta_cutout_size_x_pix"]) == "40"
    ref = np.nan_to_num(fits_ds.image.sel(band="F606W").values)
    rows = ds.image.values.astype(float)[::-1]  # 'upper': reverse to get FITS row order
    assert np.corrcoef(ref.ravel(), rows.ravel())[0, 1] > 0.5
    declared = image_to_xarray(_reencode_with_metadata(raw, fmt, {**meta, "origin": "lower"}, flip=False))
    assert declared.attrs["origin"] == "lower"


def test_hapcut_filter_from_the_file_name_when_the_wheels_say_clear():
    """ACS primaries carry FILTER1/FILTER2, one of them CLEAR; with both CLEAR (or no real
    filter keyword) the band comes from the file name, never a made-up 'band0'."""
    import io

    deepfields = _hapcut()
    name, raw = deepfields.hapcut_cutout_files(351.347812, 28.497808, 8, 8, "px")[0]
    with fits.open(io.BytesIO(raw)) as hdul:
        for key in ("FILTER", "FILTER1", "FILTER2"):
            hdul[0].header.remove(key, ignore_missing=True)
        hdul[0].header["FILTER1"] = "CLEAR1L"
        hdul[0].header["FILTER2"] = "CLEAR2L"
        out = io.BytesIO()
        hdul.writeto(out)
    ds = image_to_xarray(out.getvalue())
    assert ds.attrs["filter"] != "band0" and ds.attrs["filter"].lower() in name.lower()
    with fits.open(io.BytesIO(out.getvalue())) as hdul:
        hdul[0].header["FILTER2"] = "F606W"
        again = io.BytesIO()
        hdul.writeto(again)
    assert image_to_xarray(again.getvalue()).attrs["filter"] == "F606W"
