"""What size of error can each metric see?  Floor vs deliberately distorted samples.

For a builtin dataset (default: hgcal) every installed metric is computed between the
test split and
  floor          the independent reference split (real vs real: what "perfect" scores)
  energy +5%     the reference with every cell scaled by 1.05
  shift 1 cell   the reference shifted by one cell in x (dead cells re-masked)
  no noise       an independent sample simulated without electronic noise (hgcal)
  decorrelated   every cell permuted independently across showers (marginals kept,
                 correlations gone: the per-cell baseline's failure mode)
and printed with the distance from the floor in units of the combined uncertainty.
For a refine dataset (one with a counterpart, e.g. airshower_sim) the showers scored are the
counterpart's (what refined showers are compared with), the source given to the metrics.

The gate: a metric passes on a dataset when it scores each of the three distortions a generator
makes (energy +5 %, a one-cell shift, decorrelated cells: the audit's) worse than the floor by
more than 3 combined standard uncertainties. "no noise" is printed as a probe of fine detail
(0.25 MIP of electronic noise under a 2 MIP threshold), not gated. ``--write leaderboard/sensitivity`` writes the
table (``<dataset>.md``) and the gate (``<dataset>.json``) that boards in that folder rank by:
only metrics that pass rank there.

    python benchmarks/metric_sensitivity.py [--dataset hgcal] [--n 5000] [--metrics a,b]
        [--write leaderboard/sensitivity]
    python benchmarks/metric_sensitivity.py --summary leaderboard/sensitivity   # every gate, one table
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

import calobench
from calobench import MetricContext, ShowerData
from calobench.io import write_json, write_text

GATE_SIGMA = 3.0
GATED = ("energy +5%", "shift 1 cell", "decorrelated")
CONSTANT = ("its value is the same for every distortion of the showers it is given (it scores something this "
            "benchmark cannot distort, e.g. a network trained on the model's refined training showers): not gated")


def scaled(d, f):
    return ShowerData(d.array() * f, d.conditions, d.geometry)


def shifted(d):
    x = np.roll(d.array(), 1, axis=1)
    if d.geometry.mask is not None:
        x = x * d.geometry.mask
    return ShowerData(x, d.conditions, d.geometry)


def decorrelated(d, seed=0):
    rng = np.random.default_rng(seed)
    x = d.array().reshape(len(d), -1).copy()
    for j in range(x.shape[1]):
        x[:, j] = x[rng.permutation(len(x)), j]
    return ShowerData(x.reshape(d.array().shape), d.conditions, d.geometry)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="hgcal")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--metrics", default=None)
    ap.add_argument("--write", type=Path, default=None, help="folder for <dataset>.md and the gate <dataset>.json")
    ap.add_argument("--summary", type=Path, default=None, help="print the gates found in this folder as one table")
    args = ap.parse_args()
    if args.summary:
        return summary(args.summary)
    loaded = calobench.load_dataset(args.dataset)
    ds, source = loaded.dataset, None
    scored = loaded
    if ds.counterpart:
        scored, source = calobench.load_dataset(ds.counterpart), loaded.info
    real = scored.load("test").head(args.n)
    ref = scored.load("reference").head(args.n)
    variants = {"floor": ref, "energy +5%": scaled(ref, 1.05), "shift 1 cell": shifted(ref),
                "decorrelated": decorrelated(ref)}
    if scored.dataset.entry.get("simulator") == "hgcal":
        sim = calobench.registry().simulators["hgcal"]
        variants["no noise"] = sim.simulate(len(ref), np.random.default_rng(12345), noise_mip=0.0)
    metrics = calobench.get_metrics(args.metrics.split(",") if args.metrics else None)
    ctx = MetricContext(dataset=scored.info, seed=0, source=source)
    # one scratch space per scored pair, shared by the metrics scoring it, as the runner does
    # (a metric that caches work in ctx.shared must not see another variant's)
    contexts = {k: dataclasses.replace(ctx, shared={}) for k in variants}
    print(f"dataset {args.dataset}: {len(real)} real test showers vs {len(ref)} per variant"
          + (f" (showers of its counterpart {ds.counterpart})" if source else ""))
    header = f"{'metric':<28}" + "".join(f"{v:>26}" for v in variants)
    print(header)
    print("-" * len(header))
    gate = {}
    for m in metrics:
        if m.applies_to(ctx.dataset):
            continue
        t0 = time.perf_counter()
        try:
            res = {k: m.compute(real, v, contexts[k]) for k, v in variants.items()}
        except (calobench.CalobenchError, ValueError, RuntimeError) as exc:
            print(f"{m.name:<28} failed: {exc}")
            gate[m.name] = {"version": int(m.version), "pass": False, "reason": f"could not be measured ({exc})"}
            continue
        f = res["floor"]
        cells, sigmas = [], {}
        for k, r in res.items():
            if k == "floor":
                cells.append(f"{r.value:.4g} ± {r.uncertainty:.2g}")
            else:
                sig = (r.value - f.value) / max(np.hypot(r.uncertainty, f.uncertainty), 1e-300)
                sig = -sig if m.higher_is_better else sig
                if m.target is not None:
                    sig = (abs(r.value - m.target) - abs(f.value - m.target)) / max(
                        np.hypot(r.uncertainty, f.uncertainty), 1e-300)
                sigmas[k] = float(sig)
                cells.append(f"{r.value:.4g} ({sig:+.1f}σ)")
        blind = [f"{k} {s:+.1f}σ" for k, s in sigmas.items() if k in GATED and not s > GATE_SIGMA]
        passed = not blind
        constant = all(r.value == f.value for r in res.values())
        gate[m.name] = {"version": int(m.version), "uncertainty_version": int(getattr(m, "uncertainty_version", 1)),
                        "pass": passed, "floor": [float(f.value), float(f.uncertainty)],
                        "distortions": {k: {"value": float(r.value), "uncertainty": float(r.uncertainty),
                                            "sigma": sigmas[k]} for k, r in res.items() if k != "floor"},
                        **({} if passed else {"reason": CONSTANT if constant else
                                              "within 3 sigma of the floor (or better) on " + ", ".join(blind)})}
        gate[m.name]["arrow"] = m.arrow
        print(f"{m.name + ' ' + m.arrow:<28}" + "".join(f"{c:>26}" for c in cells)
              + f"   [{time.perf_counter() - t0:.0f} s]" + ("" if passed else "   (fails the gate)"), flush=True)
    print("\n(+Nσ: worse than the floor by N combined standard uncertainties; ↓ lower / ↑ higher is better; "
          f"the gate: {', '.join(GATED)} each > +{GATE_SIGMA:g}σ)")
    if args.write:
        from calobench.provenance import provenance, provenance_markdown

        old_path = args.write / f"{args.dataset}.json"
        if args.metrics and old_path.exists():  # a selection updates the dataset's gate, the rest is kept
            import json

            gate = {**json.loads(old_path.read_text())["metrics"], **gate}
        gate = dict(sorted(gate.items()))
        md = [table_row(name, e, list(variants)) for name, e in gate.items() if "floor" in e]

        prov = provenance()
        write_json(args.write / f"{args.dataset}.json",
                   {"dataset": args.dataset, "dataset_key": scored.info.key, "n": len(real), "sigma": GATE_SIGMA,
                    "command": f"python benchmarks/metric_sensitivity.py --dataset {args.dataset} --n {args.n} "
                               f"--write {args.write}", "metrics": gate, "provenance": prov})
        head = "| metric | " + " | ".join(variants) + " | gate |\n|---|" + "---:|" * len(variants) + "---|\n"
        write_text(args.write / f"{args.dataset}.md",
                   f"# Sensitivity gate: `{args.dataset}`\n\n{provenance_markdown(prov)}\n"
                   f"Generated by `python benchmarks/metric_sensitivity.py --dataset {args.dataset} --n {args.n} "
                   f"--write {args.write}`; do not edit. Every metric on {len(real)} real test showers"
                   + (f" of `{ds.counterpart}`" if source else "")
                   + " against the independent reference split (floor) and distortions of it: cells x 1.05, "
                   "shifted by one cell in x, every cell permuted across showers (decorrelated)"
                   + (", a sample simulated without electronic noise (a probe of fine detail, not gated)"
                      if "no noise" in variants else "")
                   + f". (+Nσ: worse than the floor by N combined standard uncertainties.) A metric ranks on this "
                   f"dataset's boards only if each of {', '.join(GATED)} is worse than the floor by more than "
                   f"{GATE_SIGMA:g}σ. Uncertainties: each metric's own ±, checked against the spread over "
                   "independent pairs by benchmarks/uncertainty_calibration.py."
                   "\n\n" + head + "\n".join(md) + "\n"
                   + "".join(f"\n- `{m}`: {e['reason']}" for m, e in gate.items() if e.get("reason") == CONSTANT)
                   + ("\n" if any(e.get("reason") == CONSTANT for e in gate.values()) else ""))
        print(f"wrote {args.write / (args.dataset + '.md')} and the gate {args.write / (args.dataset + '.json')}")


def table_row(name: str, e: dict, variants: list) -> str:
    """One markdown row of a gate entry: floor ± and each distortion's value and sigma."""
    arrow = e.get("arrow") or calobench.get_metrics([name])[0].arrow
    cells = [f"{e['floor'][0]:.4g} ± {e['floor'][1]:.2g}"]
    for k in variants[1:]:
        d = e["distortions"].get(k)
        cells.append("-" if d is None else f"{d['value']:.4g} ({d['sigma']:+.1f}σ)")
    return f"| {name} {arrow} | " + " | ".join(cells) + f" | {'ranked' if e['pass'] else 'unranked'} |"


def summary(folder: Path) -> None:
    """metric x dataset: the sigma of each gated distortion, ranked or not (markdown)."""
    import json

    gates = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    names = sorted({m for g in gates.values() for m in g["metrics"]})
    print("| metric | " + " | ".join(f"{d} (N={g['n']})" for d, g in gates.items()) + " |")
    print("|---|" + "---|" * len(gates))
    for m in names:
        cells = []
        for g in gates.values():
            e = g["metrics"].get(m)
            if e is None:
                cells.append("n/a")
                continue
            sig = " / ".join(f"{v:+.1f}" if abs(v) < 10 else f"{v:+.0f}"
                             for v in (e["distortions"][k]["sigma"] for k in GATED if k in e.get("distortions", {})))
            cells.append(f"{'**ranked**' if e['pass'] else 'unranked'} ({sig or e.get('reason', '')})")
        print(f"| `{m}` | " + " | ".join(cells) + " |")
    print(f"\n(σ of {', '.join(GATED)} above the floor; ranked: each > {GATE_SIGMA:g})")


if __name__ == "__main__":
    main()
