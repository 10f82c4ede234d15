"""Survey light curves on Dask: TESS cutouts for a target list, stitched light curves, a period search.

A quick look, not a planet search: one sector per target is searched, so transits with periods
longer than a few days (one or two events per sector) are often missed or aliased. On the
emulator each line also shows the injected transit, to compare.

Runs offline against the bundled emulator (pass --base-url/--resolver-url for MAST itself)::

    python examples/survey_lightcurves.py --out lc-results
"""

from __future__ import annotations

import argparse
import contextlib
from importlib import resources

import numpy as np
import pandas as pd

import mastcut_dask as mc


def best_period(lc) -> float:
    """Period (days) of the strongest box-least-squares transit signal, 0.5 to 15 days.

    The search runs on the sector with the most good cadences: stitched sectors can be years
    apart, and a period grid fine enough for such a baseline is needlessly expensive.
    """
    from astropy.timeseries import BoxLeastSquares

    time, flux = lc["time"].values, lc["flux"].values.astype(float)
    good = np.isfinite(time) & np.isfinite(flux) & (lc["quality"].values == 0)  # flagged cadences out
    sectors, counts = np.unique(lc["sector"].values[good], return_counts=True)
    if len(counts) == 0 or counts.max() < 50:
        return float("nan")
    pick = good & (lc["sector"].values == sectors[np.argmax(counts)])
    t, f = time[pick], flux[pick]
    # Divide out slow trends (background, scattered light) with a centred one-day running median;
    # transits last hours, so they survive it.
    trend = pd.Series(f, index=pd.to_timedelta(t - t[0], unit="D")).rolling("1D", center=True).median()
    f = f / trend.to_numpy()
    max_period = min(15.0, (t.max() - t.min()) / 2)  # at least two transits in the data
    if max_period <= 0.5:
        return float("nan")
    result = BoxLeastSquares(t, f).autopower([0.04, 0.08, 0.16], minimum_period=0.5,
                                             maximum_period=max_period, frequency_factor=2.0)
    return float(result.period[np.argmax(result.power)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="lc-results")
    parser.add_argument("--targets", default=str(resources.files("mastcut_dask").joinpath("data/demo_targets.csv")))
    parser.add_argument("--base-url")
    parser.add_argument("--resolver-url")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        base, resolver = args.base_url, args.resolver_url
        if base is None:
            from mastcut_dask.emulator import MastEmulator

            # Whole sectors up to 3,500 cadences: a transit search needs more than a few days.
            emu = stack.enter_context(MastEmulator(max_cadences=3500))
            base, resolver = emu.url, emu.resolver_url
        table = mc.fetch_cutouts(args.targets, service="tesscut", size=7, out=args.out, base_url=base,
                                 resolver_url=resolver,
                                 # a 2-pixel disc around each target: never empty, unlike a
                                 # threshold mask around a faint star
                                 lightcurve=2.0).compute()
    print(f"{len(table)} rows: {dict(zip(*np.unique(table['status'], return_counts=True)))}")
    tree = mc.open_cutouts(args.out)
    for target in sorted(tree.children):
        node = tree[target]
        if "lightcurve" not in node.children:
            continue
        lc = node["lightcurve"].to_dataset()
        sectors = sorted(set(int(s) for s in lc["sector"].values))
        period = best_period(lc)
        line = f"{target:28s} sectors {str(sectors):20s} BLS period {period:7.3f} d"
        if args.base_url is None and "ra_obj" in lc.attrs:  # moving targets have no fixed position
            # On the emulator every star's injected transit is known: show it beside the search.
            from mastcut_dask.emulator.sky import star_truth

            truth = star_truth(lc.attrs["ra_obj"], lc.attrs["dec_obj"], radius=0.01)
            if truth is not None:
                line += f"   injected {truth.period:7.3f} d, depth {truth.depth:.2%}"
        print(line)


if __name__ == "__main__":
    main()
