"""The dataset-2-geometry simulator (calochallenge_ds2): throughput on one core and its physics.

    python plugins/calobench-calochallenge/benchmarks/simulator.py [--n 1000] [--seed 0]

Prints showers/s (numpy, one thread) and, per decade of incident energy, the mean visible
energy over incident energy, its relative spread, the voxel occupancy and the mean shower
depth (the figures quoted in the plugin README).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from calobench.observables import features  # noqa: E402
from calobench_calochallenge.simulator import DS2Simulator  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sim = DS2Simulator()
    t0 = time.perf_counter()
    d = sim.simulate(args.n, np.random.default_rng(args.seed))
    dt = time.perf_counter() - t0
    print(f"simulator calochallenge_ds2: {args.n / dt:,.0f} showers/s on one core ({args.n} showers)")
    e, f = d.conditions["energy"], features(d)
    ratio = f["E_total"] / e
    print("| E_inc [GeV] | showers | E_tot/E_inc | rel. spread | occupancy | depth [X0] |")
    print("|---|---|---|---|---|---|")
    for lo, hi in ((1e3, 1e4), (1e4, 1e5), (1e5, 1e6)):
        s = (e >= lo) & (e < hi)
        print(f"| {lo / 1e3:g}-{hi / 1e3:g} | {s.sum()} | {ratio[s].mean():.3f} | {ratio[s].std() / ratio[s].mean():.3f} "
              f"| {1 - f['sparsity'][s].mean():.3f} | {f['depth'][s].mean():.2f} |")


if __name__ == "__main__":
    main()
