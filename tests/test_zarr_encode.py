"""The one-hop zarr encoder writes exactly what ``Dataset.to_zarr`` writes (xarray is the oracle)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from zarr.storage import MemoryStore

from mastcut_dask import decode as dec
from mastcut_dask.decode import photometry
from mastcut_dask.store.groups import zarr_ready
from mastcut_dask.store.zarr_encode import encode_dataset

DATA = Path(__file__).parent / "data"


def _to_zarr_objects(ds) -> dict[str, bytes]:
    mapping: dict = {}
    ds.to_zarr(MemoryStore(store_dict=mapping), mode="w", zarr_format=3, consolidated=False)
    return {key: value.to_bytes() for key, value in mapping.items()}


def assert_same_group(ds):
    """Same objects as to_zarr (metadata compared as JSON, chunks byte for byte) and the same read-back."""
    expected = _to_zarr_objects(ds)
    got = encode_dataset(ds)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        if key.endswith("zarr.json"):
            assert json.loads(got[key]) == json.loads(value), key
        else:
            assert got[key] == value, key
    back = xr.open_zarr(MemoryStore(store_dict={k: _buffer(v) for k, v in got.items()}),
                        zarr_format=3, consolidated=False).load()
    xr.testing.assert_identical(back, xr.open_zarr(
        MemoryStore(store_dict={k: _buffer(v) for k, v in expected.items()}), zarr_format=3,
        consolidated=False).load())
    return back


def _buffer(data: bytes):
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype().buffer.from_bytes(data)


@pytest.fixture(scope="module")
def real_tpfs(tmp_path_factory):
    out = tmp_path_factory.mktemp("tpfs")
    with zipfile.ZipFile(DATA / "astrocut_107.27_-70.0_5x5.zip") as zf:
        member = next(m for m in zf.namelist() if m.endswith(".fits"))
        path = out / Path(member).name
        path.write_bytes(zf.read(member))
    return {"astrocut_2018": path, "spoc": DATA / "tess25155310-s01-first-cadences.fits.gz",
            "moving": DATA / "asteroid_test.fits"}


@pytest.mark.parametrize("name", ["astrocut_2018", "spoc", "moving"])
def test_real_tpfs_encode_like_to_zarr(real_tpfs, name):
    ds = zarr_ready(dec.tpf_to_xarray(real_tpfs[name]))
    back = assert_same_group(ds)
    np.testing.assert_array_equal(back.flux.values, ds.flux.values)
    assert back.attrs == json.loads(json.dumps(ds.attrs))


def test_image_cutout_encodes_like_to_zarr():
    with zipfile.ZipFile(DATA / "astrocut_189.49206_62.20615_100x100px_f.zip") as zf:
        member = next(m for m in zf.namelist() if m.endswith(".fits"))
        ds = dec.image_to_xarray(zf.read(member))
    assert_same_group(zarr_ready(ds))


def test_light_curve_encodes_like_to_zarr(real_tpfs):
    lc = photometry.aperture_photometry(dec.tpf_to_xarray(real_tpfs["astrocut_2018"]))
    assert_same_group(zarr_ready(lc))


def test_edge_cases_encode_like_to_zarr():
    """NaNs, all-fill chunks (not written), bools, both string kinds, an empty dimension, a chunked array."""
    rng = np.random.default_rng(3)
    flux = rng.normal(size=(700, 30, 30)).astype("float32")  # 2.5 MB: zarr splits it into chunks
    flux[3, 2, 1] = np.nan
    ds = xr.Dataset(
        {
            "flux": (("time", "y", "x"), flux, {"units": "electron / s", "bounds": np.array([1.5, 2.5]),
                                                "gain": np.float32(1.25)}),
            "zeros": (("time",), np.zeros(700, dtype="int32")),
            "mask": (("y", "x"), rng.random((30, 30)) > 0.5),
            "empty": (("none",), np.zeros(0, dtype="float64")),
            "note": (("time",), np.array([f"n{i}" for i in range(700)], dtype=object)),
            "label": (("y",), np.array([f"row {i}" for i in range(30)], dtype=np.dtypes.StringDType())),
        },
        coords={"time": ("time", np.arange(700) / 48.0), "ra": (("y", "x"), rng.random((30, 30)))},
        attrs={"sector": 8, "flag": True, "shape": np.array([30, 30]), "list": [1, 2], "none": None, "text": "é ü"},
    )
    back = assert_same_group(ds)
    np.testing.assert_array_equal(back.flux.values, flux)
    assert back.mask.dtype == bool and back.note.values.tolist() == ds.note.values.tolist()
    assert back.sizes["none"] == 0


def test_without_xarrays_encoders_it_falls_back_to_to_zarr(real_tpfs, monkeypatch):
    from mastcut_dask.store import zarr_encode

    ds = zarr_ready(dec.tpf_to_xarray(real_tpfs["astrocut_2018"]))
    fast = encode_dataset(ds)

    def moved(_ds):
        raise ImportError("cannot import name 'encode_zarr_variable'")

    monkeypatch.setattr(zarr_encode, "_encoded_variables", moved)
    slow = encode_dataset(ds)
    assert sorted(slow) == sorted(fast)
    assert all(json.loads(slow[k]) == json.loads(fast[k]) if k.endswith("zarr.json") else slow[k] == fast[k]
               for k in fast)


def test_encoding_runs_in_the_calling_thread_only(real_tpfs, monkeypatch):
    """No hand-off to zarr's loop or codec threads: every codec call runs in the caller's thread."""
    import threading

    from zarr.codecs import ZstdCodec

    ds = zarr_ready(dec.tpf_to_xarray(real_tpfs["spoc"]))
    threads = []
    original = ZstdCodec._encode_sync

    def spy(self, *args, **kwargs):
        threads.append(threading.get_ident())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ZstdCodec, "_encode_sync", spy)
    assert_same_group(ds)  # both encoders run under the spy; only ours is checked below
    threads.clear()
    encode_dataset(ds)
    assert threads and set(threads) == {threading.get_ident()}


def test_a_failing_array_fails_the_encoding_and_the_next_one_works(real_tpfs, monkeypatch):
    from zarr.codecs import ZstdCodec

    ds = zarr_ready(dec.tpf_to_xarray(real_tpfs["spoc"]))
    expected = encode_dataset(ds)
    original = ZstdCodec._encode_sync
    calls = []

    def fail_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("codec failed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ZstdCodec, "_encode_sync", fail_once)
    with pytest.raises(RuntimeError, match="codec failed"):
        encode_dataset(ds)
    monkeypatch.setattr(ZstdCodec, "_encode_sync", original)
    assert encode_dataset(ds) == expected


def test_datasets_alike_in_turn_each_encode_like_to_zarr(real_tpfs):
    """Array metadata is built once per variable layout and reused: each dataset in a row of
    look-alikes (other values, other header, a variable that is all fill value) and one of
    another shape still gives exactly what to_zarr gives, no chunk left over from the last."""
    first = zarr_ready(dec.tpf_to_xarray(real_tpfs["astrocut_2018"]))
    second = first.copy(deep=True)
    second["flux"] = second.flux + 1.0
    second["flux_err"] = second.flux_err * np.nan  # one chunk of fill value: zarr writes none
    second.attrs["OBJECT"] = "another target"
    other_shape = zarr_ready(dec.tpf_to_xarray(real_tpfs["spoc"]))
    for ds in (first, second, other_shape, first, second):
        back = assert_same_group(ds)
        np.testing.assert_array_equal(back.flux.values, ds.flux.values)
    assert not any(key.startswith("flux_err/c/") for key in encode_dataset(second))
