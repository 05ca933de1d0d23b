"""The footprint of generated patterns against real ones, per energy bin, from WGAN run folders: the mean
number of stations above the 3 VEM trigger, the mean number with signal under it (a real pattern has none:
the array reads such a station 0) and the mean fraction of the total signal in the largest station (a compact
footprint has few stations and a large fraction), on the run's scored sample (samples.h5) and the dataset's
test split.

    python plugins/calobench-airshower/benchmarks/footprints.py runs/airshower_pattern__airshower_wgan__<...> [...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import calobench
from calobench_airshower.simulator import TRIGGER_VEM

E_BINS = (1, 10, 30, 60, 100.001)


def footprint(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stations above the trigger, stations with signal under it, largest station / total) per pattern [N, 9, 9]."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return (x >= TRIGGER_VEM).sum(1), ((x > 0) & (x < TRIGGER_VEM)).sum(1), x.max(1) / np.maximum(x.sum(1), 1e-12)


def row(label: str, x: np.ndarray, energy: np.ndarray) -> str:
    n, under, peak = footprint(x)
    cells = [f"{n[s].mean():5.2f} st {under[s].mean():4.2f} under, peak {peak[s].mean():.3f}".rjust(34)
             for s in ((energy >= lo) & (energy < hi) for lo, hi in zip(E_BINS, E_BINS[1:]))]
    return f"{label:<12} " + "  ".join(cells)


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
            print(f"{'':<12} " + "  ".join(f"{f'{lo}-{hi:.0f} EeV':>34}" for lo, hi in zip(E_BINS, E_BINS[1:])))
            print(row("real (test)", real.array(), np.asarray(real.conditions["energy"])))
        print(row(f"{run.config.get('config_hash', '?')[:8]} s{run.config.get('seed', '?')}", gen.array(), np.asarray(gen.conditions["energy"])))
    print(f"(st: stations >= {TRIGGER_VEM:g} VEM per pattern; under: stations with 0 < signal < {TRIGGER_VEM:g} VEM; "
          "peak: largest station / total signal; means per bin)")


if __name__ == "__main__":
    main()
