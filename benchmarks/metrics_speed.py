"""Cost of the metric suite vs sample size, on CPU.

    python benchmarks/metrics_speed.py [--shape 51,51,25] [--sizes 1000,10000] [--with-networks]
    python benchmarks/metrics_speed.py --datasets hgcal,lcd,airshower_sim,airshower_pattern \
        --sizes 1000,10000,100000 --out benchmarks/results/metrics_speed.md

Times every metric (real vs generated, N showers each) at each N. By default the metrics
that train networks (classifier_auc, triforce, the air-shower AixNet metrics) are left
out, as in the issue's target (<= 60 s for 10 000 vs 10 000 showers of 51x51x25).

Without ``--datasets`` the showers are a synthetic LCD-like sample made here (gamma
longitudinal profile deepening with ln E, Cauchy-like lateral core, Poisson cell
fluctuations, threshold). With ``--datasets`` each dataset's own simulator makes two
independent samples of N (the test split's parameters, seeds 1 and 2): the cost depends on
the shape and sparsity, so this is the cost users pay. Prints the time per metric and the
total; ``--out`` also writes a markdown table with the machine and versions.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import calobench
from calobench import DatasetInfo, Geometry, MetricContext, ShowerData
from calobench.provenance import write_table as write_markdown_table

NETWORKS = {"classifier_auc", "classifier_auc_high", "triforce", "refinement_utility", "refinement_utility_sim",
            "refinement_utility_data", "label_consistency"}


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


def simulated(ds, n: int, seed: int) -> ShowerData:
    """n showers from the dataset's simulator with its test-split parameters (filled in place)."""
    x, conds, i = np.empty((n, *ds.geometry.shape), np.float32), {}, 0
    for block in ds.simulate_blocks(n, seed, ds.split_params("test")):
        x[i:i + len(block)] = block.showers
        for k, v in block.conditions.items():
            conds.setdefault(k, np.empty(n, np.float32))[i:i + len(block)] = v
        i += len(block)
    return ShowerData(x, conds, ds.geometry)


def time_suite(metrics, info, real_all, gen_all, sizes) -> dict:
    skipped = [m.name for m in metrics if m.applies_to(info)]
    metrics = [m for m in metrics if not m.applies_to(info)]
    if skipped:
        print(f"  not applicable to {info.name} (not timed): {', '.join(skipped)}")
    rows = {}
    for n in sizes:
        real, gen = real_all.head(n), gen_all.head(n)
        ctx = MetricContext(dataset=info, seed=0)
        for m in metrics:
            t0 = time.perf_counter()
            m.compute(real, gen, ctx)  # the first metric also pays for the shared observables
            rows.setdefault(m.name, {})[n] = time.perf_counter() - t0
        print(f"  N={n}: {sum(r[n] for r in rows.values()):.1f} s", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="51,51,25")
    ap.add_argument("--datasets", default=None, help="comma-separated catalog datasets (default: synthetic)")
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--with-networks", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="also write a markdown table here")
    ap.add_argument("--max-gib", type=float, default=None,
                    help="skip sizes whose two samples exceed this (default: a third of the machine's memory)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.max_gib is None:
        args.max_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 / 3
    metrics = [m for m in calobench.get_metrics() if args.with_networks or m.name not in NETWORKS]
    biggest = max(sizes)
    results = {}  # dataset -> rows
    if args.datasets:
        for name in args.datasets.split(","):
            loaded = calobench.load_dataset(name)
            ds = loaded.dataset
            cells = int(np.prod(ds.geometry.shape))
            fits = [n for n in sizes if 2 * n * cells * 4 <= args.max_gib * 2**30]
            for n in sorted(set(sizes) - set(fits)):
                print(f"{name}: N={n} skipped, two samples need {2 * n * cells * 4 / 2**30:.2g} GiB "
                      f"(--max-gib {args.max_gib:g})")
            if not fits:
                continue
            t0 = time.perf_counter()
            real_all, gen_all = simulated(ds, max(fits), 1), simulated(ds, max(fits), 2)
            print(f"{name} {ds.geometry.shape}: 2 x {max(fits)} simulated in {time.perf_counter() - t0:.0f} s",
                  flush=True)
            results[f"{name} {tuple(ds.geometry.shape)}"] = time_suite(metrics, loaded.info, real_all, gen_all,
                                                                      fits)
            del real_all, gen_all
    else:
        shape = tuple(int(s) for s in args.shape.split(","))
        t0 = time.perf_counter()
        real_all, gen_all = synthetic(biggest, shape, 1), synthetic(biggest, shape, 2)
        print(f"synthetic {shape} showers: 2 x {biggest} made in {time.perf_counter() - t0:.0f} s; "
              f"occupancy {(real_all.showers[:200] > 0).mean():.3f}")
        train = synthetic(min(biggest, 5000), shape, 3)
        info = DatasetInfo("synthetic", real_all.geometry, {"energy": (2.0, 500.0)}, ["train", "validation"],
                           loader=lambda split: train, key=f"synthetic-{args.shape}")
        results[f"synthetic {shape}"] = time_suite(metrics, info, real_all, gen_all, sizes)
    lines = []
    for what, rows in results.items():
        lines.append(f"\n{what} (seconds)\n{'metric':<30}" + "".join(f"{'N=' + str(n):>14}" for n in sizes))
        for name, t in rows.items():
            lines.append(f"{name:<30}" + "".join(f"{_cell(t, n):>14}" for n in sizes))
        lines.append(f"{'total':<30}" + "".join(f"{_total(rows, n):>14}" for n in sizes))
    print("\n".join(lines))
    if args.out:
        write_table(args.out, results, sizes, args)


def _cell(t: dict, n: int) -> str:
    return f"{t[n]:.1f}" if n in t else "-"


def _total(rows: dict, n: int) -> str:
    have = [r[n] for r in rows.values() if n in r]
    return f"{sum(have):.1f}" if have else "- (memory)"


def write_table(path: Path, results: dict, sizes: list, args) -> None:
    description = (f"Seconds for real vs generated, N showers each (two independent simulator samples), one process; "
                   f"metrics that train networks are {'included' if args.with_networks else 'left out'}. '-': two "
                   f"samples of that N need more than {args.max_gib:.3g} GiB, not run (`--max-gib`; default a third "
                   "of the memory).")
    out = []
    for what, rows in results.items():
        out.append(f"\n## {what}\n\n| metric | " + " | ".join(f"N={n:,}" for n in sizes) + " |")
        out.append("|---|" + "---:|" * len(sizes))
        for name, t in rows.items():
            out.append(f"| {name} | " + " | ".join(_cell(t, n) for n in sizes) + " |")
        out.append("| **total** | " + " | ".join(f"**{_total(rows, n)}**" for n in sizes) + " |")
    write_markdown_table(path, "Metric suite cost", description, "\n".join(out))


if __name__ == "__main__":
    main()
