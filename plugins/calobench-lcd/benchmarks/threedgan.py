"""3DGAN on LCD: the physics figures of a trained run, from its samples against the test split.

    python plugins/calobench-lcd/benchmarks/threedgan.py runs/lcd__3dgan__default-<hash>__seed0

Prints the sampling-fraction error (mean over 10 E_p bins of |<sum/E_p>_gen / <sum/E_p>_real - 1|)
and its per-bin values, sum/E_p in the theta bins of the paper (62, 90, 118 +- 4 deg), the
measured-angle MAE (generated and real, against the input theta) and the occupancy.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import calobench
from calobench_lcd.plots import THETA_BINS_DEG, THETA_HALF_WIDTH_DEG, summarise


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    args = ap.parse_args()
    run = calobench.load_run(args.run, weights=False)
    rec = run.record
    if rec is None:
        raise SystemExit(f"{args.run}: the run has not finished (no record.json)")
    real = calobench.load_dataset(rec["dataset"]).load("test")
    gen = run.samples()
    r, g = summarise(real), summarise(gen)
    E = r["energy"]
    edges = np.linspace(2, 500, 11)
    b = np.clip(np.digitize(E, edges) - 1, 0, 9)
    errs = [abs((g["sum"][b == k] / E[b == k]).mean() / (r["sum"][b == k] / E[b == k]).mean() - 1) for k in range(10)]
    print(f"run {args.run.name}: {rec['train']['steps']} steps, {rec['train']['wall_s'] / 60:.1f} min of training")
    print(f"sampling-fraction error: {np.mean(errs):.3f}; per E_p bin: {' '.join(f'{e:.3f}' for e in errs)}")
    for t in THETA_BINS_DEG:
        m = np.abs(np.degrees(r["theta"]) - t) < THETA_HALF_WIDTH_DEG
        print(f"theta {t:.0f} deg: sum/E_p real {(r['sum'][m] / E[m]).mean():.4f}, generated {(g['sum'][m] / E[m]).mean():.4f}")
    for s, name in ((g, "generated"), (r, "real")):
        print(f"measured-angle MAE ({name}): {np.degrees(np.nanmean(np.abs(s['angle'] - s['theta']))):.2f} deg; "
              f"occupancy {s['above'][0] / s['cells']:.4f}")


if __name__ == "__main__":
    main()
