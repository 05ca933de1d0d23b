"""Does a generator follow the polar angle? Inclination figures of run folders on lcd.

    python plugins/calobench-lcd/benchmarks/inclination.py runs/lcd__flow_matching__default-<hash>__seed0 [...]

For the real test split and each run's samples (the first ``--n`` showers, same conditions):
the measured angle (3DGAN's estimator) against the input theta (correlation, MAE), and the
per-shower drift of the layer y barycentres (cells per layer, `barycentre_drift`) regressed on
cot(theta): the slope (real showers: the layer/cell pitch ratio seen through the shower) and the
correlation. A generator that ignores theta has a correlation near 0; real showers reach ~0.98.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import calobench
from calobench_lcd.physics import barycentre_drift, measured_angle


def figures(showers: np.ndarray, theta: np.ndarray) -> dict:
    x = torch.as_tensor(np.asarray(showers, np.float64))
    ang = measured_angle(x).numpy()
    drift = barycentre_drift(x).numpy()
    ct = 1 / np.tan(theta)
    ok, okd = np.isfinite(ang), np.isfinite(drift)
    return {"angle_corr": float(np.corrcoef(ang[ok], theta[ok])[0, 1]),
            "angle_mae_deg": float(np.degrees(np.abs(ang[ok] - theta[ok]).mean())),
            "drift_slope": float(np.polyfit(ct[okd], drift[okd], 1)[0]),
            "drift_corr": float(np.corrcoef(ct[okd], drift[okd])[0, 1])}


def line(name: str, f: dict) -> str:
    return (f"{name:<48} angle: corr {f['angle_corr']:.3f}, MAE {f['angle_mae_deg']:.2f} deg; drift per layer "
            f"{f['drift_slope']:.3f} x cot(theta), corr {f['drift_corr']:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--n", type=int, default=2000, help="showers per sample (default 2000)")
    args = ap.parse_args()
    shown_real = set()
    for path in args.runs:
        run = calobench.load_run(path, weights=False)
        if run.record is None:
            raise SystemExit(f"{path}: the run has not finished (no record.json)")
        key = run.record["dataset"]
        if key not in shown_real:
            real = calobench.load_dataset(key).load("test")
            n = min(args.n, len(real))
            print(line(f"real ({key} test, {n} showers)", figures(real.array()[:n], np.asarray(real.conditions["theta"][:n]))))
            shown_real.add(key)
        gen = run.samples()
        n = min(args.n, len(gen))
        print(line(f"{path.name} ({n})", figures(gen.array()[:n], np.asarray(gen.conditions["theta"][:n]))))


if __name__ == "__main__":
    main()
