"""The air-shower array simulator: events/s on one thread, data and simulation variants,
and the physics differences between them on paired events.

    python plugins/calobench-airshower/benchmarks/simulator.py [--n 4096]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from calobench_airshower.simulator import DT_NS, simulate_block  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    args = ap.parse_args()
    simulate_block(256, np.random.default_rng(0))
    for variant in ("data", "sim"):
        rates = []
        for rep in range(5):
            t0 = time.perf_counter()
            simulate_block(args.n, np.random.default_rng(rep), variant)
            rates.append(args.n / (time.perf_counter() - t0))
        print(f"{variant:>5}: {np.median(rates):,.0f} events/s (median of 5 x {args.n}, one thread; target >= 2,000)")
    d, E = simulate_block(2000, np.random.default_rng(9), "data")
    s, _ = simulate_block(2000, np.random.default_rng(9), "sim")
    t = np.arange(d.shape[-1]) * DT_NS
    for name, x in (("data", d), ("sim", s)):
        top = x.reshape(len(x), 81, -1)[np.arange(len(x)), x.sum(-1).reshape(len(x), -1).argmax(1)]
        mean_t = (top * t).sum(1) / top.sum(1)
        corner_noise = x[:, 0, 0].std()
        print(f"{name:>5}: largest-station mean arrival {mean_t.mean():.0f} ns, corner-station noise "
              f"{corner_noise:.2f} VEM/bin, total signal per event {np.median(x.sum((1, 2, 3))):,.0f} VEM (median)")


if __name__ == "__main__":
    main()
