"""flow_matching: hits, classifier AUC and W1 of a trained run at several zero/hit decoding boundaries.

    python plugins/calobench-flow/benchmarks/boundary.py RUN_DIR [--boundaries=-0.25,-0.35,-0.45] [--n 5000]

One ODE integration of the first N test conditions (torch seed 0), decoded at each boundary; the
mean hit count per beam energy against real (gen/real - 1), classifier_auc and wasserstein as a run
scores them, and the worst W1 observables. The README's side-by-side figures (per-cell head on/off,
validation hit calibration on/off) are this script on runs trained with
`--set steps=3000 --set warmup_steps=300` plus `--set cell_head=32` or `--set calibrate_hits=true`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import calobench
from calobench import MetricContext, ShowerData


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--boundaries", default="-0.25,-0.35,-0.45")
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    run = calobench.load_run(args.run)
    if run.model is None or run.record is None:
        raise SystemExit(f"{args.run}: not a finished run")
    m = run.model
    loaded = calobench.load_dataset(run.record["dataset"])
    real = loaded.load("test").head(args.n)
    torch.manual_seed(0)
    z = m._integrate(real.conditions)
    energy = m._energy(real.conditions)
    metrics = calobench.get_metrics(["classifier_auc", "wasserstein"])
    real_hits = (real.array().reshape(len(real), -1) > 0).sum(1)
    e = real.conditions.get("energy", np.zeros(len(real)))
    beams = np.unique(np.round(e, -1)) if "energy" in real.conditions else [0.0]
    print(f"stored boundary {float(m.rep.boundary):+.3f}")
    for b in (float(x) for x in args.boundaries.split(",")):
        x = m.rep.decode(z, energy, b)
        gen = ShowerData(x, real.conditions, real.geometry)
        hits = (x.reshape(len(x), -1) > 0).sum(1)
        per = " ".join(f"{beam:g}: {hits[sel].mean() / real_hits[sel].mean() - 1:+.3f}"
                       for beam in beams if (sel := np.round(e, -1) == beam).any())
        auc, w1 = (mt.compute(real, gen, MetricContext(dataset=loaded.info, seed=0)) for mt in metrics)
        worst = sorted(w1.details["per_observable"].items(), key=lambda kv: -kv[1])[:4]
        print(f"boundary {b:+.3f}: hits gen/real - 1 by energy {per} | AUC {auc.value:.4f} | W1 {w1.value:.4f} | "
              "worst W1: " + ", ".join(f"{k} {v:.2f}" for k, v in worst), flush=True)


if __name__ == "__main__":
    main()
