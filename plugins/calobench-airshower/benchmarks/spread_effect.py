"""What the WGAN's spread calibration (``calibrate_spread``, ``TotalSpread``) does, on one trained run:
the run's generated test sample as scored (samples.h5), and the same sample with every pattern scaled by
the factor of a ``TotalSpread`` (the run's own, or one fitted the way ``calibrate()`` fits it: the first
``n_calibrate`` validation patterns, one pattern generated per validation energy), each scored on the check
the record carries: W1(total signal) / std_real. Prints the check and
the mean and standard deviation of log10(total) per energy bin, real and generated, both ways. On a run
whose model already has the map (``calibrate_spread``), the scored sample alone.

    python plugins/calobench-airshower/benchmarks/spread_effect.py runs/airshower_pattern__airshower_wgan__default-<hash>__seed0
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance

import calobench
from calobench_airshower.models import TotalSpread

E_BINS = (1, 3, 10, 30, 60, 100.001)


def log_total(x) -> np.ndarray:
    t = np.asarray(x, np.float64).reshape(len(x), -1).sum(1)
    with np.errstate(divide="ignore"):
        return np.log10(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    args = ap.parse_args()
    try:
        run = calobench.load_run(args.run)
    except calobench.CalobenchError as e:
        raise SystemExit(f"error: {e}") from None
    model, rec = run.model, run.record
    if rec is None or model is None or model.name != "airshower_wgan" or "calibration" not in model.nets:
        raise SystemExit(f"{args.run}: needs a finished airshower_wgan run with calibrate_response")
    ds = calobench.load_dataset(rec["dataset"])
    val, test = ds.load("validation"), ds.load("test")
    sample = run.samples()
    e_test, without = np.asarray(sample.conditions["energy"], np.float64), sample.array()
    rows = [("real (test)", None), ("generated", without)]
    if "spread" not in model.nets:
        rows.append(("generated + spread", with_spread(model, val, without, e_test)))
    real_total = test.array().reshape(len(test), -1).sum(1).astype(np.float64)
    lr, e_real = log_total(test.array()), np.asarray(test.conditions["energy"], np.float64)
    print(f"{args.run.name}: {rec['model']} ({rec['preset']}, code {rec['code']['revision'][:7]}); "
          f"test patterns {len(test)}; the record's w1_total_signal "
          + ", ".join(f"{c['value']:.3f}" for c in rec.get("physics", []) if c["name"] == "w1_total_signal"))
    print(f"{'':<22} {'W1/std':>7}  " + "  ".join(f"{f'{lo}-{hi:.0f} EeV':>17}" for lo, hi in zip(E_BINS, E_BINS[1:])))
    for label, x in rows:
        lt, e = (lr, e_real) if x is None else (log_total(x), e_test)
        w1 = 0.0 if x is None else wasserstein_distance(real_total, x.reshape(len(x), -1).sum(1)) / real_total.std()
        cells = []
        for lo, hi in zip(E_BINS, E_BINS[1:]):
            s = (e >= lo) & (e < hi) & np.isfinite(lt)
            cells.append(f"{lt[s].mean():.3f} +- {lt[s].std():.3f}".rjust(17))
        print(f"{label:<22} {w1:7.3f}  " + "  ".join(cells))
    print("(per bin: mean +- standard deviation of log10 of the total signal, VEM; patterns with signal)")


def with_spread(model, val, sample: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """``sample`` with every pattern scaled by a TotalSpread fitted as calibrate() fits it (after the run's own
    response calibration)."""
    spread = TotalSpread(model.config["spread_bins"])
    v = val.head(min(len(val), model.config["n_calibrate"]))
    energy = np.asarray(v.conditions["energy"], np.float64)
    real = v.array().reshape(len(v), -1).sum(1).astype(np.float64)
    torch.manual_seed(0)
    gen = model.sample({"energy": energy}).reshape(len(v), -1).sum(1).astype(np.float64)
    spread.fit((energy, real), (energy, gen))
    k = spread.factor(energies, sample.reshape(len(sample), -1).sum(1).astype(np.float64))
    return sample * k.reshape(-1, *([1] * (sample.ndim - 1)))


if __name__ == "__main__":
    main()
