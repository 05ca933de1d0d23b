"""Generation fast paths measured side by side: plain vs each opt-in, per model, one run.

    python benchmarks/fast_paths.py [--models hgcal_wgan,3dgan] [--batches 1,100]
        [--paths generation_compile,channels_last,generation_amp=bf16,threads=1] [--rounds 2]
        [--out benchmarks/results/fast_paths.md]

For every model and batch size, each variant (plain first, then every fast path) is timed by
``benchmarks/speed.py --one`` in its own process (median of up to 10 calls after a warm-up;
the warm-up pays for compilation). Variants are interleaved for ``--rounds`` rounds and the
best round is kept, so a noisy neighbour hurts every variant alike. Prints showers/s and the
ratio to plain; ``--out`` writes the table with the machine and versions. A path
``threads=N`` times plain generation with N torch CPU threads (plain uses ``--threads``, or
torch's default: one per core); ``a+b`` applies several paths at once.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(model: str, batches: str, setting: str | None, device: str, budget: float, threads: int | None) -> dict:
    cmd = [sys.executable, str(HERE / "speed.py"), "--one", model, "--batches", batches, "--no-train",
           "--device", device, "--budget", str(budget)]
    for part in setting.split("+") if setting else []:  # "a+b": several paths at once
        if part.startswith("threads="):  # a CPU thread count instead of a config flag
            threads = int(part.split("=", 1)[1])
        else:
            cmd.append(f"--set={part}" if "=" in part else f"--set={part}=true")
    cmd += [f"--threads={threads}"] if threads else []
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="hgcal_wgan,3dgan")
    ap.add_argument("--batches", default="1,100")
    ap.add_argument("--paths", default="generation_compile,channels_last")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds per (variant, batch), warm-up included")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    variants = [None, *args.paths.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    best: dict = {}
    for rnd in range(args.rounds):
        for model in args.models.split(","):
            for v in variants:
                r = measure(model, args.batches, v, args.device, args.budget, args.threads)
                key = (model, v or "plain")
                if "error" in r:
                    best.setdefault(key, {})["error"] = r["error"]
                    print(f"round {rnd + 1} {model} {v or 'plain'}: failed: {r['error']}", flush=True)
                    continue
                for b in batches:
                    rate = r["gen"][str(b)]["showers_per_s"]
                    if rate and rate > best.setdefault(key, {}).get(b, 0):
                        best[key][b] = rate
                print(f"round {rnd + 1} {model} {v or 'plain'}: " +
                      ", ".join(f"{r['gen'][str(b)]['showers_per_s'] or 0:.1f}/s @{b}" for b in batches), flush=True)
    rows = []
    for (model, v), rates in best.items():
        plain = best.get((model, "plain"), {})
        row = [model, v]
        for b in batches:
            if b in rates and b in plain:
                row += [f"{rates[b]:,.1f}", f"{rates[b] / plain[b]:.2f}"]
            else:
                row += [rates.get("error", "-") if b not in rates else f"{rates[b]:,.1f}", "-"]
        rows.append(row)
    head = ["model", "variant"] + [x for b in batches for x in (f"showers/s @{b}", f"x plain @{b}")]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    print("\n".join(table))
    if args.out:
        from calobench.provenance import write_table

        write_table(args.out, "Generation fast paths",
                    "Paper-preset networks; showers/s: median of up to 10 calls after a warm-up (which pays for "
                    f"compilation; `calobench.timing`), best of {args.rounds} interleaved rounds; x plain: ratio to "
                    "the plain variant measured in the same run.", "\n".join(table),
                    device=args.device if args.device != "auto" else None)


if __name__ == "__main__":
    main()
