"""Air showers: the README's results tables from a finished run.

    python plugins/calobench-airshower/benchmarks/results.py runs/<run folder> [leaderboard/records/<record>.json ...]

Prints, from each run's record (a run folder, or a committed record file) (the values `calobench run` computed):
  * refiner runs: the refinement-utility table, AixNet trained on (a) raw simulation, (b) the
    refined sample, (c) data, evaluated on the data test split: bias, resolution and RMS of the
    relative energy error, overall and per energy bin;
  * WGAN runs: the label-consistency AixNet's bias and resolution on real and generated
    patterns per energy bin, and the correlations;
  * every run: its physics checks, value and target, and the training time.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import calobench


def _bins(per_bin: dict) -> str:
    return " ".join(f"({v['bias']:+.2f}, {v['resolution']:.2f})" for v in per_bin.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="run folders or record .json files")
    args = ap.parse_args()
    for path in args.runs:
        try:
            rec = json.loads(path.read_text()) if path.is_file() else calobench.load_run(path, weights=False).record
        except (calobench.CalobenchError, ValueError) as e:
            raise SystemExit(f"error: {e}") from None
        if rec is None:
            raise SystemExit(f"{path}: the run has not finished (no record.json)")
        m = rec["metrics"]
        print(f"{path.name}: {rec['model']} ({rec['preset']}, code {rec['code']['revision'][:7]}), "
              f"{rec['train']['steps']} steps in {rec['train']['wall_s'] / 60:.1f} min of training")
        ru = m.get("refinement_utility", {})
        if ru.get("status") == "ok":
            d = ru["details"]
            print(f"\nAixNet relative energy error on the data test split ({d['n_eval']} events; "
                  f"{d['n_train']} for training each AixNet); per bin: (bias, resolution) "
                  f"{' / '.join(d['data']['per_energy_bin'])}")
            for key, label in (("sim", "(a) raw simulation"), ("refined", "(b) refined"), ("data", "(c) data")):
                x = d[key]
                print(f"  {label:<20} bias {x['bias']:+.3f}  resolution {x['resolution']:.3f}  "
                      f"RMS {x['rms']:.3f} +- {x['rms_unc']:.3f}  {_bins(x['per_energy_bin'])}")
        lc = m.get("label_consistency", {})
        if lc.get("status") == "ok":
            d = lc["details"]
            print(f"\nlabel consistency: correlation generated {d['correlation_generated']:.3f}, "
                  f"real {d['correlation_real']:.3f}; per bin (bias, resolution) "
                  f"{' / '.join(d['real']['per_energy_bin'])}")
            for key in ("real", "generated"):
                x = d[key]
                print(f"  {key:<10} bias {x['bias']:+.3f}  resolution {x['resolution']:.3f}  "
                      f"{_bins(x['per_energy_bin'])}")
        print("\nphysics checks")
        for c in rec.get("physics", []):
            unc = f" +- {c['uncertainty']:.2f}" if c.get("uncertainty") is not None else ""
            print(f"  {'pass' if c['pass'] else 'FAIL'}  {c['name']:<24} {c['value']:+.3f}{unc}  {c['target']}")
        print()


if __name__ == "__main__":
    main()
