"""HGCAL WGAN: physics and speed figures for a trained run.

    python plugins/calobench-hgcal/benchmarks/wgan.py runs/hgcal__hgcal_wgan__default-<hash>__seed0 [--device cpu|cuda]

Prints, for the run's samples against the dataset:
  * mean energy response (visible MIP per GeV) and resolution (sigma/mean of the total
    visible energy) per beam energy, including the 70 GeV interpolation hold-out,
    real vs generated;
  * the shower shape per beam energy, real vs generated: mean number of hits, lateral width,
    depth and the median hit cell;
  * W1 per observable (normalised by the real spread) for generated vs real and for the
    floor (reference vs real);
  * generation showers/s at batch 1, 100, 10 000 (median of 10 after a warm-up) beside the
    builtin physics simulator's showers/s, measured in the same process.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance

import calobench
from calobench.observables import features
from calobench.timing import time_calls

ENERGIES = (20, 32, 50, 70, 80, 90)
OBS = ("E_total", "depth", "depth_width", "n_hits", "width_x", "width_y", "cog_x", "cog_y",
       *(f"E_layer_{i}" for i in range(7)), *(f"max_cell_layer_{i}" for i in range(7)))


def median_rate(fn, batch, reps=10, device="cpu"):
    return time_calls(lambda: fn(batch), reps=reps, budget_s=float("inf"), device=device).rate(batch)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    device = calobench.resolve_device(args.device)
    try:
        run = calobench.load_run(args.run_dir, device=str(device))
    except calobench.CalobenchError as e:
        raise SystemExit(f"error: {e}") from None
    rec, model = run.record, run.model
    if rec is None or model is None:
        raise SystemExit(f"{args.run_dir}: the run has not finished (no record.json or model.safetensors)")
    ds = calobench.load_dataset(rec["dataset"])
    real = {"test": ds.load("test").load(), "interp70": ds.load("interp70").load()}
    gen = {"test": run.samples().load(), "interp70": run.samples("interp70").load()}
    print(f"run {args.run_dir.name}: {rec['model']} ({rec['preset']}), trained {rec['train']['steps']} steps "
          f"in {rec['train']['wall_s'] / 60:.1f} min on {rec['generation']['device']}")
    feats = {side: {k: features(v) for k, v in d.items()} for side, d in (("real", real), ("gen", gen))}
    threshold = float(real["test"].geometry.threshold)

    def beams():
        """(E, split, real rows, generated rows, tag) per beam energy with enough real showers."""
        for E in ENERGIES:
            split = "interp70" if E == 70 else "test"
            sr = np.abs(real[split].conditions["energy"] - E) < 0.05 * E
            sg = np.abs(gen[split].conditions["energy"] - E) < 0.05 * E
            if sr.sum() >= 10:
                yield E, split, sr, sg, " (hold-out)" if E == 70 else ""

    print("\nenergy response [MIP/GeV] and resolution, real vs generated")
    print(f"{'E [GeV]':>8} {'n':>6} {'response real':>14} {'response gen':>13} {'ratio':>7} "
          f"{'resol. real':>12} {'resol. gen':>11}")
    for E, split, sr, sg, tag in beams():
        er, eg = feats["real"][split]["E_total"][sr], feats["gen"][split]["E_total"][sg]
        rr, rg = er.mean() / E, eg.mean() / E
        print(f"{E:>8} {sr.sum():>6} {rr:>14.2f} {rg:>13.2f} {rg / rr:>7.3f} {er.std() / er.mean():>12.3f} "
              f"{eg.std() / eg.mean():>11.3f}{tag}")

    print(f"\nshower shape per beam energy, real / generated: mean hits (cells >= {threshold:g} MIP), width_x, "
          "depth, median hit cell [MIP]")
    print(f"{'E [GeV]':>8} {'hits':>13} {'width_x':>13} {'depth':>13} {'median hit':>13}")
    for E, split, sr, sg, tag in beams():
        fr_, fg_ = feats["real"][split], feats["gen"][split]
        cr, cg = real[split].array()[sr], gen[split].array()[sg]
        med = [float(np.median(c[c >= threshold])) for c in (cr, cg)]
        cols = [f"{fr_[k][sr].mean():.3g} / {fg_[k][sg].mean():.3g}" for k in ("n_hits", "width_x", "depth")]
        print(f"{E:>8} " + " ".join(f"{c:>13}" for c in cols) + f" {med[0]:>5.1f} / {med[1]:<5.1f}{tag}")

    fr, fg, ff = feats["real"]["test"], feats["gen"]["test"], features(ds.load("reference").load())
    print("\nW1 / std(real) per observable: generated vs real, and the floor (reference vs real)")
    print(f"{'observable':<18} {'generated':>10} {'floor':>8} {'ratio':>7}")
    for k in OBS:
        s = fr[k].std()
        if s <= 0:
            continue
        w, w0 = wasserstein_distance(fr[k], fg[k]) / s, wasserstein_distance(fr[k], ff[k]) / s
        print(f"{k:<18} {w:>10.4f} {w0:>8.4f} {w / max(w0, 1e-12):>7.1f}")

    print(f"\ngeneration throughput, device {device} ({torch.get_num_threads()} threads), median of {args.reps}")
    cond = real["test"].conditions
    sim = calobench.registry().simulators["hgcal"]

    def gen_fn(b):
        idx = np.arange(b) % len(real["test"])
        model.generate_batch(conditions={k: v[idx] for k, v in cond.items()})

    rng = np.random.default_rng(0)
    print(f"{'batch':>7} {'WGAN showers/s':>15} {'simulator showers/s':>20} {'speed-up':>9}")
    for b in (1, 100, 10_000):
        g = median_rate(gen_fn, b, args.reps, device.type)
        s = median_rate(lambda n: sim.simulate(n, rng), b, max(3, args.reps // 3))
        print(f"{b:>7} {g:>15,.0f} {s:>20,.0f} {g / s:>9.2f}")
    print(f"parameters: {model.n_parameters():,}  (generator {sum(p.numel() for p in model.nets['generator'].parameters()):,})")


if __name__ == "__main__":
    main()
