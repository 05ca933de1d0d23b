"""Cost of the metric suite vs sample size, on CPU.

    python benchmarks/metrics_speed.py [--shape 51,51,25] [--sizes 1000,10000] [--with-networks]

Times every metric (real vs generated, N showers each) at each N. By default the two
trained-network metrics (classifier_auc, triforce) are left out, as in the issue's target
(<= 60 s for 10 000 vs 10 000 showers of 51x51x25). The showers are a synthetic LCD-like
sample made here (gamma longitudinal profile deepening with ln E, Cauchy-like lateral
core, Poisson cell fluctuations, threshold): the cost depends on the shape and sparsity,
not on the physics. Prints the time per metric and the total.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from calobench import DatasetInfo, Geometry, MetricContext, ShowerData
from calobench.plugins import get_plugins
from calobench.runner import select_metrics

NETWORKS = {"classifier_auc", "classifier_auc_high", "triforce"}


def synthetic(n, shape, seed, block=500):
    X, Y, L = shape
    rng = np.random.default_rng(seed)
    out = np.empty((n, X, Y, L), np.float32)
    e = rng.uniform(2, 500, n).astype(np.float32)
    z = np.arange(L) + 0.5
    xs, ys = np.arange(X) - X / 2 + 0.5, np.arange(Y) - Y / 2 + 0.5
    r2 = xs[:, None] ** 2 + ys[None, :] ** 2
    for s in range(0, n, block):
        m = min(block, n - s)
        T = 3 + 1.0 * np.log(e[s:s + m] / 2) + rng.normal(0, 0.4, m)
        prof = z[None] ** T[:, None] * np.exp(-z[None] * T[:, None] / (T[:, None] + 1))
        prof /= prof.sum(1, keepdims=True)
        R = 1.0 + 0.08 * z
        lat = 1.0 / (r2[None, :, :, None] / R**2 + 1) ** 2  # [1, X, Y, L]
        lat = lat / lat.sum((1, 2), keepdims=True)
        mean = 200 * e[s:s + m, None, None, None] * prof[:, None, None, :] * lat
        x = rng.poisson(mean).astype(np.float32) * 0.01
        x[x < 0.01] = 0
        out[s:s + m] = x
    g = Geometry(shape=shape, cell_size=(5.1, 5.1, 5.1), energy_unit="GeV")
    return ShowerData(out, {"energy": e}, g)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="51,51,25")
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--with-networks", action="store_true")
    args = ap.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    sizes = [int(s) for s in args.sizes.split(",")]
    reg = get_plugins().registry
    metrics = [m for m in select_metrics(reg, None) if args.with_networks or m.name not in NETWORKS]
    biggest = max(sizes)
    t0 = time.perf_counter()
    real_all, gen_all = synthetic(biggest, shape, 1), synthetic(biggest, shape, 2)
    print(f"synthetic {shape} showers: 2 x {biggest} made in {time.perf_counter() - t0:.0f} s; "
          f"occupancy {(real_all.showers[:200] > 0).mean():.3f}")
    train = synthetic(min(biggest, 5000), shape, 3)
    info = DatasetInfo("synthetic", real_all.geometry, {"energy": (2.0, 500.0)}, ["train", "validation"],
                       loader=lambda split: train, key=f"synthetic-{args.shape}")
    skipped = [m.name for m in metrics if m.applies_to(info)]
    metrics = [m for m in metrics if not m.applies_to(info)]
    if skipped:
        print(f"not applicable to this geometry (not timed): {', '.join(skipped)}")
    rows = {}
    for n in sizes:
        real, gen = real_all.head(n), gen_all.head(n)
        ctx = MetricContext(dataset=info, seed=0)
        for m in metrics:
            t0 = time.perf_counter()
            m.compute(real, gen, ctx)  # the first metric also pays for the shared observables
            rows.setdefault(m.name, {})[n] = time.perf_counter() - t0
    print(f"\n{'metric':<30}" + "".join(f"{'N=' + str(n):>12}" for n in sizes))
    for name, t in rows.items():
        print(f"{name:<30}" + "".join(f"{t[n]:>11.1f}s" for n in sizes))
    print(f"{'total':<30}" + "".join(f"{sum(r[n] for r in rows.values()):>11.1f}s" for n in sizes))


if __name__ == "__main__":
    main()
