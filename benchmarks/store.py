"""CPU per cutout of a worker's own work on one small TPF: decode, zarr encode, store.

First, the CPU time of importing what a worker needs (`mastcut_dask.pipeline.worker_preload`). Then the
throughput benchmark's cutout (an emulator 5x5 TPF of 100 cadences) is decoded and stored
``--n`` times in one process, after a few warm-up rounds; printed per round (so that a machine
whose speed drifts shows it), as process CPU milliseconds per cutout:

* ``decode``: `mastcut_dask.tpf_to_xarray` of the file;
* ``encode``: `mastcut_dask.store.zarr_encode.encode_dataset` of the decoded dataset (the zarr v3
  group in memory);
* ``to_zarr``: xarray's ``Dataset.to_zarr`` into a memory store, for comparison;
* ``store``: `mastcut_dask.store.groups.write_dataset` (encode, files, rename, commit marker) into a
  temporary local folder.

Run: ``python benchmarks/store.py [--n 200] [--rounds 3] [--cadences 100]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time


def cpu_ms_per_call(n: int, func) -> float:
    start = time.process_time()
    for i in range(n):
        func(i)
    return (time.process_time() - start) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="cutouts per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cadences", type=int, default=100)
    args = parser.parse_args()

    start = time.process_time()
    from mastcut_dask.pipeline import worker_preload

    worker_preload.import_all()
    print(f"imports (mastcut_dask.pipeline.worker_preload): {time.process_time() - start:.2f} s CPU")

    from zarr.storage import MemoryStore

    from mastcut_dask import tpf_to_xarray
    from mastcut_dask.emulator.tess import cutout_files, sectors_at, tic_position
    from mastcut_dask.store.groups import write_dataset, zarr_ready
    from mastcut_dask.store.zarr_encode import encode_dataset

    ra, dec = tic_position(307210830)
    sector = sectors_at(ra, dec)[0].sector
    name, raw = cutout_files(ra, dec, 5, 5, "px", sectors=[sector], max_cadences=args.cadences)[0]
    workdir = tempfile.mkdtemp(prefix="mastcut-bench-store-")
    try:
        path = os.path.join(workdir, name)
        with open(path, "wb") as fh:
            fh.write(raw)
        ds = tpf_to_xarray(path)
        ready = zarr_ready(ds)
        out = os.path.join(workdir, "out")
        print(f"5x5 TPF, {ds.sizes['time']} cadences, {len(raw) / 1e3:.0f} kB; CPU ms per cutout, "
              f"{args.n} cutouts per figure")
        for round_ in range(args.rounds + 1):
            figures = {
                "decode": cpu_ms_per_call(args.n, lambda i: tpf_to_xarray(path)),
                "encode": cpu_ms_per_call(args.n, lambda i: encode_dataset(ready)),
                "to_zarr": cpu_ms_per_call(args.n, lambda i: ready.to_zarr(
                    MemoryStore(store_dict={}), mode="w", zarr_format=3, consolidated=False)),
                "store": cpu_ms_per_call(args.n, lambda i: write_dataset(out, f"r{round_}-{i}", name[:-5], ds)),
            }
            if round_:  # round 0 warms caches and imports
                print(f"round {round_}: " + "  ".join(f"{k} {v:6.2f}" for k, v in figures.items()), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
