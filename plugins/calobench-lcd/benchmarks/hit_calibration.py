"""What `calibrate_hits` would do to a trained 3dgan run that did not use it, side by side.

    python plugins/calobench-lcd/benchmarks/hit_calibration.py runs/lcd__3dgan__default-<hash>__seed0 [--n 2000]

Loads the run's weights and generates the first N test labels twice from the same seed: as the run
samples (its own sampling calibration), and after the two post-training phases that fit() runs with
`--set calibrate_hits=true` (the hit offsets on the validation split, then the sampling-fraction
calibration refitted on top of them). Prints the paper's physics checks of both against the test split,
and the offsets found. An estimate of that option on these weights, not a run: a run draws other numbers.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import calobench
from calobench import ShowerData
from calobench.checks import CheckContext, run_checks
from calobench_lcd.checks import LCDPaperChecks
from calobench_lcd.model import HitCalibration


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--bins", type=int, default=5)
    args = ap.parse_args()
    run = calobench.load_run(args.run)
    if run.model is None or run.record is None or run.model.name != "3dgan":
        raise SystemExit(f"{args.run}: needs a finished 3dgan run with its weights")
    model = run.model
    if "hits" in model.nets or "calibration" not in model.nets:
        raise SystemExit(f"{args.run}: needs a run with calibrate_response and without calibrate_hits")
    ds = calobench.load_dataset(run.record["dataset"])
    test, validation = ds.load("test"), ds.load("validation")
    test = test.take(np.arange(min(args.n, len(test))))
    info = calobench.DatasetInfo(ds.name, test.geometry, {})

    def checks(generated):
        return {e["name"]: e for e in run_checks([LCDPaperChecks()], CheckContext(info, test, generated))}

    def sample():
        torch.manual_seed(0)
        return ShowerData(model.sample(test.conditions), dict(test.conditions), test.geometry)

    before = checks(sample())
    model.nets["hits"] = HitCalibration(args.bins)
    found = model.calibrate_hits(validation, torch.Generator().manual_seed(1))
    refit = model.calibrate(validation, torch.Generator().manual_seed(2))
    after = checks(sample())
    print(f"offsets (network scale) per validation energy bin: "
          + ", ".join(f"{k[6:]}: {v:+.4f}" for k, v in found.items() if k.startswith("delta_")))
    print(f"sampling-fraction error on validation after the refit: {refit['sf_error_after']:.3f}")
    print(f"{'check':<30} {'as the run samples':>20} {'with calibrate_hits':>20}")
    for name, b in before.items():
        a = after[name]
        print(f"{name:<30} {b['value']:+12.4f} {'pass' if b['pass'] else 'FAIL':>7} {a['value']:+12.4f} "
              f"{'pass' if a['pass'] else 'FAIL':>7}")
    print(f"passed: {sum(e['pass'] for e in before.values())}/{len(before)} -> "
          f"{sum(e['pass'] for e in after.values())}/{len(after)}")


if __name__ == "__main__":
    main()
