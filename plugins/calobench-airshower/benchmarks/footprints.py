"""The footprint of generated patterns against real ones, per energy bin, from WGAN run folders: the mean
number of stations above the 3 VEM trigger and the mean fraction of the total signal in the largest station
(a compact footprint has few stations and a large fraction), on the run's scored sample (samples.h5) and the
dataset's test split.

    python plugins/calobench-airshower/benchmarks/footprints.py runs/airshower_pattern__airshower_wgan__<...> [...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import calobench
from calobench_airshower.simulator import TRIGGER_VEM

E_BINS = (1, 10, 30, 60, 100.001)


def footprint(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(stations above the trigger, largest station / total) per pattern [N, 9, 9]."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return (x >= TRIGGER_VEM).sum(1), x.max(1) / np.maximum(x.sum(1), 1e-12)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    args = ap.parse_args()
    real = None
    for path in args.runs:
        try:
            run = calobench.load_run(path, weights=False)
            gen = run.samples()
        except calobench.CalobenchError as e:
            raise SystemExit(f"error: {e}") from None
        if real is None:
            real = calobench.load_dataset(run.config["dataset"]).load("test")
            n_r, f_r = footprint(real.array())
            e_r = np.asarray(real.conditions["energy"])
            print(f"{'':<12} " + "  ".join(f"{f'{lo}-{hi:.0f} EeV':>24}" for lo, hi in zip(E_BINS, E_BINS[1:])))
            print(f"{'real (test)':<12} " + "  ".join(
                f"{n_r[s].mean():6.2f} st, peak {f_r[s].mean():.3f}".rjust(24)
                for s in ((e_r >= lo) & (e_r < hi) for lo, hi in zip(E_BINS, E_BINS[1:]))))
        n_g, f_g = footprint(gen.array())
        e_g = np.asarray(gen.conditions["energy"])
        label = f"seed {run.config.get('seed', '?')}"
        print(f"{label:<12} " + "  ".join(
            f"{n_g[s].mean():6.2f} st, peak {f_g[s].mean():.3f}".rjust(24)
            for s in ((e_g >= lo) & (e_g < hi) for lo, hi in zip(E_BINS, E_BINS[1:]))))
    print(f"(st: stations >= {TRIGGER_VEM:g} VEM per pattern; peak: largest station / total signal; means per bin)")


if __name__ == "__main__":
    main()
