"""What the refiner's response calibration buys, on one run: the refined test sample as scored (with
the calibration) and the same refiner's output without it (the sample divided by its per-event factor),
each scored as `refinement_utility` scores it (AixNet trained on the first half of the refined sample,
the metric's recipe and seed, evaluated on the other half of the data test split); (a) raw simulation
and (c) data are read from the run's record. Prints RMS, bias, resolution and the gap closed per
energy bin.

    python plugins/calobench-airshower/benchmarks/calibration_effect.py runs/airshower_sim__airshower_refiner__default-<hash>__seed0
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import calobench
from calobench_airshower.aixnet import METRIC_TRAINING, make_aixnet, predict_energy, train_regressor
from calobench_airshower.metrics import response


def rms(r: dict) -> float:
    return float(np.hypot(r["bias"], r["resolution"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    args = ap.parse_args()
    run = calobench.load_run(args.run)
    rec = run.record
    if rec is None or "calibration" not in run.model.nets:
        raise SystemExit(f"{args.run}: needs a finished airshower_refiner run with calibrate_response")
    u = rec["metrics"]["refinement_utility"]["details"]
    gen = run.samples()
    refined, energy = gen.array(), np.asarray(gen.conditions["energy"])
    k = run.model.nets["calibration"].factor(torch.as_tensor(energy, dtype=torch.float32)).numpy()
    real = calobench.load_dataset(rec["target"]).load("test")
    n = len(refined) // 2
    test = real.take(np.arange(len(real) - min(n, len(real) // 2), len(real)))
    e = test.conditions["energy"]
    rows = {"(a) raw simulation (record)": u["sim"], "(c) data (record)": u["data"]}
    for label, x in (("(b) refined, calibrated", refined), ("(b) refined, uncalibrated", uncalibrated(run, refined, k))):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rec["seed"])
            net = make_aixnet(x.shape[1:])
        train_regressor(net, x[:n], energy[:n], rec["seed"], **METRIC_TRAINING)
        rows[label] = response(predict_energy(net, test.array()), e)
    print(f"record (b) RMS {u['refined']['rms']:.3f}; calibration factors "
          + ", ".join(f"{a:.3g} EeV: {b:.3f}" for a, b in zip(*_knots(run.model))))
    bins = list(u["sim"]["per_energy_bin"])
    print(f"{'AixNet trained on':<28} {'RMS':>6} {'bias':>7} {'res':>6}  " + "  ".join(f"{b:>22}" for b in bins))
    for label, r in rows.items():
        per = "  ".join(f"({v['bias']:+.2f}, {v['resolution']:.2f}) {rms(v):.3f}".rjust(22) for v in r["per_energy_bin"].values())
        print(f"{label:<28} {r['rms']:6.3f} {r['bias']:+7.3f} {r['resolution']:6.3f}  {per}")
    a, c = rows["(a) raw simulation (record)"], rows["(c) data (record)"]
    for label in ("(b) refined, calibrated", "(b) refined, uncalibrated"):
        b = rows[label]
        closed = [(rms(a["per_energy_bin"][k_]) - rms(b["per_energy_bin"][k_])) /
                  (rms(a["per_energy_bin"][k_]) - rms(c["per_energy_bin"][k_])) for k_ in bins]
        print(f"gap closed, {label[4:]}: overall {(a['rms'] - b['rms']) / (a['rms'] - c['rms']):.2f}; "
              + ", ".join(f"{k_} {v:.2f}" for k_, v in zip(bins, closed)))


def uncalibrated(run, refined, k):
    """The refined test sample without the calibration: the sample over its factor, or, where the
    refiner reads its output out as the array does (``readout``: the factor comes before the zero
    suppression and the trigger), the simulated test events refined again with the factor set to 1."""
    if not run.model.config.get("readout"):
        return refined / k[:, None, None, None]
    sim = calobench.load_dataset(run.record["source"]).load("test")
    sim = sim.take(np.arange(len(refined)))
    cal = run.model.nets["calibration"]
    n = int(cal.n)
    cal.n.fill_(0)  # factor() is 1 everywhere
    try:
        return run.model.refine(sim.array(), sim.conditions)
    finally:
        cal.n.fill_(n)


def _knots(model):
    cal = model.nets["calibration"]
    n = int(cal.n)
    return np.exp(cal.log_energy[:n].numpy()), np.exp(cal.log_factor[:n].numpy())


if __name__ == "__main__":
    main()
