"""flow_matching: quality and speed against the number of ODE steps, for a trained run.

    python plugins/calobench-flow/benchmarks/steps.py runs/hgcal__flow_matching__default-<hash>__seed0 \
        [--steps 4,8,16] [--n 3000] [--metrics wasserstein,classifier_auc]

For each step count (midpoint rule, 2 network evaluations per step): showers/s at batch 100
(median of calls after a warm-up, `calobench.timing`) and the metrics on the first N test
showers, scored as a run scores them; the trained weights are the run's. Then, at the run's own
step count, showers/s at batch 1, 100 and 10 000 (``--batches``; the run's record times batch
10 000 only when one call fits its 20 s budget).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import calobench
from calobench.timing import time_calls


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--steps", default="4,8,16")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--metrics", default="wasserstein,classifier_auc")
    ap.add_argument("--batches", default="1,100,10000")
    args = ap.parse_args()
    run = calobench.load_run(args.run)
    if run.model is None or run.record is None:
        raise SystemExit(f"{args.run}: not a finished run")
    model, rec = run.model, run.record
    real = calobench.load_dataset(rec["dataset"]).load("test").head(args.n)
    metrics = calobench.get_metrics(args.metrics.split(","))
    print(f"{'ODE steps':>9} {'evaluations':>11} {'showers/s @100':>15} " + " ".join(f"{m.name:>22}" for m in metrics))
    own = model.config["ode_steps"]
    for k in (int(s) for s in args.steps.split(",")):
        model.config["ode_steps"] = k
        gen = calobench.ShowerData(model.generate_batch(conditions=real.conditions), real.conditions, real.geometry)
        block = real.head(100).conditions
        rate = time_calls(lambda: model.generate_batch(conditions=block), reps=5, budget_s=30).rate(100)
        ctx = calobench.MetricContext(dataset=calobench.load_dataset(rec["dataset"]).info, seed=rec["seed"])
        vals = [m.compute(real, gen, ctx) for m in metrics]
        print(f"{k:>9} {2 * k:>11} {rate:>15,.0f} " + " ".join(f"{v.value:>13.4g} ± {v.uncertainty:<6.2g}" for v in vals),
              flush=True)
    model.config["ode_steps"] = own
    full = calobench.load_dataset(rec["dataset"]).load("test")
    for b in (int(x) for x in args.batches.split(",")):
        block = full.head(min(b, len(full))).conditions
        n = len(next(iter(block.values())))
        rate = time_calls(lambda: model.generate_batch(conditions=block), reps=5, budget_s=120, min_reps=2).rate(n)
        print(f"{own} steps ({2 * own} evaluations), batch {n}: "
              + (f"{rate:,.1f} showers/s" if rate else "one call over the 120 s budget"), flush=True)


if __name__ == "__main__":
    main()
