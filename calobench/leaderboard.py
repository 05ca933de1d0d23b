"""Leaderboard: JSON records in ``<dir>/records/`` -> one markdown table per dataset key.

The tables are regenerated from the records only, deterministically; nothing is edited by
hand. One row per (model, config hash): its seeds collapse into the mean, ``±`` the spread over
seeds (sample standard deviation) when there are several, else the metric's own uncertainty.
The floor row (every metric on two independent real samples) is shared by the whole board:
floors are computed with one fixed seed per (dataset key, metric version, N). Rows are ranked by
the mean of their per-metric ranks; a metric with a target value ranks by the distance to it.
Records of presets that are not for boards (``ranked: false``, e.g. smoke runs) are refused.

Sensitivity gate: when the board folder holds ``sensitivity/<dataset>.json`` (written by
``benchmarks/metric_sensitivity.py --write``), only the metrics that passed it at the records'
metric version rank, and only on records of the dataset key the gate was measured on (a new
simulator version needs a new gate); the others are shown unranked with the gate's reason.
Without that file every metric ranks (the board says so).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CalobenchError
from .io import locked, read_json, remove_stale_temps, write_json, write_text
from .reference import Reference  # noqa: F401  (public as calobench.Reference)

SCHEMA = 2


def references_for(references, dataset: str) -> list:
    refs = [r for r in (references.values() if isinstance(references, dict) else references or [])
            if r.dataset == dataset]
    return sorted(refs, key=lambda r: (not r.floor, r.model.lower()))


def record_name(record: dict) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(record["model"]))
    return f"{record['dataset']}__{safe}__{record['config_hash']}__seed{record['seed']}.json"


def add_record(folder, record: dict) -> list:
    """Write ``record`` into ``folder/records/`` and regenerate its board (under a lock)."""
    if not record.get("ranked", True):
        raise CalobenchError(f"preset '{record.get('preset')}' is not for leaderboards; its record stays in the "
                             "run folder")
    folder = Path(folder)
    slim = {k: v for k, v in record.items() if k not in ("leaderboard",)}
    if "train" in slim:
        slim["train"] = {k: v for k, v in slim["train"].items() if k != "history"}
    with locked(folder):
        remove_stale_temps(folder)
        remove_stale_temps(folder / "records")
        write_json(folder / "records" / record_name(record), slim)
        return render(folder, datasets=[record["dataset"]])


def load_records(folder) -> list:
    records = []
    for p in sorted((Path(folder) / "records").glob("*.json")):
        r = read_json(p)
        if not isinstance(r, dict) or r.get("schema") != SCHEMA:
            raise CalobenchError(f"{p}: a record of schema {r.get('schema') if isinstance(r, dict) else '?'}, "
                                 f"this calobench reads schema {SCHEMA}; regenerate it with a new run")
        if not r.get("ranked", True):
            raise CalobenchError(f"{p}: a record of a preset that is not for leaderboards ('{r.get('preset')}')")
        records.append(r)
    return records


def _fmt(v, u=None) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    s = f"{v:.4g}"
    if u is not None and np.isfinite(u):
        s += f" ± {u:.2g}"
    return s


def _arrow(e: dict) -> str:
    mark = " (unranked)" if e.get("ranked", True) is False else ""
    if e.get("target") is not None:
        return f"→{e['target']:g}{mark}"
    return ("↑" if e.get("higher_is_better") else "↓") + mark


GATE_DIR = "sensitivity"


def read_gate(folder, dataset: str) -> dict | None:
    """The sensitivity gate table of ``dataset`` kept with the board folder, or None."""
    path = Path(folder) / GATE_DIR / f"{dataset}.json"
    if not path.exists():
        return None
    gate = read_json(path)
    if not isinstance(gate, dict) or not isinstance(gate.get("metrics"), dict):
        raise CalobenchError(f"{path}: not a sensitivity gate table; regenerate it with "
                             "benchmarks/metric_sensitivity.py --write")
    return gate


def gate_reason(gate: dict | None, metric: str, version: int, dataset_key: str | None = None) -> str | None:
    """Why ``metric`` (at ``version``, on records of ``dataset_key``) may not rank under ``gate``;
    None when it may. A gate measured on another version of the dataset ranks nothing."""
    if gate is None:
        return None
    if dataset_key and gate.get("dataset_key") and gate["dataset_key"] != dataset_key:
        return (f"the sensitivity gate was measured on dataset key {gate['dataset_key']}, these records are on "
                f"{dataset_key} (rerun the gate)")
    g = gate["metrics"].get(metric)
    if g is None:
        return f"not in this board's sensitivity gate table ({GATE_DIR}/{gate.get('dataset', '?')}.md)"
    if int(g.get("version", 1)) != int(version):
        return (f"the sensitivity gate measured version {g.get('version', 1)}, these records carry version {version} "
                "(rerun the gate or the runs)")
    if not g.get("pass"):
        return f"fails the sensitivity gate: {g.get('reason', 'a distortion within 3 sigma of the floor')}"
    return None


def unranked(records: list, gate: dict | None = None) -> dict:
    """metric -> why it is shown but not ranked (the records' metric entries, then the gate)."""
    out = {}
    for r in records:
        for m, e in r["metrics"].items():
            if e.get("ranked", True) is False:
                out[m] = e.get("unranked_reason", "not ranked")
            elif m not in out and e.get("status", "ok") == "ok":
                why = gate_reason(gate, m, e.get("version", 1), r.get("target_key") or r.get("dataset_key"))
                if why:
                    out[m] = why
    return dict(sorted(out.items()))


def _ok(record: dict, metric: str) -> bool:
    e = record["metrics"].get(metric, {})
    return e.get("status", "ok") == "ok" and e.get("value") is not None


def _physics(record: dict) -> str:
    p = record.get("physics") or []
    return f"{sum(1 for e in p if e.get('pass'))}/{len(p)}" if p else "-"


def rows(records: list) -> list:
    """One row per (model, config hash): its records (seeds) and per-metric mean and spread."""
    groups: dict = {}
    for r in records:
        groups.setdefault((str(r["model"]), r["config_hash"]), []).append(r)
    out = []
    for (model, chash), recs in sorted(groups.items()):
        recs = sorted(recs, key=lambda r: r["seed"])
        metrics = {}
        for m in sorted({m for r in recs for m in r["metrics"]}):
            vals = [r["metrics"][m]["value"] for r in recs if _ok(r, m)]
            if not vals:
                continue
            if len(vals) > 1:
                metrics[m] = (float(np.mean(vals)), float(np.std(vals, ddof=1)), len(vals))
            else:
                e = next(r["metrics"][m] for r in recs if _ok(r, m))
                metrics[m] = (float(vals[0]), e.get("uncertainty"), 1)
        out.append({"model": model, "config_hash": chash, "records": recs, "metrics": metrics})
    return out


def floors(records: list) -> dict:
    """metric -> (value, uncertainty, N, consistent) of the board's floor: the largest N recorded,
    the newest metric version and uncertainty version; ``consistent`` is False when records disagree
    on that floor."""
    seen: dict = {}
    for r in records:
        for m, e in r["metrics"].items():
            if "floor" in e and e.get("status") == "ok":
                key = (e.get("version", 1), e.get("floor_n", 0), e.get("uncertainty_version", 1))
                seen.setdefault(m, {}).setdefault(key, set()).add((e["floor"], e.get("floor_uncertainty")))
    out = {}
    for m, by_key in seen.items():
        key = max(by_key, key=lambda k: (k[1], k[0], k[2]))  # the largest N, newest version, newest ±
        vals = sorted(by_key[key], key=lambda x: (x[0], x[1] or 0))
        out[m] = (vals[0][0], vals[0][1], key[1], all(_same_floor(vals[0], v) for v in vals[1:]))
    return out


def _same_floor(a: tuple, b: tuple) -> bool:
    """Two recordings (value, uncertainty) of one floor agree when they differ only by floating-point
    noise (another summation order, another BLAS, an algebraically equal formula): value and
    uncertainty each by at most 1e-6 of the larger of the floor's value and its uncertainty."""
    (va, ua), (vb, ub) = (a[0], a[1] or 0.0), (b[0], b[1] or 0.0)
    tol = 1e-6 * max(abs(va), abs(vb), abs(ua), abs(ub))
    return abs(va - vb) <= tol and abs(ua - ub) <= tol


def table(records: list, references=(), gate: dict | None = None) -> pd.DataFrame:
    """The leaderboard of one dataset key as a DataFrame (floor row first, then published references);
    ``gate``: the dataset's sensitivity gate table (only metrics that pass it rank)."""
    grouped = rows(records)
    metric_names = sorted({m for g in grouped for m in g["metrics"]})
    proto = {}
    for r in records:
        for m, e in r["metrics"].items():
            proto.setdefault(m, e)
    for m in unranked(records, gate):
        proto[m] = {**proto[m], "ranked": False}
    ranks, counts = np.zeros(len(grouped)), np.zeros(len(grouped))
    for m in metric_names:
        e = proto[m]
        if e.get("ranked", True) is False:  # shown, never ranked (the board says why)
            continue
        have = [(i, g["metrics"][m][0]) for i, g in enumerate(grouped) if m in g["metrics"]]
        if e.get("target") is not None:
            keys = [abs(v - e["target"]) for _, v in have]
        else:
            keys = [-v if e.get("higher_is_better") else v for _, v in have]
        for (i, _), rk in zip(have, pd.Series(keys, dtype=float).rank(method="min").to_numpy()):
            ranks[i] += rk
            counts[i] += 1
    mean_rank = np.where(counts > 0, ranks / np.maximum(counts, 1), np.inf)
    fl = floors(records)
    header = {"rank": "", "model": "*floor (real vs real)*", "preset": "", "config": "", "plugin": "", "seeds": ""}
    for m in metric_names:
        if m in fl:
            v, u, n, consistent = fl[m]
            header[f"{m} {_arrow(proto[m])}"] = _fmt(v, u) + ("" if consistent else " (records disagree)")
        else:
            header[f"{m} {_arrow(proto[m])}"] = "n/a"
    with_physics = any(r.get("physics") for r in records)
    if with_physics:
        header["physics"] = ""
    header.update({"showers/s": "", "date": ""})
    table_rows = [header]
    for ref in references:
        row = {k: "" for k in header}
        row.update(rank="ref", model=f"*{ref.model}* ({'published floor' if ref.floor else 'published'})",
                   plugin=ref.source)
        for m in metric_names:
            v = ref.metrics.get(m)
            row[f"{m} {_arrow(proto[m])}"] = _fmt(*v) if v is not None else ""
        if ref.showers_per_s:
            row["showers/s"] = f"{ref.showers_per_s:,.0f} ({ref.device})"
        table_rows.append(row)
    order = sorted(range(len(grouped)), key=lambda i: (mean_rank[i], grouped[i]["model"], grouped[i]["config_hash"]))
    for pos, i in enumerate(order):
        g = grouped[i]
        last = max(g["records"], key=lambda r: r.get("date", ""))
        row = {"rank": str(pos + 1), "model": g["model"], "preset": last["preset"], "config": g["config_hash"][:8],
               "plugin": f"{last['model_plugin']['name']} {last['model_plugin']['version']}",
               "seeds": ",".join(str(r["seed"]) for r in g["records"])}
        for m in metric_names:
            if m in g["metrics"]:
                v, u, n = g["metrics"][m]
                row[f"{m} {_arrow(proto[m])}"] = _fmt(v, u)
            else:
                row[f"{m} {_arrow(proto[m])}"] = "n/a"
        if with_physics:
            row["physics"] = ", ".join(_physics(r) for r in g["records"])
        sps = [max(r.get("generation", {}).get("showers_per_s", {}).values() or [0]) for r in g["records"]]
        best = max(sps) if sps else 0
        row["showers/s"] = f"{best:,.0f} ({last['generation']['device']})" if best else "-"
        row["date"] = last.get("date", "")[:10]
        table_rows.append(row)
    return pd.DataFrame(table_rows)


def _boards(records: list) -> dict:
    """file stem -> records: one board per (dataset, dataset key); ``<dataset>`` when the dataset has
    one key on this folder, else ``<dataset>@<key hash>`` for each."""
    by_key: dict = {}
    for r in records:
        by_key.setdefault((r["dataset"], r.get("target_key") or r["dataset_key"]), []).append(r)
    keys_per_ds: dict = {}
    for ds, key in by_key:
        keys_per_ds.setdefault(ds, set()).add(key)
    out = {}
    for (ds, key), recs in by_key.items():
        stem = ds if len(keys_per_ds[ds]) == 1 else f"{ds}@{key.rsplit('-', 1)[-1]}"
        out[stem] = (ds, key, recs)
    return out


def render(folder, datasets=None, references=None) -> list:
    """Regenerate ``<folder>/<board>.md`` from the records (and the plugins' published references,
    ``references``: the registry's, by default); return the paths written."""
    folder = Path(folder)
    if references is None:
        from .plugins import get_plugins

        references = get_plugins().registry.references
    written = []
    for stem, (ds, key, recs) in sorted(_boards(load_records(folder)).items()):
        if datasets is not None and ds not in datasets:
            continue
        n_rows = len({(r["model"], r["config_hash"]) for r in recs})
        refs = references_for(references, ds)
        gate = read_gate(folder, ds)
        why_unranked = unranked(recs, gate)
        df = table(recs, refs, gate)
        fl = floors(recs)
        ns = sorted({v[2] for v in fl.values()})
        text = (f"# Leaderboard: `{ds}`\n\n"
                f"Dataset key `{key}`. Generated by `calobench leaderboard` from {len(recs)} record(s) "
                f"({n_rows} row(s)) in `records/`; do not edit.\n"
                "Rows are ranked by the mean of their per-metric ranks (→x: ranked by the distance to x). "
                "↓ lower is better, ↑ higher is better. One row per model and config hash: with several seeds, "
                "the mean ± the spread over seeds, else ± the metric's own uncertainty. The floor row is every "
                "metric on two independent real samples"
                + (f" of {', '.join(map(str, ns))} showers" if ns else "")
                + ", computed with one fixed seed: what a perfect generator scores."
                + (" physics: the dataset's physics acceptance checks passed / stated, per seed (the record's "
                   "`physics` section lists each with its value and target)." if any(r.get("physics") for r in recs)
                   else "")
                + (" *ref* rows: published results (their source in the plugin column), measured by the "
                   "publication's own protocol on the public files; shown for comparison, never ranked; "
                   "blank cells: not published." if refs else "")
                + (f" Only metrics that pass the sensitivity gate rank (`{GATE_DIR}/{ds}.md`: cells x 1.05, shifted "
                   "by one cell and decorrelated across showers each scored worse than the floor by more than "
                   "3 sigma)." if gate is not None else
                   f" No sensitivity gate table (`{GATE_DIR}/{ds}.json`) for this dataset: every metric ranks.")
                + "\n\n" + df.to_markdown(index=False) + "\n"
                + "".join(f"\n- `{m}` (unranked): {why}" for m, why in why_unranked.items())
                + ("\n" if why_unranked else ""))
        path = folder / f"{stem}.md"
        write_text(path, text)
        written.append(path)
    return written


def list_records(folders) -> list:
    """Every record under ``folders`` (run folders' record.json and boards' records/*.json), ranked or not."""
    out = []
    for folder in folders:
        folder = Path(folder)
        if not folder.exists():
            continue
        for p in sorted(set(folder.rglob("record.json")) | set(folder.rglob("records/*.json"))):
            try:
                r = json.loads(p.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(r, dict) and "metrics" in r:
                out.append((p, r))
    return out
