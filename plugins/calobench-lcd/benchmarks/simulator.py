"""The LCD parametric simulator: throughput on one core, cache-write rate, physics table.

    python plugins/calobench-lcd/benchmarks/simulator.py [--n 2048]

Prints showers/s of the simulation alone (numpy, one thread; version 2 with its halo ~120, version 1 ~750) and with the
compressed HDF5 cache write, then per E_p range the sampling fraction and its spread,
the occupancy, the hit-energy range in decades, and the measured-angle bias.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from calobench import write_hdf5  # noqa: E402
from calobench_lcd.physics import measured_angle  # noqa: E402
from calobench_lcd.simulator import LCDSimulator  # noqa: E402

torch.set_num_threads(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2048)
    args = ap.parse_args()
    sim = LCDSimulator()
    sim.simulate(64, np.random.default_rng(0))
    rates, write_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(3):
            t0 = time.perf_counter()
            blocks = [sim.simulate(sim.block_size, np.random.default_rng([rep, i]))
                      for i in range(args.n // sim.block_size)]
            t1 = time.perf_counter()
            for i, b in enumerate(blocks):
                write_hdf5(Path(tmp) / f"{rep}_{i}.h5", b)
            t2 = time.perf_counter()
            n = sum(len(b) for b in blocks)
            rates.append(n / (t1 - t0))
            write_rates.append(n / (t2 - t0))
    print(f"simulator: {np.median(rates):,.0f} showers/s (median of 3 x {args.n}, one thread); "
          f"with the gzip HDF5 cache write: {np.median(write_rates):,.0f} showers/s")
    print(f"\n{'E_p [GeV]':>10} {'sum/E_p':>8} {'spread':>7} {'occupancy':>10} {'decades':>8} {'angle bias [deg]':>17}")
    for lo, hi in ((2, 10), (10, 50), (50, 150), (150, 300), (300, 500)):
        d = sim.simulate(256, np.random.default_rng(int(lo)), energy_range=(lo, hi))
        x = d.showers
        sf = x.sum((1, 2, 3)) / d.conditions["energy"]
        hits = x[x > 0]
        ang = measured_angle(torch.as_tensor(x, dtype=torch.float64)).numpy()
        bias = np.degrees(np.nanmean(ang - d.conditions["theta"]))
        print(f"{f'{lo}-{hi}':>10} {sf.mean():>8.4f} {sf.std() / sf.mean():>7.3f} {(x > 0).mean():>10.4f} "
              f"{np.log10(hits.max() / hits.min()):>8.1f} {bias:>17.2f}")


if __name__ == "__main__":
    main()
