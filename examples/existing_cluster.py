"""Fetch cutouts on a Dask cluster that is already running, e.g. started with
``dask scheduler`` and
``dask worker tcp://HOST:8786 --nworkers 4 --preload mastcut_dask.pipeline.worker_preload``::

    python examples/existing_cluster.py tcp://HOST:8786 targets.csv s3://bucket/run1

Every worker must have mastcut_dask installed. However many workers and threads there are,
MAST never sees more than 10 requests in flight or 5 starts per second from this run: the
budget lives on the scheduler (`mastcut_dask.pipeline.throttle.ClusterThrottle`).
"""

from __future__ import annotations

import sys

from distributed import Client

import mastcut_dask as mc


def main(scheduler: str, targets: str, out: str) -> int:
    with Client(scheduler) as client:
        run = mc.fetch_cutouts(targets, service="tesscut", size=10, out=out, client=client)
        table = run.compute()
    failed = [row for row in table if row["status"] == "failed"]
    print(f"{len(table)} rows, {len(failed)} failed; open the results with mastcut_dask.open_cutouts({out!r})")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
