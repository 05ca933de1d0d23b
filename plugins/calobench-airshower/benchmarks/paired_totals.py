"""A refine run on paired test events: per energy bin, the median log10 of the total signal over
data's (raw simulation and refined) and the mean number of stations read out.

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


if __name__ == "__main__":
    main()
