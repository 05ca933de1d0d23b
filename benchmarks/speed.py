"""Generation and training speed of every installed model, against its physics simulator.

    python benchmarks/speed.py [--models hgcal_wgan,3dgan] [--device auto|cpu|cuda]
                               [--batches 1,100,10000] [--budget 60] [--out benchmarks/results/speed.md]

Generation (the CaloChallenge protocol): per batch size one warm-up call, then the median
of 10 timed calls (fewer when 10 would exceed --budget seconds; a batch whose estimated
call time alone exceeds the budget is reported as "> budget", not run). The dataset's
parametric simulator is timed the same way, so the speed-up is measured side by side.
Each model runs in its own process (so "peak MiB" is that model's peak resident memory on
CPU, or peak allocated device memory on GPU). FLOPs per shower come from torch's flop
counter; the device's peak is measured in the same run with a large float32 matmul, and
every throughput is also given as a fraction of it.

Training: seconds per training step of the default preset (one warm-up step, then the
mean of --train-steps steps on a small simulated training set), showers seen per second,
and the paper preset's projected wall time on this device where the model states its
number of steps.

Weights are untrained: speed does not depend on them.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import calobench
from calobench.provenance import device_label, write_table
from calobench.timing import synchronizer, time_calls

TRAIN_N = 512


def peak_flops(device: torch.device, n: int | None = None, reps: int = 5) -> float:
    """float32 FLOP/s of an n x n matmul, median of ``reps``."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(times))


def _sync(device):
    synchronizer(device)()


def _timed(fn, batch: int, budget: float, reps: int = 10, device=None):
    """(showers/s, calls timed) or (None, the warm-up call's seconds) when that alone busts the budget."""
    t = time_calls(fn, reps=reps, budget_s=budget, device=device)
    return (t.rate(batch), t.calls) if t.median_s else (None, t.warmup_s)


def one_model(name: str, device_name: str, batches: list, budget: float, train_steps: int,
              overrides: dict | None = None, gen_preset: str = "paper", train: bool = True) -> dict:
    """Everything measured for one model, in this process."""
    device = calobench.resolve_device(device_name)
    cls = calobench.get_model(name)
    loaded = _dataset_for(cls)
    ds, info = loaded.dataset, loaded.info
    sim = ds.simulator  # for a refiner, the dataset is its source: the simulator makes its input
    rng = np.random.default_rng(0)
    pool = sim.simulate(min(max(batches), 2000), rng, **ds.entry["params"])
    out = {"model": name, "dataset": ds.name, "task": cls.task, "device": device_label(device), "gen": {},
           "sim": {}, "train": {}}

    # training speed, default and paper presets
    small = pool.head(min(TRAIN_N, len(pool)))
    kw = {}
    if cls.task == "refine":
        tgt = calobench.load_dataset(ds.counterpart).dataset
        kw["target"] = tgt.simulator.simulate(len(small), np.random.default_rng(2), **tgt.entry["params"])
    for preset in ("default", "paper") if train else ():
        out["train"][preset] = _train_speed(cls, info, preset, small, kw, device, train_steps, budget, overrides)
    # generation: the gen-preset's networks, fitted for one step (some models, e.g. baselines, cannot
    # generate before fit; the networks' weights do not change the speed)
    cfg = cls.config_for(gen_preset, overrides)
    cfg.update({k: v for k, v in {"steps": 1, "n_train": len(small), "epochs": None, "select_every": 10**9,
                                  "n_select": 8}.items() if k in cfg or k in ("steps", "n_train")})
    if "stages" in cfg:
        cfg["stages"] = [{"energy": None, "epochs": cfg["batch"] / len(small)}]
    torch.manual_seed(0)
    model = cls(info, cfg, device)
    model.fit(small, calobench.Trainer(progress=False), small, **kw)
    out["gen_preset"] = gen_preset
    out["parameters"] = model.n_parameters()
    flops = _flops_per_shower(model, pool)
    out["gflop_per_shower"] = flops / 1e9 if flops else None
    per_shower = None
    for b in batches:
        block = pool.take(np.arange(b) % len(pool))
        kw = {"showers": block.array()} if cls.task == "refine" else {"conditions": block.conditions}
        if per_shower is not None and per_shower * b > budget:
            out["gen"][str(b)] = {"showers_per_s": None, "estimated_call_s": per_shower * b}
            continue
        rate, n = _timed(lambda: model.generate_batch(**kw), b, budget, device=device)
        out["gen"][str(b)] = {"showers_per_s": rate, "reps": n} if rate else {"showers_per_s": None,
                                                                              "estimated_call_s": n}
        if rate:
            per_shower = 1 / rate
    for b in batches:
        rate, _ = _timed(lambda: sim.simulate(b, np.random.default_rng(1), **ds.entry["params"]), b, budget)
        out["sim"][str(b)] = rate
    if not train:
        out["peak_mib"] = _peak_mib(device)
        return out
    paper = cls.config_for("paper")
    n_paper = paper.get("n_train") or ds.entry["splits"]["train"].get("n")
    steps = None
    if hasattr(cls, "total_steps"):
        steps = cls(info, paper, torch.device("cpu")).total_steps(n_paper)
    elif "steps" in paper:
        steps = int(paper["steps"])
    out["train"]["paper_steps"] = steps
    out["peak_mib"] = _peak_mib(device)
    return out


def _peak_mib(device) -> float:
    return (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _dataset_for(cls):
    """The model's first declared dataset, or the first simulated dataset it supports."""
    for n in list(cls.datasets) or calobench.list_datasets():
        loaded = calobench.load_dataset(n)
        if loaded.dataset.entry.get("simulator") and cls.supports(loaded.info) is None:
            return loaded
    raise SystemExit(f"no simulated dataset for model {cls.name}")


def _train_speed(cls, info, preset, small, kw, device, steps, budget, overrides=None) -> dict:
    """Seconds per step: fit with 1 step (warm-up, set-up) and with 1 + ``steps``; the difference."""
    cfg = cls.config_for(preset, overrides)
    times = []
    for n in (1, 1 + steps):
        over = {"steps": n, "n_train": len(small), "epochs": None, "stages": None}
        over = {k: v for k, v in over.items() if k in cfg or k in ("steps", "n_train")}
        if "stages" in over:
            del over["stages"]
            over["stages"] = [{"energy": None, "epochs": n * cfg["batch"] / len(small)}]
        if "select_every" in cfg:
            over.update(select_every=10**9, n_select=8)
        torch.manual_seed(0)
        m = cls(info, {**cfg, **over}, device)
        t0 = time.perf_counter()
        m.fit(small, calobench.Trainer(progress=False), small, **kw)
        _sync(device)
        times.append(time.perf_counter() - t0)
        if times[0] > budget:
            return {"s_per_step": None, "first_step_s": times[0]}
    s = max((times[1] - times[0]) / steps, 1e-9)
    seen = cfg.get("batch", 1) * (cfg.get("n_critic", 0) + 1)
    return {"s_per_step": s, "showers_seen_per_s": seen / s}


def _flops_per_shower(model, pool) -> float | None:
    from torch.utils.flop_counter import FlopCounterMode

    block = pool.take(np.arange(4))
    kw = {"showers": block.array()} if model.task == "refine" else {"conditions": block.conditions}
    applied = getattr(model, "_fast_paths_applied", False)
    model._fast_paths_applied = True  # count the plain networks (a compiled graph hides its ops from the counter)
    try:
        with FlopCounterMode(display=False) as fc:
            model.generate_batch(**kw)
        return fc.get_total_flops() / 4 or None
    except Exception:
        return None
    finally:
        model._fast_paths_applied = applied


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _fmt(x, digits=3):
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.{digits}g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None, help="comma-separated (default: all installed)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batches", default="1,100,10000")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per (model, batch) measurement")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/speed.md"))
    ap.add_argument("--gen-preset", default="paper", help="preset whose networks are timed for generation")
    ap.add_argument("--no-train", action="store_true", help="skip the training figures")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a model config value, e.g. generation_amp=bf16 (a fast path to measure)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    overrides = {k: _value(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(one_model(args.one, args.device, batches, args.budget, args.train_steps, overrides,
                                   args.gen_preset, not args.no_train)))
        return
    names = args.models.split(",") if args.models else sorted(calobench.registry().models)
    device = calobench.resolve_device(args.device)
    peak = peak_flops(device)
    print(f"device: {device_label(device)}; float32 matmul peak {peak / 1e9:,.0f} GFLOP/s"
          + (f"; model overrides {overrides}" if overrides else ""))
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--one", name, "--device", args.device, "--batches", args.batches,
               "--budget", str(args.budget), "--train-steps", str(args.train_steps)]
        cmd += [f"--gen-preset={args.gen_preset}"] + (["--no-train"] if args.no_train else [])
        cmd += [f"--set={o}" for o in args.overrides] + ([f"--threads={args.threads}"] if args.threads else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{name}: failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(f"{name}: done")
    import pandas as pd

    table = []
    for r in rows:
        g = r["gflop_per_shower"]
        row = {"model": r["model"], "dataset": r["dataset"], "parameters": f"{r['parameters']:,}",
               "GFLOP/shower": _fmt(g)}
        for b in batches:
            gen = r["gen"][str(b)]
            rate = gen["showers_per_s"]
            row[f"showers/s @{b}"] = _fmt(rate) if rate else f"> budget (~{gen['estimated_call_s']:.0f} s/call)"
            row[f"sim showers/s @{b}"] = _fmt(r["sim"][str(b)])
        best = max((v["showers_per_s"] or 0) for v in r["gen"].values())
        row["% of peak"] = f"{100 * g * 1e9 * best / peak:.1f}" if g and best else "-"
        row["peak MiB"] = f"{r['peak_mib']:,.0f}"
        for preset in ("default", "paper") if r["train"] else ():
            t = r["train"][preset]
            row[f"train s/step ({preset})"] = (_fmt(t["s_per_step"]) if t["s_per_step"] > 1e-6 else "-") \
                if t["s_per_step"] else f"> budget ({t['first_step_s']:.0f} s)"
            row[f"train showers/s ({preset})"] = _fmt(t.get("showers_seen_per_s")) if t["s_per_step"] and \
                t["s_per_step"] > 1e-6 else "-"
        if r["train"]:
            tp, steps = r["train"]["paper"], r["train"]["paper_steps"]
            row["paper preset, projected h"] = _fmt(tp["s_per_step"] * steps / 3600) \
                if tp["s_per_step"] and tp["s_per_step"] > 1e-6 and steps else "-"
        table.append(row)
    df = pd.DataFrame(table)
    print()
    print(df.to_string(index=False))
    description = (f"float32 matmul peak {peak / 1e9:,.0f} GFLOP/s, measured in the same run. "
                   f"Generation with the `{args.gen_preset}` preset's networks; showers/s: median of up to 10 calls "
                   "after a warm-up (`calobench.timing`); `sim`: the dataset's parametric simulator (numpy) on the "
                   "same machine; % of peak: FLOPs per shower x best showers/s / matmul peak; train: seconds per step "
                   "of the default and paper presets (mean of 3 after a warm-up; \"> budget\": the first step alone "
                   "took longer), untrained weights; projected: the paper preset's steps x its s/step."
                   + (f" Model overrides: {overrides}." if overrides else ""))
    write_table(args.out, "Speed", description, df.to_markdown(index=False), device=device)
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
