"""CPU cost of the emulator's ZCut and HAPCut product functions (no HTTP).

Run: ``python benchmarks/deepfields.py``. Prints milliseconds of process CPU time per call,
the median of several rounds after one warm-up call (which fills the per-survey caches).
"""

from __future__ import annotations

import statistics
import time

from mastcut_dask.emulator.deepfields import (hapcut_cutout_files, zcut_cutout_files,
                                              zcut_surveys_at)

GN = (189.49206, 62.20615)
HAP = (351.347812, 28.497808)


def cpu_ms(call, rounds: int = 7, per_round: int = 10) -> float:
    call()  # warm the caches (source lists, header templates)
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(per_round):
            call()
        samples.append((time.process_time() - start) / per_round * 1000.0)
    return statistics.median(samples)


def main() -> None:
    cases = {
        "zcut_surveys_at (GOODS-N)": lambda: zcut_surveys_at(*GN),
        "zcut FITS 100x100, candels_gn_30mas (3 bands)":
            lambda: zcut_cutout_files(*GN, 100, 100, "px", survey="candels_gn_30mas"),
        "zcut FITS 100x100, all 4 surveys (20 images)":
            lambda: zcut_cutout_files(*GN, 100, 100, "px"),
        "zcut JPG 100x100, candels_gn_30mas (3 images)":
            lambda: zcut_cutout_files(*GN, 100, 100, "px", survey="candels_gn_30mas", fmt="jpg"),
        "zcut PNG 100x100, 3dhst_goods-n (10 images)":
            lambda: zcut_cutout_files(*GN, 100, 100, "px", survey="3dhst_goods-n", fmt="png"),
        "hapcut FITS 5x5 (4 products)": lambda: hapcut_cutout_files(*HAP, 5, 5, "px"),
        "hapcut FITS 100x100 (4 products)": lambda: hapcut_cutout_files(*HAP, 100, 100, "px"),
    }
    for label, call in cases.items():
        print(f"{label:52s} {cpu_ms(call):7.2f} ms CPU per call")


if __name__ == "__main__":
    main()
