"""The gap the refiner has to close: AixNet trained on data and on simulation (each on the same
number of simulated events, the metrics' training recipe), both evaluated on data; RMS, bias and
resolution of the relative energy error per energy bin.

    python plugins/calobench-airshower/benchmarks/utility_gap.py [--n 5000] [--n-eval 2000] [--seed 0]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from calobench_airshower.aixnet import METRIC_TRAINING, make_aixnet, predict_energy, train_regressor
from calobench_airshower.metrics import response
from calobench_airshower.simulator import simulate_block


def simulate(n: int, seed: int, variant: str):
    rng, xs, es = np.random.default_rng(seed), [], []
    while sum(map(len, es)) < n:
        x, e = simulate_block(2048, rng, variant)
        xs.append(x)
        es.append(e)
    return np.concatenate(xs)[:n], np.concatenate(es)[:n].astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--n-eval", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    test_x, test_e = simulate(args.n_eval, 3, "data")
    print(f"AixNet trained on {args.n} events, evaluated on {args.n_eval} data events; "
          "(bias, resolution, RMS) of (E_rec - E) / E")
    for variant, seed in (("data", 1), ("sim", 2)):
        x, e = simulate(args.n, seed, variant)
        torch.manual_seed(args.seed)
        net = make_aixnet(x.shape[1:])
        t0 = time.perf_counter()
        train_regressor(net, x, e, args.seed, **METRIC_TRAINING)
        r = response(predict_energy(net.eval(), test_x), test_e)
        bins = "  ".join(f"{k}: ({v['bias']:+.2f}, {v['resolution']:.2f}, {np.hypot(v['bias'], v['resolution']):.2f})"
                         for k, v in r["per_energy_bin"].items())
        print(f"trained on {variant:>4} ({time.perf_counter() - t0:.0f} s): RMS {r['rms']:.3f}  {bins}")


if __name__ == "__main__":
    main()
