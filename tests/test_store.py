"""The store on a local disk: layout and naming, atomic writes, manifest and resume, open_cutouts."""

from __future__ import annotations

import csv
import hashlib
import os
import pickle
import time

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from mastcut_dask.exceptions import InvalidQueryError, UnsafeArchiveError
from mastcut_dask.services.products import product_from_sector_name, product_name
from mastcut_dask.store.fits_files import write_fits
from mastcut_dask.store.groups import IN_MEMORY_BYTES, is_complete_group, write_dataset
from mastcut_dask.store.layout import COMMIT_DIR, MANIFEST_COLUMNS, clean_staging, fits_path, resolve_out
from mastcut_dask.store.manifest import Manifest, ManifestRow
from mastcut_dask.store.tree import open_cutouts
from mastcut_dask.targets.target import check_name

TESS_FILE = "tess-s0008-1-1_135.140800_-5.191500_5x5_astrocut.fits"
ZCUT_FILE = "candels_gn_30mas_189.492060_62.206150_100.0pix-x-100.0pix_astrocut.fits"
HAP_FILE = "hst_cutout_skycell-p2007x09y05-ra351d3478-decn28d4978_wfc3_ir_f160w_coarse.fits"


def small_dataset(seed: int = 0, n_time: int = 4) -> xr.Dataset:
    """A TPF-shaped dataset as the decoder makes them: labelled dims, string coords, JSON-safe attrs."""
    rng = np.random.default_rng(seed)
    ny, nx = 3, 2
    return xr.Dataset(
        {
            "flux": (("time", "y", "x"), rng.normal(size=(n_time, ny, nx)).astype("float32"),
                     {"units": "electron / s"}),
            "flux_err": (("time", "y", "x"), rng.random((n_time, ny, nx)).astype("float32"),
                         {"units": "electron / s"}),
            "aperture": (("y", "x"), np.array([[True, False], [True, True], [False, True]])),
        },
        coords={
            "time": ("time", 1500.0 + np.arange(n_time) / 48, {"units": "d", "scale": "tdb"}),
            "quality": ("time", np.array([0, 32, 0, 0][:n_time], dtype="int32")),
            "ffi_file": ("time", np.array([f"tess2018206192942-s0008-1-1-{i:04d}-s_ffi" for i in range(n_time)])),
            "ra": (("y", "x"), 135.1 + rng.random((ny, nx)), {"units": "deg"}),
            "dec": (("y", "x"), -5.2 + rng.random((ny, nx)), {"units": "deg"}),
        },
        attrs={"sector": 8, "camera": 1, "ccd": 1, "object": "TIC 307210830", "wcs_valid": True,
               "ra_obj": 135.1408, "procver": None, "headers": ["SIMPLE  =                    T"]},
    )


# ---- naming ------------------------------------------------------------------------------------

def test_product_names_for_each_service():
    assert product_name("tesscut", TESS_FILE) == "s0008-1-1"
    assert product_name("tesscut", "tess-s0001-4-3_107.27_-70.0_5x5_astrocut.fits") == "s0001-4-3"
    assert product_name("zcut", ZCUT_FILE) == "candels_gn_30mas"
    assert product_name("zcut", "goods_north_10.000000_-20.500000_7pix-x-3pix_astrocut.fits") == "goods_north"
    assert product_name("hapcut", HAP_FILE) == "p2007x09y05_wfc3_ir_f160w_coarse"
    assert product_from_sector_name("tess-s0008-1-1") == "s0008-1-1"


def test_moving_target_product_is_the_file_stem():
    name = product_name("tesscut", "SYNTH_Asteroid_1_1468.27-1490.04_5-x-5_astrocut.fits")
    assert name == "synth_asteroid_1_1468.27-1490.04_5-x-5"
    check_name(name)


@pytest.mark.parametrize("bad", ["../evil.fits", "a/b.fits", "..", ".hidden.fits", "x\\y.fits", "",
                                 "a..fits", "/abs.fits", "__zarr.fits", "name with space.fits", "é.fits"])
def test_unsafe_server_file_names_are_refused(bad):
    with pytest.raises(UnsafeArchiveError):
        product_name("tesscut", bad)
    with pytest.raises(UnsafeArchiveError):
        fits_path("tesscut", "tic_1", bad)


def test_unknown_service_and_unsafe_target_id():
    with pytest.raises(InvalidQueryError, match="Unknown service"):
        product_name("kepcut", TESS_FILE)
    with pytest.raises(InvalidQueryError, match="not safe"):
        fits_path("tesscut", "../tic_1", TESS_FILE)
    with pytest.raises(UnsafeArchiveError):
        product_from_sector_name("tess-s0008-1-1/../../x")


# ---- FITS writes -------------------------------------------------------------------------------

def test_write_fits_layout_size_and_digest(tmp_path):
    payload = os.urandom(3 * (1 << 20) + 17)  # more than one copy chunk
    rel, n_bytes, sha = write_fits(str(tmp_path), "tesscut", "tic_307210830", TESS_FILE, payload)
    assert rel == f"fits/tesscut/tic_307210830/{TESS_FILE}"
    assert (tmp_path / rel).read_bytes() == payload
    assert n_bytes == len(payload)
    assert sha == hashlib.sha256(payload).hexdigest()
    # from a local file path too, and idempotent: the same call again gives the same result
    src = tmp_path / "extracted.fits"
    src.write_bytes(payload)
    assert write_fits(str(tmp_path), "tesscut", "tic_307210830", TESS_FILE, src) == (rel, n_bytes, sha)
    assert sorted(os.listdir(tmp_path / ".staging")) == []


class ExplodingReader:
    """A binary source that fails after some bytes: a download cut off mid-write."""

    def __init__(self, good: bytes):
        self.parts = [good[: len(good) // 2], good[len(good) // 2:]]

    def read(self, n=-1):
        if self.parts:
            part = self.parts.pop(0)
            if not self.parts:
                raise ConnectionError("connection reset mid-body")
            return part
        return b""


def test_failed_write_leaves_nothing_that_looks_complete(tmp_path):
    with pytest.raises(ConnectionError):
        write_fits(str(tmp_path), "zcut", "ngc_1234", ZCUT_FILE, ExplodingReader(b"x" * 10_000))
    assert not (tmp_path / "fits" / "zcut" / "ngc_1234" / ZCUT_FILE).exists()
    assert os.listdir(tmp_path / ".staging") == []


def test_failed_rewrite_keeps_the_previous_file(tmp_path):
    rel, _, sha = write_fits(str(tmp_path), "zcut", "ngc_1234", ZCUT_FILE, b"first version")
    with pytest.raises(ConnectionError):
        write_fits(str(tmp_path), "zcut", "ngc_1234", ZCUT_FILE, ExplodingReader(b"y" * 10_000))
    assert (tmp_path / rel).read_bytes() == b"first version"


# ---- zarr --------------------------------------------------------------------------------------

def test_write_dataset_round_trips_through_open_cutouts(tmp_path):
    a, b = small_dataset(1), small_dataset(2, n_time=3)
    assert write_dataset(str(tmp_path), "tic_307210830", "s0008-1-1", a) == "tic_307210830/s0008-1-1"
    write_dataset(str(tmp_path), "tic_307210830", "s0009-1-2", b)
    write_dataset(str(tmp_path), "ngc_1234", "candels_gn_30mas", a.isel(time=0))
    tree = open_cutouts(str(tmp_path))
    assert sorted(tree.children) == ["ngc_1234", "tic_307210830"]
    assert sorted(tree["tic_307210830"].children) == ["s0008-1-1", "s0009-1-2"]
    got = tree["tic_307210830/s0008-1-1"].to_dataset()
    assert not isinstance(got["flux"].variable._data, np.ndarray)  # lazy: nothing read yet
    xr.testing.assert_identical(got.load(), a)
    xr.testing.assert_identical(tree["tic_307210830/s0009-1-2"].to_dataset().load(), b)
    xr.testing.assert_identical(tree["ngc_1234/candels_gn_30mas"].to_dataset().load(), a.isel(time=0))
    # the whole store is also a valid zarr v3 hierarchy for other readers
    whole = xr.open_datatree(tmp_path / "cutouts.zarr", engine="zarr", consolidated=False)
    xr.testing.assert_identical(whole["tic_307210830/s0008-1-1"].to_dataset().load(), a)


def test_open_cutouts_with_dask_chunks(tmp_path):
    write_dataset(str(tmp_path), "tic_1", "s0001-4-3", small_dataset())
    tree = open_cutouts(str(tmp_path), chunks={})
    flux = tree["tic_1/s0001-4-3"]["flux"]
    assert hasattr(flux.data, "dask")
    np.testing.assert_array_equal(flux.values, small_dataset()["flux"].values)


def test_rewriting_a_group_replaces_it(tmp_path):
    write_dataset(str(tmp_path), "tic_1", "s0001-4-3", small_dataset(1))
    write_dataset(str(tmp_path), "tic_1", "s0001-4-3", small_dataset(5, n_time=2))
    xr.testing.assert_identical(open_cutouts(str(tmp_path))["tic_1/s0001-4-3"].to_dataset().load(),
                                small_dataset(5, n_time=2))


@pytest.mark.slow
def test_concurrent_writers_of_one_group_leave_one_whole_group(tmp_path):
    """A task re-run while its first run still writes: both succeed, one complete version stays."""
    from concurrent.futures import ThreadPoolExecutor

    out = str(tmp_path)
    versions = [small_dataset(seed) for seed in range(4)]
    with ThreadPoolExecutor(8) as pool:
        groups = list(pool.map(lambda i: write_dataset(out, "tic_1", "s0001-4-3", versions[i % 4]), range(64)))
    assert set(groups) == {"tic_1/s0001-4-3"}
    got = open_cutouts(out)["tic_1/s0001-4-3"].to_dataset().load()
    assert any(got.identical(v) for v in versions)
    assert [p.name for p in (tmp_path / ".staging").iterdir()] == []


def test_a_group_without_its_commit_marker_is_not_read(tmp_path):
    write_dataset(str(tmp_path), "tic_1", "s0001-4-3", small_dataset())
    write_dataset(str(tmp_path), "tic_1", "s0002-4-3", small_dataset())
    # what an interrupted in-place write (object stores) leaves: data, no marker
    (tmp_path / COMMIT_DIR / "tic_1" / "s0002-4-3.json").unlink()
    assert not is_complete_group(str(tmp_path), "tic_1/s0002-4-3")
    assert list(open_cutouts(str(tmp_path))["tic_1"].children) == ["s0001-4-3"]


@pytest.mark.parametrize("max_memory_bytes", [IN_MEMORY_BYTES, 0], ids=["in-memory", "streamed"])
def test_failed_dataset_write_leaves_no_group(tmp_path, max_memory_bytes):
    out = str(tmp_path)
    write_dataset(out, "tic_1", "s0002-4-3", small_dataset(), max_memory_bytes=max_memory_bytes)
    bad = small_dataset().assign_attrs(unserialisable=object())  # not JSON: zarr refuses it
    with pytest.raises(TypeError):
        write_dataset(out, "tic_1", "s0001-4-3", bad, max_memory_bytes=max_memory_bytes)
    assert not (tmp_path / "cutouts.zarr" / "tic_1" / "s0001-4-3").exists()
    assert os.listdir(tmp_path / ".staging") == []
    assert list(open_cutouts(out)["tic_1"].children) == ["s0002-4-3"]
    # a failed rewrite keeps the group it would have replaced
    with pytest.raises(TypeError):
        write_dataset(out, "tic_1", "s0002-4-3", bad, max_memory_bytes=max_memory_bytes)
    xr.testing.assert_identical(open_cutouts(out)["tic_1/s0002-4-3"].to_dataset().load(), small_dataset())


def test_streamed_and_in_memory_writes_store_the_same(tmp_path):
    ds = small_dataset(3)
    write_dataset(str(tmp_path), "a", "p", ds)
    write_dataset(str(tmp_path), "b", "p", ds, max_memory_bytes=0)
    tree = open_cutouts(str(tmp_path))
    xr.testing.assert_identical(tree["a/p"].to_dataset().load(), tree["b/p"].to_dataset().load())
    files = sorted(p.relative_to(tmp_path / "cutouts.zarr" / "a" / "p")
                   for p in (tmp_path / "cutouts.zarr" / "a" / "p").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "cutouts.zarr" / "b" / "p")
                           for p in (tmp_path / "cutouts.zarr" / "b" / "p").rglob("*") if p.is_file())


def test_open_cutouts_on_an_empty_store(tmp_path):
    assert len(open_cutouts(str(tmp_path / "nothing")).children) == 0


# ---- manifest and resume -----------------------------------------------------------------------

def done_row(out, target_id="tic_1", filename=TESS_FILE, seed=0, payload=None):
    payload = payload if payload is not None else os.urandom(5000)
    rel, n_bytes, sha = write_fits(out, "tesscut", target_id, filename, payload)
    product = product_name("tesscut", filename)
    group = write_dataset(out, target_id, product, small_dataset(seed))
    return ManifestRow(target_id, "tesscut", product, "done", rel, group, n_bytes, sha, "")


def test_manifest_appends_and_reloads(tmp_path):
    out = str(tmp_path)
    m = Manifest(out)
    assert len(m) == 0
    row = done_row(out)
    m.append(row)
    m.extend([ManifestRow("bad_row", "tesscut", status="invalid", error="row 3: no name, no ra/dec"),
              ManifestRow("ra10.000000_dec+80.000000", "tesscut", status="no_coverage", error="no sectors")])
    with open(tmp_path / "manifest.csv", newline="") as fh:
        records = list(csv.DictReader(fh))
    assert list(records[0]) == list(MANIFEST_COLUMNS)
    assert [r["status"] for r in records] == ["done", "invalid", "no_coverage"]
    again = Manifest(out)
    assert again.rows == m.rows
    assert again.get("tic_1", "tesscut", "s0008-1-1") == row
    table = again.to_table()
    assert table.colnames == list(MANIFEST_COLUMNS)
    assert list(table["status"]) == ["done", "invalid", "no_coverage"]
    assert table["n_bytes"][0] == row.n_bytes and table["n_bytes"][1] == -1


def test_later_rows_supersede_earlier_ones(tmp_path):
    out = str(tmp_path)
    m = Manifest(out)
    m.append(ManifestRow("tic_1", "tesscut", "s0008-1-1", "failed", error="503 after 5 tries"))
    row = done_row(out)
    m.append(row)
    assert Manifest(out).rows == [row]


def test_a_product_row_supersedes_the_targets_target_level_row(tmp_path):
    out = str(tmp_path)
    m = Manifest(out)
    m.append(ManifestRow("tic_1", "tesscut", "", "failed", error="discovery: 503 after 5 tries"))
    m.append(ManifestRow("tic_2", "tesscut", "", "no_coverage", error="no sector covers this target"))
    row = done_row(out)
    m.append(row)
    assert m.rows_for("tic_1", "tesscut") == [row]
    assert Manifest(out).rows_for("tic_1", "tesscut") == [row]  # also when read back before close
    with open(tmp_path / "manifest.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 3  # appended: the stale row is still in the file...
    m.close()
    with open(tmp_path / "manifest.csv", newline="") as fh:
        on_disk = [(r["target_id"], r["product"]) for r in csv.DictReader(fh)]
    assert on_disk == [("tic_2", ""), ("tic_1", "s0008-1-1")]  # ...until close rewrites it


def test_discarded_rows_leave_the_file_on_close(tmp_path):
    out = str(tmp_path)
    m = Manifest(out)
    m.extend([ManifestRow("tic_1", "tesscut", "", "failed", error="503"), done_row(out)])
    m.append(ManifestRow("tic_1", "tesscut", "", "failed", error="503 again"))  # newer than the product
    assert [r.product for r in Manifest(out).rows_for("tic_1", "tesscut")] == ["s0008-1-1", ""]
    m.discard("tic_1", "tesscut", "")
    m.discard("tic_9", "tesscut", "")  # unknown keys are ignored
    m.close()
    assert [r.product for r in Manifest(out).rows] == ["s0008-1-1"]


def test_reloaded_rows_keep_the_order_of_the_latest_outcomes(tmp_path):
    """Resume reads a target's latest outcome from the order of its rows: a reloaded manifest
    must order rows as the one that wrote them (by each key's latest row)."""
    out = str(tmp_path)
    m = Manifest(out)
    m.append(ManifestRow("t", "tesscut", "", "no_coverage", error="no sector covers this target"))
    m.append(done_row(out, target_id="t"))
    m.append(ManifestRow("t", "tesscut", "", "no_coverage", error="no sector covers this target"))
    assert m.rows_for("t")[-1].status == "no_coverage"
    assert Manifest(out).rows == m.rows


def test_a_partial_last_line_from_a_crash_is_ignored(tmp_path):
    out = str(tmp_path)
    m = Manifest(out)
    row = done_row(out)
    m.append(row)
    with open(tmp_path / "manifest.csv", "a") as fh:
        fh.write("tic_2,tesscut,s0009-1-1,do")  # the process died here
    assert Manifest(out).rows == [row]


@pytest.mark.parametrize("torn", ["tic_2,tesscut,s0009-1-1,do",
                                  'tic_2,tesscut,,failed,,,,,"POST http://x failed (Connection'])
def test_rows_appended_after_a_crash_mid_append_are_kept(tmp_path, torn):
    """The next run appends to the file the killed one left: its rows must not be glued onto
    (or swallowed by an open quote of) the torn last line."""
    out = str(tmp_path)
    first = done_row(out)
    Manifest(out).append(first)
    with open(tmp_path / "manifest.csv", "a") as fh:
        fh.write(torn)  # the process died here
    m = Manifest(out)
    later = ManifestRow("tic_3", "tesscut", "", "no_coverage", error="no sector covers this target")
    m.append(later)
    assert Manifest(out).rows == [first, later]


def test_a_foreign_csv_is_not_taken_for_a_manifest(tmp_path):
    (tmp_path / "manifest.csv").write_text("a,b\n1,2\n")
    with pytest.raises(Exception, match="manifest columns"):
        Manifest(str(tmp_path))


def test_resume_verifies_done_rows(tmp_path):
    out = str(tmp_path)
    m = Manifest(out)
    row = done_row(out)
    m.append(row)
    m.extend([ManifestRow("t_inv", "tesscut", status="invalid", error="bad"),
              ManifestRow("t_nocov", "zcut", status="no_coverage"),
              ManifestRow("t_fail", "tesscut", "s0001-1-1", "failed", error="timeout")])
    m = Manifest(out)
    assert m.is_done(row)
    assert m.should_skip("tic_1", "tesscut", "s0008-1-1")
    assert m.done_products("tic_1", "tesscut") == ["s0008-1-1"]
    assert m.should_skip("t_inv", "tesscut") and m.should_skip("t_nocov", "zcut")
    assert not m.should_skip("t_inv", "tesscut", retry_failed=True)
    assert not m.should_skip("t_nocov", "zcut", retry_failed=True)
    assert not m.should_skip("t_fail", "tesscut", "s0001-1-1")
    assert not m.should_skip("never_seen", "tesscut", "s0001-1-1")


def test_resume_refetches_a_corrupted_or_truncated_file(tmp_path):
    out = str(tmp_path)
    row = done_row(out)
    Manifest(out).append(row)
    path = tmp_path / row.fits_path
    good = path.read_bytes()
    # same size, one byte flipped: only the sha256 can tell
    path.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
    assert not Manifest(out).should_skip("tic_1", "tesscut", "s0008-1-1")
    path.write_bytes(good[:-1])  # truncated
    assert not Manifest(out).is_done(row)
    path.unlink()
    assert not Manifest(out).is_done(row)
    path.write_bytes(good)
    assert Manifest(out).is_done(row)


def test_size_only_verification_is_cheaper_and_weaker(tmp_path):
    out = str(tmp_path)
    row = done_row(out)
    Manifest(out).append(row)
    path = tmp_path / row.fits_path
    good = path.read_bytes()
    path.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])  # same size, other content
    assert Manifest(out, verify="size").is_done(row)
    assert not Manifest(out).is_done(row)
    path.write_bytes(good[:-10])
    assert not Manifest(out, verify="size").is_done(row)
    with pytest.raises(InvalidQueryError):
        Manifest(out, verify="md5")


def test_resume_refetches_when_the_zarr_group_is_incomplete(tmp_path):
    out = str(tmp_path)
    row = done_row(out)
    Manifest(out).append(row)
    (tmp_path / COMMIT_DIR / f"{row.zarr_group}.json").unlink()
    assert not Manifest(out).is_done(row)


def test_rows_are_validated_and_pickle():
    with pytest.raises(InvalidQueryError, match="status"):
        ManifestRow("t", "tesscut", status="ok")
    row = ManifestRow("t", "tesscut", "s0001-1-1", "done", "fits/x", "t/s0001-1-1", np.int64(12), "ab")
    assert row.n_bytes == 12 and type(row.n_bytes) is int
    assert pickle.loads(pickle.dumps(row)) == row


# ---- real files: the recorded MAST cutouts and the emulator over HTTP --------------------------

ASTROQUERY_DATA = os.path.join(os.path.dirname(pytest.importorskip("astroquery.mast").__file__), "tests", "data")


def recorded_member(zip_name: str) -> tuple[str, bytes]:
    import zipfile

    with zipfile.ZipFile(os.path.join(ASTROQUERY_DATA, zip_name)) as zf:
        (name,) = zf.namelist()
        return name, zf.read(name)


def store_product(out, service, target_id, filename, data, decode):
    """What a worker does with one delivered file: FITS as delivered, then the decoded dataset
    (decoded from the stored file, so that it carries its file name)."""
    rel, n_bytes, sha = write_fits(out, service, target_id, filename, data)
    product = product_name(service, filename)
    group = write_dataset(out, target_id, product, decode(os.path.join(out, rel)))
    return ManifestRow(target_id, service, product, "done", rel, group, n_bytes, sha)


def test_real_mast_files_round_trip(tmp_path):
    """The 2018 TESSCut TPF (float APERTURE, empty SECTOR, malformed column WCS) and the 2020 ZCut file."""
    from mastcut_dask.decode.readers import image_to_xarray, tpf_to_xarray

    out = str(tmp_path)
    tess_name, tess_bytes = recorded_member("astrocut_107.27_-70.0_5x5.zip")
    zcut_name, zcut_bytes = recorded_member("astrocut_189.49206_62.20615_100x100px_f.zip")
    rows = [store_product(out, "tesscut", "ra107.270000_dec-70.000000", tess_name, tess_bytes, tpf_to_xarray),
            store_product(out, "zcut", "ra189.492060_dec+62.206150", zcut_name, zcut_bytes, image_to_xarray)]
    assert [r.zarr_group for r in rows] == ["ra107.270000_dec-70.000000/s0001-4-3",
                                            "ra189.492060_dec+62.206150/candels_gn_30mas"]
    Manifest(out).extend(rows)
    tree = open_cutouts(out)
    for row, decode in zip(rows, (tpf_to_xarray, image_to_xarray)):
        stored = tmp_path / row.fits_path
        assert Manifest(out).is_done(row)
        xr.testing.assert_identical(tree[row.zarr_group].to_dataset().load(), decode(stored))


def test_lazy_decoded_tpf_is_written_whole(tmp_path):
    from mastcut_dask.decode.readers import tpf_to_xarray

    name, data = recorded_member("astrocut_107.27_-70.0_5x5.zip")
    path = tmp_path / name
    path.write_bytes(data)
    lazy = tpf_to_xarray(path, chunks=500)  # dask columns, read on write
    write_dataset(str(tmp_path / "out"), "t", "s0001-4-3", lazy)
    got = open_cutouts(str(tmp_path / "out"))["t/s0001-4-3"].to_dataset().load()
    xr.testing.assert_identical(got, tpf_to_xarray(path))


def test_emulator_zcut_products_store_and_resume(emulator, tmp_path):
    """Files fetched over HTTP from the emulator: stored, recorded, verified on a second pass."""
    from mastcut_dask.services.clients import ZcutClass
    from mastcut_dask.decode.readers import image_to_xarray

    zcut = ZcutClass(base_url=emulator.url, resolver_url=emulator.resolver_url)
    files = zcut.download_cutouts((189.49206, 62.20615), size=6, path=str(tmp_path / "download"))
    assert len(files) >= 2
    out = str(tmp_path / "run")
    manifest = Manifest(out)
    for local in files["Local Path"]:
        name = os.path.basename(local)
        product = product_name("zcut", name)
        assert not manifest.should_skip("goods_n_field", "zcut", product)
        manifest.append(store_product(out, "zcut", "goods_n_field", name, str(local),
                                      image_to_xarray))
    second = Manifest(out)
    products = sorted(product_name("zcut", os.path.basename(p)) for p in files["Local Path"])
    assert sorted(second.done_products("goods_n_field", "zcut")) == products
    assert "candels_gn_30mas" in products
    tree = open_cutouts(out)
    assert sorted(tree["goods_n_field"].children) == products
    for row in second:
        xr.testing.assert_identical(tree[row.zarr_group].to_dataset().load(),
                                    image_to_xarray(os.path.join(out, row.fits_path)))


@pytest.mark.slow
def test_a_killed_client_loses_no_recorded_row(tmp_path):
    """Rows appended before the client process dies (SIGKILL: no cleanup, no close) are on disk."""
    import signal
    import subprocess
    import sys

    code = (
        "import os, signal, sys\n"
        "from mastcut_dask.store import Manifest, ManifestRow\n"
        "m = Manifest(sys.argv[1])\n"
        "for i in range(3):\n"
        "    m.append(ManifestRow(f't{i}', 'tesscut', status='no_coverage'))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert [r.target_id for r in Manifest(str(tmp_path)).rows] == ["t0", "t1", "t2"]


def test_emulator_tpfs_fixed_and_moving_round_trip(tmp_path):
    """Emulator TESSCut TPFs (one per sector, and a path-focused moving-target TPF) through the store."""
    from mastcut_dask.decode.readers import tpf_to_xarray
    from mastcut_dask.emulator import tess

    out = str(tmp_path)
    fixed = tess.cutout_files(124.531756, -68.313, 5, 4, "px", max_cadences=12)
    (moving,) = tess.moving_cutout_files("Eleonora", None, 5, 5, "px", sectors=[6], max_cadences=6)
    assert len(fixed) >= 2
    manifest = Manifest(out)
    rows = [store_product(out, "tesscut", "ra124.531756_dec-68.313000", name, data, tpf_to_xarray)
            for name, data in fixed]
    rows.append(store_product(out, "tesscut", "eleonora", *moving, tpf_to_xarray))
    manifest.extend(rows)
    assert [r.product for r in rows[:-1]] == [name.split("_")[0][len("tess-"):] for name, _ in fixed]
    assert rows[-1].zarr_group.startswith("eleonora/eleonora_")

    tree = open_cutouts(out)
    assert len(tree["ra124.531756_dec-68.313000"].children) == len(fixed)
    again = Manifest(out)
    for row, (name, data) in zip(rows, [*fixed, moving]):
        assert again.should_skip(row.target_id, "tesscut", row.product)
        assert (tmp_path / row.fits_path).read_bytes() == data  # as the service delivered it
        got = tree[row.zarr_group].to_dataset().load()
        xr.testing.assert_identical(got, tpf_to_xarray(tmp_path / row.fits_path))
    assert "tgt_ra" in tree[rows[-1].zarr_group].to_dataset().coords


def test_emulator_hapcut_products_over_http(emulator, tmp_path):
    """HAPCut files from the emulator as a real HTTP server: one product per skycell/detector/filter."""
    from mastcut_dask.services.clients import HapcutClass
    from mastcut_dask.decode.readers import image_to_xarray

    hap = HapcutClass(base_url=emulator.url, resolver_url=emulator.resolver_url)
    files = hap.download_cutouts((351.347812, 28.497808), size=6, path=str(tmp_path / "download"))
    out = str(tmp_path / "run")
    rows = [store_product(out, "hapcut", "hap_field", os.path.basename(p), str(p), image_to_xarray)
            for p in files["Local Path"]]
    Manifest(out).extend(rows)
    products = [r.product for r in rows]
    assert len(set(products)) == len(products) >= 2
    assert all(p.startswith("p2007x09y05_") for p in products)
    tree = open_cutouts(out)
    for row in Manifest(out):
        assert Manifest(out).is_done(row)
        xr.testing.assert_identical(tree[row.zarr_group].to_dataset().load(),
                                    image_to_xarray(os.path.join(out, row.fits_path)))


def test_rows_without_fits_verify_their_group_and_out_is_resolved(tmp_path, monkeypatch):
    out = str(tmp_path)
    group = write_dataset(out, "tic_1", "lightcurve", small_dataset())
    row = ManifestRow("tic_1", "tesscut", "lightcurve", "done", zarr_group=group)
    m = Manifest(out)
    m.append(row)
    assert m.is_done(row)
    assert not m.is_done(ManifestRow("tic_1", "tesscut", "x", "done"))  # nothing to verify: not done
    assert len(Manifest(out).to_table()) == 1 and len(Manifest(str(tmp_path / "new")).to_table()) == 0
    monkeypatch.chdir(tmp_path)
    assert resolve_out("results/") == os.path.join(str(tmp_path), "results")
    assert resolve_out(f"file://{tmp_path}") == str(tmp_path)
    assert resolve_out("s3://bucket/run1") == "s3://bucket/run1"


def test_file_urls_work_like_paths(tmp_path):
    out = f"file://{tmp_path}/run"
    rel, n_bytes, sha = write_fits(out, "tesscut", "tic_1", TESS_FILE, b"SIMPLE")
    group = write_dataset(out, "tic_1", "s0008-1-1", small_dataset())
    m = Manifest(out)
    m.append(ManifestRow("tic_1", "tesscut", "s0008-1-1", "done", rel, group, n_bytes, sha))
    assert (tmp_path / "run" / rel).read_bytes() == b"SIMPLE"
    assert Manifest(str(tmp_path / "run")).should_skip("tic_1", "tesscut", "s0008-1-1")
    xr.testing.assert_identical(open_cutouts(out)["tic_1/s0008-1-1"].to_dataset().load(), small_dataset())


def test_clean_staging_removes_only_old_leftovers(tmp_path):
    out = str(tmp_path)
    write_fits(out, "tesscut", "tic_1", TESS_FILE, b"kept")
    staging = tmp_path / ".staging"
    old_file, old_dir, fresh = staging / "abc-x.fits", staging / "def-tic_1-s0001", staging / "ghi-y.fits"
    old_file.write_bytes(b"partial")
    (old_dir / "flux").mkdir(parents=True)
    (old_dir / "flux" / "zarr.json").write_text("{}")
    fresh.write_bytes(b"in progress")
    two_hours_ago = time.time() - 7200
    for path in (old_file, old_dir):
        os.utime(path, (two_hours_ago, two_hours_ago))
    assert clean_staging(out) == 2
    assert sorted(os.listdir(staging)) == ["ghi-y.fits"]
    assert clean_staging(out, older_than=0) == 1 and os.listdir(staging) == []
    assert (tmp_path / "fits" / "tesscut" / "tic_1" / TESS_FILE).read_bytes() == b"kept"
    assert clean_staging(str(tmp_path / "never_written")) == 0


def test_awkward_error_messages_survive_the_csv(tmp_path):
    out = str(tmp_path)
    error = 'HTTP 503: "busy",\nretry later\r\n\x0c page \u2028 sep; é ✓'
    rows = [ManifestRow("t1", "tesscut", "s0001-1-1", "failed", error=error),
            ManifestRow("t2", "zcut", status="invalid", error="row 2, line 3: bad size")]
    Manifest(out).extend(rows)
    assert Manifest(out).rows == rows
    with open(tmp_path / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write('t3,zcut,,failed,,,,,"an unfinished\nquoted field')  # killed mid-row
    assert Manifest(out).rows == rows


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(service=st.sampled_from(["tesscut", "zcut", "hapcut"]),
       filename=st.one_of(st.text(max_size=80),
                          st.from_regex(r"tess-s\d{4}-\d-\d_[-0-9._]{0,20}_astrocut\.fits", fullmatch=True),
                          st.from_regex(r"[a-z0-9_]{1,20}_-?\d{1,3}\.\d{1,6}_-?\d{1,2}\.\d{1,6}_\d+pix-x-\d+pix_astrocut\.fits",
                                        fullmatch=True)))
def test_any_server_file_name_gives_a_safe_product_or_is_refused(service, filename):
    try:
        product = product_name(service, filename)
    except UnsafeArchiveError:
        return
    assert check_name(product) == product
    assert "/" not in product and ".." not in product and not product.startswith((".", "_", "-"))
    assert fits_path(service, "t", filename).split("/") == ["fits", service, "t", filename]
