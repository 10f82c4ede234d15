"""The store on S3: a real moto server on loopback, s3fs with endpoint_url, dummy credentials.

Writes happen in another process (as on Dask workers, from the OUT URL string and a plain
storage_options dict); the manifest, resume checks and open_cutouts run here, as on the client.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import xarray as xr

from mastcut_dask.services.products import product_name
from mastcut_dask.store.fits_files import write_fits
from mastcut_dask.store.groups import write_dataset
from mastcut_dask.store.layout import clean_staging
from mastcut_dask.store.manifest import Manifest, ManifestRow
from mastcut_dask.store.tree import open_cutouts
from mastcut_dask.targets.read import read_targets

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

TESS_FILE = "tess-s0008-1-1_135.140800_-5.191500_5x5_astrocut.fits"
ZCUT_FILE = "candels_gn_30mas_189.492060_62.206150_100.0pix-x-100.0pix_astrocut.fits"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 (free port), with dummy credentials in the environment."""
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_out(s3_endpoint, request):
    """A fresh bucket per test: (OUT URL, storage_options)."""
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    bucket = "run-" + hashlib.sha1(request.node.name.encode()).hexdigest()[:12]
    fs.mkdir(bucket)
    return f"s3://{bucket}/run1", options


def dataset(seed: int, n_time: int = 3) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    return xr.Dataset(
        {"flux": (("time", "y", "x"), rng.normal(size=(n_time, 2, 3)).astype("float32"), {"units": "electron / s"}),
         "aperture": (("y", "x"), rng.random((2, 3)) > 0.5)},
        coords={"time": ("time", 2000.0 + np.arange(n_time), {"units": "d"}),
                "ffi_file": ("time", np.array([f"ffi-{i}" for i in range(n_time)])),
                "ra": (("y", "x"), rng.random((2, 3)))},
        attrs={"sector": 8, "object": "TIC 307210830", "wcs_valid": False, "creator": None},
    )


def store_one(out, options, target_id, filename, payload, seed):
    """What a worker does for one product: FITS first, then the dataset."""
    rel, n_bytes, sha = write_fits(out, "tesscut", target_id, filename, payload, storage_options=options)
    product = product_name("tesscut", filename)
    group = write_dataset(out, target_id, product, dataset(seed), storage_options=options)
    return ManifestRow(target_id, "tesscut", product, "done", rel, group, n_bytes, sha)


@pytest.mark.slow
def test_write_resume_and_open_cutouts_over_s3(s3_out):
    out, options = s3_out
    payloads = {"tic_1": os.urandom(70_000), "tic_2": os.urandom(1_500_000)}
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter, as a Dask worker process
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        rows = list(pool.map(store_one, [out] * 2, [options] * 2, list(payloads), [TESS_FILE] * 2,
                             list(payloads.values()), [1, 2]))
    manifest = Manifest(out, storage_options=options)
    manifest.extend(rows[:1])
    manifest.append(rows[1])
    manifest.append(ManifestRow("ra10.000000_dec+80.000000", "tesscut", status="no_coverage", error="no sectors"))

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    root = out[len("s3://"):]
    assert fs.cat(f"{root}/fits/tesscut/tic_2/{TESS_FILE}") == payloads["tic_2"]
    assert not fs.exists(f"{root}/.staging") or fs.ls(f"{root}/.staging") == []
    # Before close: each append is one journal object, and a reader sees every row.
    assert len(fs.ls(f"{root}/.manifest-journal")) == 3
    assert Manifest(out, storage_options=options).rows == manifest.rows
    manifest.close()  # folds the journal into manifest.csv
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/.manifest-journal") or fs.ls(f"{root}/.manifest-journal") == []
    text = fs.cat(f"{root}/manifest.csv").decode()
    assert text.splitlines()[0] == "target_id,service,product,status,fits_path,zarr_group,n_bytes,sha256,error"
    assert len(text.splitlines()) == 4

    again = Manifest(out, storage_options=options)
    assert again.rows == manifest.rows
    assert again.should_skip("tic_1", "tesscut", "s0008-1-1")
    assert again.should_skip("tic_2", "tesscut", "s0008-1-1")
    assert again.should_skip("ra10.000000_dec+80.000000", "tesscut")

    tree = open_cutouts(out, storage_options=options)
    assert sorted(tree.children) == ["tic_1", "tic_2"]
    for seed, target_id in ((1, "tic_1"), (2, "tic_2")):
        xr.testing.assert_identical(tree[f"{target_id}/s0008-1-1"].to_dataset().load(), dataset(seed))

    # a corrupted object on the remote is caught by the sha256, same size or not
    path = f"{root}/fits/tesscut/tic_1/{TESS_FILE}"
    good = fs.cat(path)
    fs.pipe(path, good[:-1] + bytes([good[-1] ^ 1]))
    assert not Manifest(out, storage_options=options).should_skip("tic_1", "tesscut", "s0008-1-1")
    fs.pipe(path, good)
    assert Manifest(out, storage_options=options).should_skip("tic_1", "tesscut", "s0008-1-1")


@pytest.mark.slow
def test_interrupted_writes_on_s3_never_look_complete(s3_out):
    out, options = s3_out

    class Broken:
        def __init__(self):
            self.calls = 0

        def read(self, n=-1):
            self.calls += 1
            if self.calls > 2:
                raise ConnectionError("reset")
            return b"z" * (1 << 20)

    with pytest.raises(ConnectionError):
        write_fits(out, "zcut", "ngc_1234", ZCUT_FILE, Broken(), storage_options=options)
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    root = out[len("s3://"):]
    assert not fs.exists(f"{root}/fits/zcut/ngc_1234/{ZCUT_FILE}")

    # a failed encode changes nothing: the previous group stays complete and readable
    write_dataset(out, "ngc_1234", "candels_gn_30mas", dataset(3), storage_options=options)
    with pytest.raises(TypeError):
        write_dataset(out, "ngc_1234", "candels_gn_30mas", dataset(4).assign_attrs(bad=object()),
                      storage_options=options)
    xr.testing.assert_identical(
        open_cutouts(out, storage_options=options)["ngc_1234/candels_gn_30mas"].to_dataset().load(), dataset(3))
    # a group streamed in place loses its marker first: a rewrite failing midway leaves it unread
    with pytest.raises(TypeError):
        write_dataset(out, "ngc_1234", "candels_gn_30mas", dataset(4).assign_attrs(bad=object()),
                      storage_options=options, max_memory_bytes=0)
    assert len(open_cutouts(out, storage_options=options).children) == 0
    row = ManifestRow("ngc_1234", "zcut", "candels_gn_30mas", "done", f"fits/zcut/ngc_1234/{ZCUT_FILE}",
                      "ngc_1234/candels_gn_30mas", 5, "0" * 64)
    assert not Manifest(out, storage_options=options).is_done(row)
    # and the streamed path writes a readable group on S3 too
    write_dataset(out, "ngc_1234", "candels_gn_30mas", dataset(5), storage_options=options, max_memory_bytes=0)
    xr.testing.assert_identical(
        open_cutouts(out, storage_options=options)["ngc_1234/candels_gn_30mas"].to_dataset().load(), dataset(5))


def test_read_targets_from_s3(s3_out):
    out, options = s3_out
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    root = out[len("s3://"):]
    fs.pipe(f"{root}/targets.csv", b"name,ra,dec\nTIC 307210830,,\n,135.1408,-5.1915\n,,\n")
    tl = read_targets(f"{out}/targets.csv", storage_options=options)
    assert [t.target_id for t in tl.targets] == ["tic_307210830", "ra135.140800_dec-5.191500"]
    assert [bad.row for bad in tl.invalid] == [3]


def test_remote_appends_cost_one_small_object_each_until_flush(s3_out):
    """Rewriting manifest.csv on every row would send O(rows^2) bytes; each append is one
    journal object instead, folded in on flush, and nothing recorded is ever out of sight."""
    out, options = s3_out
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    root = out[len("s3://"):]
    rows = [ManifestRow(f"t{i}", "zcut", status="no_coverage") for i in range(5)]
    with Manifest(out, storage_options=options, remote_flush_interval=3600) as manifest:
        for row in rows:
            manifest.append(row)
        assert not fs.exists(f"{root}/manifest.csv")
        sizes = [len(fs.cat(name)) for name in fs.ls(f"{root}/.manifest-journal")]
        assert len(sizes) == 5 and max(sizes) < 200  # a header and one row each
        assert Manifest(out, storage_options=options).rows == rows  # e.g. after a crash here
    fs.invalidate_cache()
    assert Manifest(out, storage_options=options).rows == rows
    assert fs.cat(f"{root}/manifest.csv").decode().count("\n") == 6
    assert not fs.exists(f"{root}/.manifest-journal") or fs.ls(f"{root}/.manifest-journal") == []


def test_a_row_journaled_after_the_last_fold_supersedes_the_file(s3_out):
    out, options = s3_out
    first = Manifest(out, storage_options=options)
    first.append(ManifestRow("t1", "zcut", status="failed", error="503"))
    first.close()
    later = Manifest(out, storage_options=options, remote_flush_interval=3600)
    later.append(ManifestRow("t1", "zcut", status="no_coverage"))  # journaled, not folded: a crash
    assert [r.status for r in Manifest(out, storage_options=options).rows] == ["no_coverage"]


def test_clean_staging_on_s3(s3_out):
    out, options = s3_out
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    root = out[len("s3://"):]
    fs.pipe(f"{root}/.staging/abc-left-over.fits", b"partial")
    assert clean_staging(out, storage_options=options) == 0  # young: a running writer may own it
    assert clean_staging(out, storage_options=options, older_than=0) == 1
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/.staging/abc-left-over.fits")
