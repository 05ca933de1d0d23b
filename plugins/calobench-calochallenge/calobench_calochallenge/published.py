"""The challenge's published results (arXiv:2410.21611, its ``final_results`` tables) as board references.

``data/published_results_<dataset>.csv``: one row per submission with AUC low / high (and std),
FPD and KPD x 1e3 (and std), generation timing in ms per shower (CPU / GPU at batch 1, 100,
10 000). The GEANT4 row is the challenge's own real-vs-real floor. Each row becomes a
:class:`calobench.Reference` on the board of the matching calobench dataset; the speed shown is
the fastest reported setting.
"""
from __future__ import annotations

import csv
from pathlib import Path

from calobench import Reference

SOURCE = "CaloChallenge 2022, arXiv:2410.21611"
BOARDS = {"ds1_photons": "calochallenge_ds1_photons", "ds1_pions": "calochallenge_ds1_pions",
          "ds2": "calochallenge_ds2", "ds3": "calochallenge_ds3"}
COLUMNS = {"cc_auc_low": ("auc_low", "auc_low_std"), "cc_auc_high": ("auc_high", "auc_high_std"),
           "cc_fpd": ("fpd_x1e3", "fpd_x1e3_std"), "cc_kpd": ("kpd_x1e3", "kpd_x1e3_std")}
TIMING = [(f"ms_per_shower_{dev}_b{b}", dev, b) for dev in ("gpu", "cpu") for b in (10000, 100, 1)]


def _num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def rows(which: str) -> list:
    path = Path(__file__).with_name("data") / f"published_results_{which}.csv"
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def references() -> list:
    out = []
    for which, board in BOARDS.items():
        for r in rows(which):
            metrics = {m: (_num(r[v]), _num(r[u])) for m, (v, u) in COLUMNS.items() if _num(r[v]) is not None}
            timed = [(_num(r[c]), dev, b) for c, dev, b in TIMING if _num(r.get(c))]
            best = min(timed, default=None)
            params = _num(r.get("parameters_generation"))
            out.append(Reference(dataset=board, model=r["model"], source=SOURCE, metrics=metrics,
                                 showers_per_s=1e3 / best[0] if best else None,
                                 device=f"{best[1]}, batch {best[2]}, published" if best else "",
                                 floor=r["model"] == "GEANT4",
                                 note=f"{params:,.0f} parameters" if params else ""))
    return out
