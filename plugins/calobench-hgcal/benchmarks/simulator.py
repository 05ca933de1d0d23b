"""The HGCAL parametric simulator: throughput on one core, physics checks, observable plots.

    python plugins/calobench-hgcal/benchmarks/simulator.py [--n 20000] [--plots plugins/calobench-hgcal/docs]

Prints showers/s (numpy, one thread), and per beam energy the visible-energy response and
resolution, mean shower depth, hits above 2 MIP and the fraction of hit cells in 2-5 MIP;
writes PNG plots of the observables per energy (the plugin README shows them).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from calobench.observables import features  # noqa: E402
from calobench.plots import pyplot, save  # noqa: E402
from calobench_hgcal.simulator import LAYER_X0, HGCALSimulator  # noqa: E402

ENERGIES = (20.0, 32.0, 50.0, 70.0, 80.0, 90.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--plots", type=Path, default=None)
    args = ap.parse_args()
    sim = HGCALSimulator()
    sim.simulate(512, np.random.default_rng(0))
    rates = []
    for rep in range(3):
        t0 = time.perf_counter()
        sim.simulate(args.n, np.random.default_rng(rep))
        rates.append(args.n / (time.perf_counter() - t0))
    print(f"simulator: {np.median(rates):,.0f} showers/s (median of 3 x {args.n}, one thread; target >= 5,000)")
    per = {E: sim.simulate(4000, np.random.default_rng(int(E)), energies=[E], energy_smear=0.0) for E in ENERGIES}
    print(f"\n{'E [GeV]':>8} {'MIP/GeV':>8} {'sigma/E':>8} {'depth [X0]':>11} {'hits':>7} {'2-5 MIP':>8} "
          f"{'max cell':>9}")
    for E, d in per.items():
        f = features(d)
        hits = d.showers[d.showers > 0]
        print(f"{E:>8.0f} {f['E_total'].mean() / E:>8.2f} {f['E_total'].std() / f['E_total'].mean():>8.3f} "
              f"{f['depth'].mean():>11.2f} {f['n_hits'].mean():>7.1f} {((hits < 5).mean()):>8.2f} "
              f"{d.showers.max((1, 2, 3)).mean():>9.0f}")
    depth = [features(per[E])["depth"].mean() for E in ENERGIES]
    slope = np.polyfit(np.log(ENERGIES), depth, 1)[0]
    print(f"\ndepth vs ln E slope: {slope:.2f} X0 per e-fold")
    if args.plots:
        plt = pyplot()
        fig, axes = plt.subplots(2, 3, figsize=(14, 8))
        keys = (("E_total", "total visible energy [MIP]"), ("depth", "shower depth [X0]"), ("n_hits", "hits > 2 MIP"),
                ("width_x", "transverse spread x [mm]"), ("max_cell_layer_3", "max cell, layer 3 [MIP]"))
        for ax, (k, label) in zip(axes.flat, keys):
            for E, d in per.items():
                ax.hist(features(d)[k], 50, histtype="step", label=f"{E:.0f} GeV", density=True)
            ax.set_xlabel(label)
        axes[0, 0].legend(fontsize=8)
        ax = axes.flat[-1]
        for E, d in per.items():
            v = d.showers[d.showers > 0]
            ax.hist(v, np.geomspace(2, 2000, 60), histtype="step", density=True, label=f"{E:.0f} GeV")
        ax.set_xscale("log"), ax.set_yscale("log"), ax.set_xlabel("cell energy [MIP]")
        fig.tight_layout()
        print("wrote", save(fig, args.plots / "hgcal_observables.png"))
        fig, axes = plt.subplots(1, 7, figsize=(18, 3))
        mean = per[50.0].showers.mean(0)
        for l in range(7):
            axes[l].imshow(np.log10(mean[:, :, l].T + 0.1), origin="lower")
            axes[l].set_title(f"50 GeV, {LAYER_X0[l]} X0", fontsize=8)
            axes[l].set_xticks([]), axes[l].set_yticks([])
        print("wrote", save(fig, args.plots / "hgcal_mean_layers.png"))


if __name__ == "__main__":
    main()
