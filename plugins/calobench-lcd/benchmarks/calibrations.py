"""What the 3dgan post-training calibrations a run did not use would do to it, side by side.

    python plugins/calobench-lcd/benchmarks/calibrations.py runs/lcd__3dgan__default-<hash>__seed0 \
        --add hits --add spread [--n 2000]

Loads the run's weights and generates the first N test labels twice from the same seed: as the run samples
(its own calibrations), and after the post-training phases that fit() runs with `--set calibrate_hits=true`
(`hits`: the hit offsets on the validation split) and/or `--set calibrate_spread=true` (`spread`: each
shower's total moved to the real quantile at its E_p), followed by the sampling-fraction calibration refitted
on top of them, as fit() does. Prints the paper's physics checks of both against the test split, the
sampling-fraction spread (generated std / real std) per E_p bin, and what the calibrations found. An estimate
of those options on these weights, not a run: a run draws other numbers.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import calobench
from calobench import ShowerData
from calobench.checks import CheckContext, run_checks
from calobench_lcd.checks import E_EDGES, LCDPaperChecks
from calobench_lcd.model import HitCalibration, SpreadCalibration

NETS = {"hits": ("calibrate_hits", lambda bins: HitCalibration(bins)),
        "spread": ("calibrate_spread", lambda bins: SpreadCalibration(bins))}


def spreads(real, generated) -> list:
    """std(generated sampling fraction) / std(real) in the checks' E_p bins."""
    def sf(data):
        s = np.concatenate([b.array().astype(np.float64).sum((1, 2, 3)) for b in data.chunks(256)])
        e = np.asarray(data.conditions["energy"], np.float64)
        return e, s / e

    (er, sr), (eg, sg) = sf(real), sf(generated)
    out = []
    for lo, hi in zip(E_EDGES[:-1], E_EDGES[1:]):
        r, g = (er >= lo) & (er < hi), (eg >= lo) & (eg < hi)
        out.append(sg[g].std() / sr[r].std() if r.sum() > 1 and g.sum() > 1 else float("nan"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--add", action="append", choices=sorted(NETS), required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--bins", type=int, default=5)
    args = ap.parse_args()
    run = calobench.load_run(args.run)
    if run.model is None or run.record is None or run.model.name != "3dgan":
        raise SystemExit(f"{args.run}: needs a finished 3dgan run with its weights")
    model = run.model
    if "calibration" not in model.nets:
        raise SystemExit(f"{args.run}: needs a run with calibrate_response")
    for name in args.add:
        if name in model.nets:
            raise SystemExit(f"{args.run}: the run already has its {NETS[name][0]}")
    ds = calobench.load_dataset(run.record["dataset"])
    test, validation = ds.load("test"), ds.load("validation")
    test = test.take(np.arange(min(args.n, len(test))))
    info = calobench.DatasetInfo(ds.name, test.geometry, {})

    def sample():
        torch.manual_seed(0)
        return ShowerData(model.sample(test.conditions), dict(test.conditions), test.geometry)

    def checks(generated):
        return {e["name"]: e for e in run_checks([LCDPaperChecks()], CheckContext(info, test, generated))}

    before_showers = sample()
    before, spread_before = checks(before_showers), spreads(test, before_showers)
    del before_showers
    for name in args.add:
        model.nets[name] = NETS[name][1](args.bins)
    if "hits" in args.add:
        found = model.calibrate_hits(validation, torch.Generator().manual_seed(1))
        print("hit offsets (network scale) per validation energy bin: "
              + ", ".join(f"{k[6:]}: {v:+.4f}" for k, v in found.items() if k.startswith("delta_")))
    refit = model.calibrate(validation, torch.Generator().manual_seed(2))
    print("refit on validation: " + ", ".join(f"{k} {v:.3f}" for k, v in refit.items()))
    after_showers = sample()
    after, spread_after = checks(after_showers), spreads(test, after_showers)
    added = " + ".join(args.add)
    print(f"{'check':<30} {'as the run samples':>20} {'with ' + added:>20}")
    for name, b in before.items():
        a = after[name]
        print(f"{name:<30} {b['value']:+12.4f} {'pass' if b['pass'] else 'FAIL':>7} {a['value']:+12.4f} "
              f"{'pass' if a['pass'] else 'FAIL':>7}")
    print(f"passed: {sum(e['pass'] for e in before.values())}/{len(before)} -> "
          f"{sum(e['pass'] for e in after.values())}/{len(after)}")
    print("sampling-fraction spread, generated std / real std, per E_p bin:")
    for (lo, hi), b, a in zip(zip(E_EDGES[:-1], E_EDGES[1:]), spread_before, spread_after):
        print(f"  {lo:5.0f}-{hi:<5.0f} GeV {b:8.2f} -> {a:8.2f}")


if __name__ == "__main__":
    main()
