"""The footprint of generated patterns against real ones, per energy bin, from WGAN run folders: the mean
number of stations above the 3 VEM trigger, the mean number with signal under it (a real pattern has none:
the array reads such a station 0) and the mean fraction of the total signal in the largest station (a compact
footprint has few stations and a large fraction), on the run's scored sample (samples.h5) and the dataset's
test split. With ``--bias``: the ``label_consistency`` metric's AixNet for the run's seed (cached, or trained as
the metric trains it) reads the sample's energies; its mean relative bias from its bias on real patterns, as
the sample is and with every station under the trigger read 0 (what the physics check's bias sees), and per
energy bin the patterns it reads at more than twice their energy (real and generated).

    python plugins/calobench-airshower/benchmarks/footprints.py runs/airshower_pattern__airshower_wgan__<...> [...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import calobench
from calobench_airshower.aixnet import predict_energy
from calobench_airshower.metrics import label_regressor
from calobench_airshower.simulator import TRIGGER_VEM

E_BINS = (1, 10, 30, 60, 100.001)


def footprint(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """(stations above the trigger, above 10 VEM, with signal under the trigger, largest station / total) per
    pattern [N, 9, 9]."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return ((x >= TRIGGER_VEM).sum(1), (x >= 10).sum(1), ((x > 0) & (x < TRIGGER_VEM)).sum(1),
            x.max(1) / np.maximum(x.sum(1), 1e-12))


def row(label: str, x: np.ndarray, energy: np.ndarray) -> str:
    n, n10, under, peak = footprint(x)
    cells = [f"{n[s].mean():5.2f} st ({n10[s].mean():5.2f}) {under[s].mean():4.2f} under, peak {peak[s].mean():.3f}"
             .rjust(42)
             for s in ((energy >= lo) & (energy < hi) for lo, hi in zip(E_BINS, E_BINS[1:]))]
    return f"{label:<12} " + "  ".join(cells)


def bias_rows(run, real, gen) -> str:
    """The metric AixNet's bias on the generated sample from its bias on real patterns: as is, triggered; then
    the patterns it reads at more than twice their energy (``high_reads``), real and generated."""
    net = label_regressor(calobench.load_dataset(run.config["dataset"]).dataset, run.config["seed"])
    x_real, e_real = real.array(), np.asarray(real.conditions["energy"], np.float64)
    x, energy = gen.array(), np.asarray(gen.conditions["energy"], np.float64)
    p_real, p_gen = predict_energy(net, x_real), predict_energy(net, x)
    p_triggered = predict_energy(net, np.where(x >= TRIGGER_VEM, x, 0.0))

    def bias(pred, e):
        return float(((pred - e) / e).mean())

    b_real = bias(p_real, e_real)
    return (f"  bias from real's ({b_real:+.3f}): as sampled {bias(p_gen, energy) - b_real:+.3f}, stations under "
            f"{TRIGGER_VEM:g} VEM read 0 {bias(p_triggered, energy) - b_real:+.3f}\n"
            + high_reads("real", x_real, e_real, p_real) + "\n" + high_reads("generated", x, energy, p_gen))


def high_reads(label: str, x: np.ndarray, energy: np.ndarray, pred: np.ndarray) -> str:
    """Per energy bin: the patterns [N, 9, 9] read (``pred``) at more than twice their ``energy``, how many, their
    median total signal (VEM) against the bin's and their mean largest station / total."""
    high = pred > 2 * energy
    total = x.reshape(len(x), -1).sum(1)
    peak = footprint(x)[3]
    cells = []
    for lo, hi in zip(E_BINS, E_BINS[1:]):
        s = (energy >= lo) & (energy < hi)
        h = s & high
        cells.append(f"{h.sum():4d} / {s.sum():4d}" + (f", total {np.median(total[h]):6.0f} (bin {np.median(total[s]):6.0f}),"
                                                       f" peak {peak[h].mean():.2f}" if h.any() else ""))
    return f"  read > 2x E, {label:<9}: " + "  ".join(c.ljust(44) for c in cells)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--bias", action="store_true", help="also the metric AixNet's bias, as sampled and triggered")
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
            print(f"{'':<12} " + "  ".join(f"{f'{lo}-{hi:.0f} EeV':>42}" for lo, hi in zip(E_BINS, E_BINS[1:])))
            print(row("real (test)", real.array(), np.asarray(real.conditions["energy"])))
        label = f"{run.config.get('config_hash', '?')[:8]} s{run.config.get('seed', '?')}"
        print(row(label, gen.array(), np.asarray(gen.conditions["energy"])))
        if args.bias:
            print(bias_rows(run, real, gen))
    print(f"(st: stations >= {TRIGGER_VEM:g} VEM per pattern, in brackets those >= 10 VEM; "
          f"under: stations with 0 < signal < {TRIGGER_VEM:g} VEM; peak: largest station / total signal; means per bin)")


if __name__ == "__main__":
    main()
