"""A moving target through the pipeline: every sector an asteroid crossed, as path-following TPFs.

Offline against the bundled emulator (pass --base-url/--resolver-url for MAST)::

    python examples/moving_target.py --name Eleonora --out mt-results
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np

import mastcut_dask as mc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="Eleonora", help="object name as JPL Horizons knows it")
    parser.add_argument("--out", default="mt-results")
    parser.add_argument("--base-url")
    parser.add_argument("--resolver-url")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        base, resolver = args.base_url, args.resolver_url
        if base is None:
            from mastcut_dask.emulator import MastEmulator

            emu = stack.enter_context(MastEmulator(max_cadences=200))
            base, resolver = emu.url, emu.resolver_url
        # moving=True: sectors come from moving_target/sector, cutouts follow the object's path.
        table = mc.fetch_cutouts([{"name": args.name, "moving": True, "mt_type": "smallbody"}],
                                 service="tesscut", size=10, out=args.out, base_url=base,
                                 resolver_url=resolver, lightcurve="all").compute()
    table.pprint(max_width=120)
    tree = mc.open_cutouts(args.out)
    for row in table:
        if row["status"] != "done":
            continue
        ds = tree[row["zarr_group"]].to_dataset()
        ra, dec = ds["tgt_ra"].values, ds["tgt_dec"].values
        print(f"{row['product']}: {ds.sizes['time']} cadences, path from ({ra[0]:.3f}, {dec[0]:.3f}) "
              f"to ({ra[-1]:.3f}, {dec[-1]:.3f}) deg, median flux {np.nanmedian(ds['flux'].values):.1f} e-/s")


if __name__ == "__main__":
    main()
