"""Decode throughput: mastcut_dask's TPF decoder next to a plain astropy column read and lightkurve.

For 5x5, 10x10 and 30x30 emulator TPFs at about 1,300, 3,500 and 11,000 cadences (sectors 1,
33 and 61 of the emulator), prints MB/s (file size over wall time, warm page cache, best of
``--repeat``) for:

* ``astropy``: ``fits.open`` + the FLUX column as a native-order numpy array;
* ``astropy4``: the same for the four pixel columns the decoder returns (FLUX, FLUX_ERR,
  FLUX_BKG, FLUX_BKG_ERR): the same work as the decoder minus labels, WCS and metadata;
* ``decode``: :func:`mastcut_dask.tpf_to_xarray` (all four pixel columns, per-cadence columns,
  aperture, WCS and ra/dec, header text);
* ``lazy``: ``tpf_to_xarray(path, chunks="auto")`` then ``.flux.values``;
* ``lightkurve``: ``lightkurve.read(path).flux`` (its default quality mask);

and the zarr v3 write and read-back (``open_zarr(...).load()``) throughput of the decoded
dataset (MB = ``ds.nbytes``). Files are made with the emulator in a temporary directory.

Run: ``python benchmarks/decode.py [--repeat 3] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings

import numpy as np

CASES = [  # (label, ra, dec, sector): sector 1 -> 1,282 cadences, 33 -> 3,495, 61 -> 10,555
    ("~1,300", 107.18696, -70.50919, 1),
    ("~3,500", 107.18696, -70.50919, 33),
    ("~11,000", 135.1408, -5.1915, 61),
]
SIZES = (5, 10, 30)
FOUR = ("FLUX", "FLUX_ERR", "FLUX_BKG", "FLUX_BKG_ERR")


def best_of(repeat: int, func) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def astropy_read(path: str, columns=("FLUX",)) -> list[np.ndarray]:
    from astropy.io import fits

    with fits.open(path) as hdul:
        out = []
        for name in columns:
            column = hdul[1].data[name]
            out.append(np.array(column, dtype=column.dtype.newbyteorder("=")))
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="only the 5x5 and 10x10 cutouts")
    parser.add_argument("--no-lightkurve", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    import xarray as xr

    from mastcut_dask import tpf_to_xarray
    from mastcut_dask.emulator.tess import cutout_files

    if not args.no_lightkurve:
        import lightkurve as lk

    workdir = tempfile.mkdtemp(prefix="mastcut-bench-decode-")
    header = (f"{'cutout':>7} {'cadences':>9} {'MB':>7} | {'astropy':>8} {'astropy4':>8} {'decode':>8} {'lazy':>8} "
              f"{'lightkurve':>10} | {'dec/astropy':>11} {'dec/astropy4':>12} | {'zarr write':>10} "
              f"{'zarr read':>9}   (MB/s)")
    print(header)
    print("-" * len(header))
    try:
        for size in SIZES[:2] if args.quick else SIZES:
            for label, ra, dec, sector in CASES:
                name, raw = cutout_files(ra, dec, size, size, "px", sectors=[sector])[0]
                path = os.path.join(workdir, name)
                with open(path, "wb") as fh:
                    fh.write(raw)
                mb = len(raw) / 1e6
                del raw
                astropy_read(path)  # warm the page cache for every reader alike
                t_astropy = best_of(args.repeat, lambda: astropy_read(path))
                t_astropy4 = best_of(args.repeat, lambda: astropy_read(path, FOUR))
                t_decode = best_of(args.repeat, lambda: tpf_to_xarray(path))
                t_lazy = best_of(args.repeat, lambda: tpf_to_xarray(path, chunks="auto").flux.values)
                if args.no_lightkurve:
                    t_lk = float("nan")
                else:
                    t_lk = best_of(args.repeat, lambda: lk.read(path).flux)
                ds = tpf_to_xarray(path)
                n_cad = ds.sizes["time"]
                store = os.path.join(workdir, "bench.zarr")

                def write():
                    shutil.rmtree(store, ignore_errors=True)
                    ds.to_zarr(store, zarr_format=3, consolidated=False)

                t_write = best_of(args.repeat, write)
                t_read = best_of(args.repeat, lambda: xr.open_zarr(store, consolidated=False).load())
                ds_mb = ds.nbytes / 1e6
                print(f"{size:>3}x{size:<3} {n_cad:>9,} {mb:>7.1f} | {mb / t_astropy:>8.0f} {mb / t_astropy4:>8.0f} "
                      f"{mb / t_decode:>8.0f} {mb / t_lazy:>8.0f} {mb / t_lk:>10.0f} | "
                      f"{t_decode / t_astropy:>10.2f}x {t_decode / t_astropy4:>11.2f}x | "
                      f"{ds_mb / t_write:>10.0f} {ds_mb / t_read:>9.0f}", flush=True)
                os.remove(path)
                shutil.rmtree(store, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
