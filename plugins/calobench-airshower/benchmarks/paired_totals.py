"""A refine run on paired test events: per energy bin, the median log10 of the total signal over
data's (raw simulation and refined) and the mean number of stations read out; then, per sample, the
median signal of the five largest stations of an event and the shape of the read-out traces (non-zero
bins, the bins by which 10 / 50 / 90 % of a station's signal has arrived).

    python plugins/calobench-airshower/benchmarks/paired_totals.py runs/airshower_sim__airshower_refiner__...
"""
from __future__ import annotations

import argparse

import numpy as np

import calobench

BINS = ((1, 3), (3, 10), (1, 10), (10, 30), (30, 60), (60, 100))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a finished refine run folder (its samples.h5: the refined test split)")
    args = ap.parse_args()
    run = calobench.load_run(args.run, weights=False)
    refined = run.samples().array()
    source, target = run.config["dataset"], (run.record or {}).get("target") or "airshower"
    sim = calobench.load_dataset(source).load("test")
    n = len(refined)
    x = {"data": calobench.load_dataset(target).load("test").array()[:n], "sim": sim.array()[:n], "refined": refined}
    energy = np.asarray(sim.conditions["energy"][:n])
    total = {k: v.reshape(n, -1).sum(1) for k, v in x.items()}
    lit = {k: (v.sum(-1) > 0).reshape(n, -1).sum(1) for k, v in x.items()}
    print(f"{n} paired test events; median log10(total / data's total), mean stations read out (data / sim / refined)")
    for lo, hi in BINS:
        sel = (energy >= lo) & (energy < hi) & (total["data"] > 0)
        ratio = {k: np.median(np.log10(np.maximum(total[k][sel], 1e-3) / total["data"][sel])) for k in ("sim", "refined")}
        print(f"{lo:>3}-{hi:<3} EeV  sim {ratio['sim']:+.3f}  refined {ratio['refined']:+.3f} dex   stations "
              f"{lit['data'][sel].mean():.1f} / {lit['sim'][sel].mean():.1f} / {lit['refined'][sel].mean():.1f}")
    print("stations of an event by signal (median VEM of the 1st..5th); traces of read-out stations (means): "
          "non-zero bins, bins to 10 / 50 / 90 % of the signal")
    for lo, hi in BINS:
        sel = (energy >= lo) & (energy < hi)
        for k, v in x.items():
            print(f"{lo:>3}-{hi:<3} EeV  {k:<8}" + station_shapes(v[sel]))


def station_shapes(traces: np.ndarray) -> str:
    """The five largest stations' median signals and the read-out traces' shape, as one line."""
    t = traces.reshape(len(traces), -1, traces.shape[-1]).astype(np.float64)
    integral = t.sum(-1)
    ranked = -np.sort(-integral, 1)[:, :5]
    lit = integral > 0
    arrived = np.cumsum(t[lit], -1) / integral[lit][:, None]
    times = [(arrived < q).sum(-1).mean() for q in (0.1, 0.5, 0.9)]
    return (" ".join(f"{v:8.1f}" for v in np.median(ranked, 0)) + f"   bins {(t[lit] > 0).sum(-1).mean():5.1f}, "
            + " / ".join(f"{v:4.1f}" for v in times))


if __name__ == "__main__":
    main()
