"""One run: config -> data -> fit -> sample -> score (with the floor) -> time -> record -> leaderboard.

Where things go: the run folder ``<out>/<board>__<model>__<preset>-<config hash>__seed<seed>/``
always receives config.json, checkpoint.pt, model.safetensors, samples*.h5, plots/, record.json
(and error.log when plugin code failed). A leaderboard folder is written only when one is named
(``--leaderboard DIR``), and never by a preset the model marks unranked (``smoke``).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import time
import warnings
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .catalog import Catalog, Dataset
from .data import H5Writer, ShowerData, read_hdf5
from .errors import CalobenchError, plugin_step
from .io import read_json, write_json
from .metric import MetricContext
from .model import DatasetInfo, Trainer
from .options import SPEED_ONLY, config_hash
from .plugins import get_plugins
from .provenance import device_label, code_state, environment
from .timing import time_calls

STANDARD_SPLITS = ("train", "validation", "test", "reference")
RECORD_SCHEMA = 2
FLOOR_SEED = 0  # every floor is computed with this seed: one floor per (dataset key, metric, version, N)
# Keys of a record that legitimately differ between two identical-seed runs.
VOLATILE = ("date", "train.wall_s", "generation.showers_per_s", "generation.timing_skipped", "generation.wall_s",
            "run_dir", "code", "environment", "runner")


@dataclass
class RunOptions:
    model: str
    dataset: str
    preset: str = "default"
    seed: int = 0
    device: str = "auto"
    metrics: list | None = None
    out: Path = Path("runs")
    resume: bool = False
    leaderboard: Path | None = None  # a board folder: only when the user names one
    progress: bool = True
    timing: bool = True
    plots: bool = True
    datasets_files: tuple = ()
    overrides: dict = field(default_factory=dict)
    target: str | None = None  # refine runs: the dataset to refine towards (default: the source's counterpart)
    log: object = print


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CalobenchError("--device cuda asked for, but torch sees no CUDA device (use --device cpu or auto)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise CalobenchError(f"unknown device '{name}' (use auto, cpu or cuda)")
    return torch.device(name)


def dataset_info(ds: Dataset) -> DatasetInfo:
    return DatasetInfo(name=ds.name, geometry=ds.geometry, conditions=ds.condition_ranges(), splits=ds.splits,
                       counterpart=ds.counterpart, loader=lambda split: ds.load(split), key=ds.key)


def select_metrics(registry, names):
    if names is None:
        return [registry.metrics[n]() for n in sorted(registry.metrics)]
    return [registry.get("metric", n)() for n in names]


def check_finite(data: ShowerData, what: str) -> None:
    for block in data.chunks():
        arr = block.array()
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise CalobenchError(f"{what} contain {bad} NaN/inf cell value(s) in one block; refusing to score them")
    for k, v in data.conditions.items():
        if not np.isfinite(v).all():
            raise CalobenchError(f"{what}: condition '{k}' contains NaN/inf")


# -- floors --------------------------------------------------------------------
def floor_key(dataset_key: str, metric, n: int, device: str, quick: bool = False) -> dict:
    return {"dataset_key": dataset_key, "real": "test", "reference": "reference", "metric": metric.name,
            "metric_version": int(getattr(metric, "version", 1)), "n": int(n), "seed": FLOOR_SEED,
            "device": torch.device(device).type, **({"quick": True} if quick else {}),
            **({"uncertainty_version": uv} if (uv := int(getattr(metric, "uncertainty_version", 1))) != 1 else {})}


def compute_floor(metric, real: ShowerData, reference: ShowerData, ctx: MetricContext, dataset_key: str,
                  n: int) -> dict:
    """The metric on the first ``n`` real test showers vs the first ``n`` reference showers, with the
    fixed floor seed; cached on disk per (dataset key, metric, metric version, N, device type)."""
    import hashlib
    import json

    from .data import cache_dir

    key = floor_key(dataset_key, metric, n, ctx.device, ctx.quick)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "floors" / f"{metric.name}-{digest}.json"
    if path.exists():
        with contextlib.suppress(CalobenchError):
            cached = read_json(path)
            if cached.get("key") == key:
                return cached["floor"]
    fctx = MetricContext(dataset=ctx.dataset, seed=FLOOR_SEED, device=ctx.device, source=ctx.source, quick=ctx.quick,
                         shared=ctx.shared)
    r = metric.compute(real.head(n), reference.head(n), fctx)
    out = {"value": float(r.value), "uncertainty": float(r.uncertainty), "n": int(n)}
    if np.isfinite(out["value"]):
        with contextlib.suppress(CalobenchError):
            write_json(path, {"key": key, "floor": out})
    return out


# -- scoring -----------------------------------------------------------------
def score(metrics, real: ShowerData, generated: ShowerData, ctx: MetricContext, reference: ShowerData | None,
          log=print, dataset_key: str = "", error_log: Path | None = None, results_out: dict | None = None) -> dict:
    """Every metric on (real, generated) and, if ``reference`` is given, its floor (real vs reference).

    Returns the record entries; ``results_out`` (if given) receives each successful metric's
    MetricResult, artifacts included, for the plots."""
    results = {}
    ctx = dataclasses.replace(ctx, shared={})  # one scratch space for this pair, another for the floors
    floor_ctx = dataclasses.replace(ctx, shared={})
    for m in metrics:
        entry = {"higher_is_better": m.higher_is_better, "status": "ok", "version": int(getattr(m, "version", 1))}
        if int(getattr(m, "uncertainty_version", 1)) != 1:
            entry["uncertainty_version"] = int(m.uncertainty_version)
        if getattr(m, "target", None) is not None:
            entry["target"] = float(m.target)
        if not getattr(m, "ranked", True):
            entry.update(ranked=False, unranked_reason=str(getattr(m, "unranked_reason", "") or "not ranked"))
        reason = m.applies_to(ctx.dataset)
        n = min(len(real), len(generated))
        if reason:
            entry.update(status="n/a", note=reason)
        elif n < m.min_showers:
            entry.update(status="skipped", note=f"needs at least {m.min_showers} showers, got {n}")
        else:
            t0 = time.perf_counter()
            try:
                with plugin_step(f"metric '{m.name}'", error_log):
                    r = m.compute(real, generated, ctx)
                    entry.update(value=float(r.value), uncertainty=float(r.uncertainty), details=r.details)
                    if not np.isfinite(entry["value"]):
                        raise CalobenchError(f"value is {entry['value']}")
                    if results_out is not None:
                        results_out[m.name] = r
                    if reference is not None:
                        nf = min(len(real), len(reference), len(generated))
                        f = compute_floor(m, real, reference, floor_ctx, dataset_key, nf)
                        entry.update(floor=f["value"], floor_uncertainty=f["uncertainty"], floor_n=f["n"])
            except CalobenchError as exc:
                entry.update(status="failed", note=str(exc))
                entry.pop("value", None)
            entry["seconds"] = round(time.perf_counter() - t0, 3)
        if entry["status"] != "ok":
            log(f"  metric {m.name}: {entry['status']} ({entry.get('note', '')})")
        results[m.name] = entry
    return results


def physics_checks(plugins, info, real, generated, extra, log=print, error_log=None, metric_results=None,
                   task: str = "generate") -> list:
    """The physics acceptance checks registered for this dataset, as the record's ``physics`` entries."""
    from .checks import CheckContext, run_checks, summary

    checks = [cls() for cls in plugins.registry.checks.values()]
    ctx = CheckContext(dataset=info, real=real, generated=generated, extra=dict(extra or {}),
                       metrics=dict(metric_results or {}))
    physics = run_checks(checks, ctx, step=lambda what: plugin_step(what, error_log),
                         warn=lambda msg: warnings.warn(msg, stacklevel=2), task=task)
    if physics:
        failing = [e["name"] for e in physics if not e["pass"]]
        log(f"physics checks: {summary(physics)} pass" + (f" (failing: {', '.join(failing)})" if failing else ""))
    return physics


# -- generation and timing ---------------------------------------------------
def generate(model, task_input: ShowerData, batch_size: int | None = None, path: Path | None = None,
             attrs: dict | None = None, progress: bool = False) -> ShowerData:
    """Run the model's task over ``task_input`` (conditions for generate, showers for refine), in
    blocks of ``batch_size`` (default: the runner's ``generation_batch``). With ``path`` every block
    is written to that HDF5 file as it comes (the file appears whole at the end) and the result is
    read lazily from it."""
    from tqdm.auto import tqdm

    batch_size = int(batch_size or model.settings.generation_batch)
    geometry, expected = model.dataset.geometry, tuple(model.dataset.geometry.shape)
    writer = H5Writer(path, len(task_input), geometry, list(task_input.conditions), attrs) if path else None
    outs = []
    bar = tqdm(total=len(task_input), desc=f"generating with {model.name}", unit="shower", disable=not progress,
               dynamic_ncols=True)
    ok = False
    try:
        for block in task_input.chunks(batch_size):
            with plugin_step(f"model '{model.name}': {'refine' if model.task == 'refine' else 'sample'}"):
                if model.task == "refine":
                    out = model.generate_batch(showers=block.array(), conditions=block.conditions)
                else:
                    out = model.generate_batch(conditions=block.conditions)
            if tuple(out.shape) != (len(block), *expected):
                raise CalobenchError(f"model '{model.name}' produced showers of shape {tuple(out.shape)} for "
                                     f"{len(block)} inputs, expected {(len(block), *expected)}")
            if not np.isfinite(out).all():
                raise CalobenchError(f"showers generated by '{model.name}' contain {int((~np.isfinite(out)).sum())} "
                                     "NaN/inf cell value(s); refusing to score them")
            if writer is not None:
                writer.append(ShowerData(out, block.conditions, geometry))
            else:
                outs.append(out)
            bar.update(len(block))
        ok = True
    finally:
        bar.close()
        if writer is not None:
            writer.close(ok=ok)
    if path is not None:
        return read_hdf5(path, lazy=True, geometry=geometry)
    showers = np.concatenate(outs) if outs else np.zeros((0, *expected), np.float32)
    return ShowerData(showers, task_input.conditions, geometry)


def time_generation(model, task_input: ShowerData, batches=None, reps: int = 10, budget_s: float | None = None):
    """Median showers/s per batch size over up to ``reps`` calls after a warm-up. A batch size is
    timed only if one call, projected from the previous size, fits ``budget_s``; the others are
    returned in the second dict with the reason."""
    batches = tuple(batches or model.settings.timing_batches)
    budget_s = float(budget_s or model.settings.timing_budget_s)
    out, skipped, per_shower = {}, {}, None
    for b in sorted(batches):
        if per_shower is not None and per_shower * b > budget_s:
            skipped[str(b)] = f"one call projected at {per_shower * b:.0f} s > timing budget {budget_s:.0f} s"
            continue
        idx = np.arange(b) % len(task_input)
        block = task_input.take(idx)
        kwargs = {"conditions": block.conditions}
        if model.task == "refine":
            kwargs["showers"] = block.array()
        t = time_calls(lambda: model.generate_batch(**kwargs), reps=reps, budget_s=budget_s, device=model.device)
        if t.median_s is None:
            skipped[str(b)] = f"the warm-up call alone took {t.warmup_s:.0f} s > timing budget {budget_s:.0f} s"
            per_shower = t.warmup_s / b
            continue
        per_shower = t.median_s / b
        out[str(b)] = round(1.0 / per_shower, 2)
    return out, skipped


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def check_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and make sure files can be written in it (before any work)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CalobenchError(f"cannot create {what} {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise CalobenchError(f"{what} {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CalobenchError(f"{what} {folder} is not writable")


# -- the run -----------------------------------------------------------------
def run(opts: RunOptions) -> dict:
    plugins = get_plugins()
    reg = plugins.registry
    catalog = Catalog(reg, opts.datasets_files)
    model_cls = reg.get("model", opts.model)
    ds_name = model_cls.dataset_views.get(opts.dataset, opts.dataset)
    options, settings = model_cls.resolve(opts.preset, opts.overrides, ds_name)  # before any data are touched
    ds = catalog.get(ds_name)
    metrics = select_metrics(reg, opts.metrics)
    device = resolve_device(opts.device)
    if distributed.launched() and not model_cls.distributed:
        raise CalobenchError(f"model '{model_cls.name}' does not support multi-process training")
    log = opts.log if os.environ.get("RANK", "0") == "0" else (lambda s: None)
    if ds_name != opts.dataset:
        log(f"data: {model_cls.name} works on '{ds_name}', a view of '{opts.dataset}' ({ds.entry['description']})")
    device = distributed.init(device)
    try:
        return _run(opts, plugins, catalog, model_cls, ds, metrics, device, options, settings)
    finally:
        distributed.shutdown()


def _target(opts, catalog, model_cls, ds, info):
    """The dataset a refine run refines towards: ``--target``, else the source's declared counterpart."""
    if model_cls.task != "refine":
        if opts.target:
            raise CalobenchError(f"--target is for refine models; '{model_cls.name}' generates")
        return None
    name = opts.target or ds.counterpart
    if not name:
        raise CalobenchError(f"dataset '{ds.name}' declares no counterpart to refine towards; name one with --target")
    target = catalog.get(name)
    shape = tuple(dataset_info(target).geometry.shape)
    if shape != tuple(info.geometry.shape):
        raise CalobenchError(f"target '{name}' has showers of shape {shape}, the source '{ds.name}' "
                             f"{tuple(info.geometry.shape)}: a refiner maps one onto the other")
    return target


def run_folder(out: Path, board: str, model: str, preset: str, chash: str, seed: int) -> Path:
    return Path(out) / f"{board}__{model}__{preset}-{chash[:8]}__seed{seed}"


def _config_diff(old: dict, new: dict) -> list:
    """The option and (result-affecting) runner keys whose values differ between two config.json."""
    o, n = old.get("options", {}), new.get("options", {})
    diff = [f"{k} ({o.get(k)!r} -> {n.get(k)!r})" for k in sorted(set(o) | set(n)) if o.get(k) != n.get(k)]
    o, n = old.get("runner", {}), new.get("runner", {})
    diff += [f"{k} ({o.get(k)!r} -> {n.get(k)!r})" for k in sorted(set(o) | set(n))
             if k not in SPEED_ONLY and o.get(k) != n.get(k)]
    if old.get("model") != new.get("model"):
        diff.insert(0, f"model ({old.get('model')!r} -> {new.get('model')!r})")
    return diff


def _check_run_folder(run_dir: Path, resume: bool, stored_config: dict) -> None:
    """Refuse, before anything is written, a run that would clobber or mix with another."""
    ckpt, record, cfg = run_dir / "checkpoint.pt", run_dir / "record.json", run_dir / "config.json"
    if not resume:
        if record.exists():
            raise CalobenchError(f"{run_dir} holds a finished run; pass --resume to score it again, or choose "
                                 "another --out or --seed")
        if ckpt.exists():
            raise CalobenchError(f"{run_dir} holds a checkpoint of this run; pass --resume to continue it, or "
                                 "remove the folder to start again")
        return
    if not ckpt.exists():
        prefix, seed = run_dir.name.rsplit("-", 1)[0], run_dir.name.rsplit("__seed", 1)[1]
        for other in sorted(run_dir.parent.glob(f"{prefix}-*__seed{seed}")):
            if other != run_dir and (other / "checkpoint.pt").exists() and (other / "config.json").exists():
                diff = _config_diff(read_json(other / "config.json"), stored_config)
                raise CalobenchError(f"--resume: the checkpoint in {other} was trained with another configuration "
                                     f"({'; '.join(diff)}); resume with its settings or start a new run")
        return  # killed before its first checkpoint: it starts from step 0
    if cfg.exists():
        diff = _config_diff(read_json(cfg), stored_config)
        if diff:
            raise CalobenchError(f"--resume: the configuration differs from the checkpoint's in {'; '.join(diff)}; "
                                 "resume with the original settings or start a new run")


def _run(opts, plugins, catalog, model_cls, ds, metrics, device, options, settings) -> dict:
    log = opts.log if distributed.is_main() else (lambda s: None)
    info = dataset_info(ds)
    reason = model_cls.supports(info)
    if reason:
        raise CalobenchError(reason)
    target_ds, board = _target(opts, catalog, model_cls, ds, info), ds.name
    if target_ds is not None and target_ds.name != ds.counterpart:  # scores against another target: own board
        board = f"{ds.name}_to_{target_ds.name}"
    opts_dict, settings_dict = options.model_dump(mode="json"), settings.model_dump(mode="json")
    chash = config_hash(model_cls.name, opts_dict, settings_dict)
    ranked = opts.preset not in model_cls.unranked_presets
    code = code_state()  # the code this run starts with
    stored = {"model": model_cls.name, "dataset": ds.name, "preset": opts.preset, "seed": opts.seed, "code": code,
              "config_hash": chash, "options": opts_dict, "runner": settings_dict,
              **({"target": target_ds.name} if target_ds is not None else {})}
    run_dir = run_folder(opts.out, board, model_cls.name, opts.preset, chash, opts.seed)
    if distributed.is_main():
        _check_run_folder(run_dir, opts.resume, stored)
        check_writable(run_dir, "run folder")
        if opts.leaderboard is not None and ranked:
            check_writable(opts.leaderboard, "leaderboard folder")
    distributed.barrier()  # every rank has checked before rank 0 writes anything
    if not distributed.is_main():
        return _worker(opts, model_cls, ds, info, options, settings, device, target_ds, run_dir)
    from .io import remove_stale_temps

    for folder in (run_dir, run_dir / "plots"):
        remove_stale_temps(folder)  # temp files of a run killed mid-write; the real files are intact
    write_json(run_dir / "config.json", stored)
    error_log = run_dir / "error.log"
    plugin = plugins.plugin_of("model", model_cls.name)

    log(f"data: preparing {ds.name} (cache {ds.split_path('train').parent})")
    ds.prepare(progress=opts.progress, error_log=error_log)
    train, test = ds.load("train"), ds.load("test")
    validation = ds.load("validation") if "validation" in ds.splits else None
    reference = ds.load("reference") if "reference" in ds.splits else None
    target_train = None
    if target_ds is not None:
        target_ds.prepare(progress=opts.progress, error_log=error_log)
        target_train = target_ds.load("train")

    _seed_everything(opts.seed)  # the same on every rank: they draw the same global batches
    world = distributed.world_size()
    what = f"model '{model_cls.name}' (plugin {plugin.name})"
    with plugin_step(f"{what} __init__", error_log):
        model = model_cls(info, options.model_dump(), device)
    model.settings = settings
    trainer = Trainer(checkpoint=run_dir / "checkpoint.pt", resume=opts.resume, seed=opts.seed,
                      progress=opts.progress, checkpoint_every=settings.checkpoint_every_s,
                      log_every=settings.log_every, desc=f"training {model_cls.name}",
                      stop_after=settings.stop_after_steps)
    trainer.bind(model)
    log(f"model: {model_cls.name} ({opts.preset}, config {chash}), {model.n_parameters():,} generation "
        f"parameters, device {device}")
    if not ranked:
        log(f"preset '{opts.preset}' is not for leaderboards: the record stays in the run folder")
    fit_kwargs = {"target": target_train} if target_train is not None else {}
    distributed.barrier()  # the data are prepared (by this rank) before the others read them
    with _fit_step(what, error_log, trainer):
        model.fit(train, trainer, validation, **fit_kwargs)
        trainer.finish()
    distributed.barrier()
    distributed.shutdown()  # what follows is rank 0's alone
    model.save(run_dir / "model.safetensors")
    return _evaluate_run(opts, plugins, model_cls, model, ds, info, target_ds, board, test, reference, metrics,
                         device, trainer, train, run_dir, stored, ranked, error_log, world)


@contextlib.contextmanager
def _fit_step(what, error_log, trainer):
    def hint():
        return f" (last checkpoint: step {trainer.last_checkpoint_step}; rerun with --resume)"

    try:
        with plugin_step(f"{what} fit", error_log):
            yield
    except CalobenchError as exc:
        raise CalobenchError(str(exc) + ("" if "--resume" in str(exc) else hint())) from None


def _evaluate_run(opts, plugins, model_cls, model, ds, info, target_ds, board, test, reference, metrics, device,
                  trainer, train, run_dir, stored, ranked, error_log, world) -> dict:
    log = opts.log
    settings = model.settings
    _seed_everything(opts.seed + 1)
    real = target_ds.load("test") if target_ds is not None else test
    if target_ds is not None and "reference" in target_ds.splits:
        reference = target_ds.load("reference")
    task_input = test
    if settings.n_eval:
        task_input, real = test.head(min(settings.n_eval, len(test))), real.head(min(settings.n_eval, len(real)))
    t0 = time.perf_counter()
    generated = generate(model, task_input, path=run_dir / "samples.h5", progress=opts.progress,
                         attrs={"model": model_cls.name, "dataset": ds.name, "split": "test"})
    gen_wall = time.perf_counter() - t0

    scored_ds = target_ds or ds
    ctx = MetricContext(dataset=info if target_ds is None else dataset_info(target_ds), seed=opts.seed,
                        device=str(device), source=info if target_ds is not None else None,
                        quick=not ranked)
    log(f"metrics: {', '.join(m.name for m in metrics) or 'none'} on {len(generated)} showers (+ floor)")
    metric_results = {}
    results = score(metrics, real, generated, ctx, reference, log=log, dataset_key=scored_ds.key,
                    error_log=error_log, results_out=metric_results)
    extra, extra_data = {}, {}
    if model_cls.task == "generate":
        for split in ds.splits:
            if split in STANDARD_SPLITS:
                continue
            split_real = ds.load(split)
            if settings.n_eval:
                split_real = split_real.head(min(settings.n_eval, len(split_real)))
            split_gen = generate(model, split_real, path=run_dir / f"samples_{split}.h5",
                                 attrs={"model": model_cls.name, "split": split})
            extra[split] = {"n": len(split_real), "metrics": score(metrics, split_real, split_gen, ctx, None, log=log,
                                                                   error_log=error_log)}
            extra_data[split] = (split_real, split_gen)

    physics = physics_checks(plugins, ctx.dataset, real, generated, extra_data, log, error_log, metric_results,
                             model_cls.task)
    throughput, skipped = {}, {}
    if opts.timing:
        throughput, skipped = time_generation(model, test)
    record = {
        "schema": RECORD_SCHEMA,
        "kind": "run",
        "identity": {"dataset_key": ds.key, "model": model_cls.name, "config_hash": stored["config_hash"],
                     "seed": opts.seed},
        "model": model_cls.name,
        "dataset": board,  # the leaderboard it belongs to: the source, or source_to_target for another target
        "dataset_key": ds.key,
        **({"source": ds.name, "target": target_ds.name, "target_key": target_ds.key} if target_ds is not None else {}),
        "task": model_cls.task,
        "preset": opts.preset,
        "ranked": ranked,
        "seed": opts.seed,
        "config_hash": stored["config_hash"],
        "config": stored["options"],
        "runner": stored["runner"],
        "floor_seed": FLOOR_SEED,
        "model_plugin": {"name": plugins.plugin_of("model", model_cls.name).name,
                         "version": plugins.plugin_of("model", model_cls.name).version},
        "plugins": plugins.versions(),
        "code": stored["code"],
        "environment": environment(device),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "train": {"steps": trainer.step, "phases": trainer.phases, "resumed_from": trainer.resumed_from,
                  "wall_s": round(trainer.wall_s, 3), "processes": world, "n_train": len(train),
                  "history": trainer.history},
        "generation": {"device": device_label(device), "n_parameters": model.n_parameters(),
                       "inference_nets": sorted(model.generating_nets()),
                       "network_evaluations_per_shower": getattr(model, "network_evaluations_per_shower", 1),
                       "showers_per_s": throughput, "timing_skipped": skipped, "wall_s": round(gen_wall, 3)},
        "n_test": len(generated),
        "metrics": results,
        "extra_splits": extra,
        "physics": physics,
        "run_dir": str(run_dir),
    }
    if opts.plots:
        from .plots import PlotContext, run_plots

        pctx = PlotContext(dataset=ctx.dataset, real=real, generated=generated, outdir=run_dir / "plots", model=model,
                           history=trainer.history, extra=extra_data, metrics=metric_results)
        plots = [cls() for cls in plugins.registry.plots.values()]
        record["plots"] = run_plots(plots, pctx, model_cls.task, step=lambda what: plugin_step(what, error_log),
                                    warn=lambda msg: warnings.warn(msg, stacklevel=2))
    write_json(run_dir / "record.json", record)
    if opts.leaderboard is not None and ranked:
        from .leaderboard import add_record

        record["leaderboard"] = [str(p) for p in add_record(opts.leaderboard, record)]
    return record


def _worker(opts, model_cls, ds, info, options, settings, device, target_ds, run_dir) -> dict:
    """Ranks > 0 of a distributed run: wait for rank 0's data, train their shard, write nothing."""
    distributed.barrier()  # rank 0 prepares the data and the run folder
    train = ds.load("train")
    validation = ds.load("validation") if "validation" in ds.splits else None
    kwargs = {"target": target_ds.load("train")} if target_ds is not None else {}
    _seed_everything(opts.seed)
    model = model_cls(info, options.model_dump(), device)
    model.settings = settings
    trainer = Trainer(checkpoint=run_dir / "checkpoint.pt", resume=opts.resume, seed=opts.seed, progress=False,
                      checkpoint_every=settings.checkpoint_every_s, log_every=settings.log_every,
                      stop_after=settings.stop_after_steps)
    trainer.bind(model)
    model.fit(train, trainer, validation, **kwargs)
    trainer.finish()
    distributed.barrier()
    return {"rank": distributed.rank()}


def read_samples(ds, path: Path) -> ShowerData:
    """A samples file, read whole: the calobench layout when it has ``/conditions``, else the dataset's
    own file layout, else any registered layout whose reader accepts it with the dataset's geometry."""
    from .data import _open

    with _open(path) as f:
        calobench_layout = "showers" in f and "conditions" in f
    if calobench_layout:
        return read_hdf5(path, lazy=False)
    layouts = ds.registry.layouts
    own = ds.entry.get("layout")
    order = ([own] if own and own != "calobench" else []) + sorted(n for n in layouts if n not in (own, "calobench"))
    shape = tuple(ds.geometry.shape)
    for name in order:
        try:
            data = layouts[name](path)
        except (CalobenchError, OSError, KeyError, ValueError, TypeError) as exc:
            if name == own:
                raise CalobenchError(str(exc)) if isinstance(exc, CalobenchError) else \
                    CalobenchError(f"{path}: not readable as a '{own}' file: {exc}") from None
            continue
        if tuple(data.showers.shape[1:]) == shape:
            return data.load()
        if name == own:
            raise CalobenchError(f"{path}: showers have shape {tuple(data.showers.shape[1:])}, dataset "
                                 f"'{ds.name}' expects {shape}")
    return read_hdf5(path, lazy=False)  # its error says what a calobench-layout file needs


def evaluate(dataset: str, samples: Path, metrics=None, seed: int = 0, name: str | None = None,
             leaderboard: Path | None = None, out: Path | None = None, datasets_files=(), log=print,
             device: str = "cpu") -> dict:
    """Score showers produced elsewhere against the dataset's test split (no plugin needed).

    ``samples`` is a calobench-layout HDF5 file: ``/showers`` float32 [N, *shape] of the dataset's
    geometry, non-negative, and ``/conditions/<name>`` for every condition of the dataset; or a file
    in the dataset's own layout (e.g. a CaloChallenge file for a CaloChallenge dataset). N may
    differ from the test split's size (each metric uses the showers it needs). The file is read
    whole and checked before any metric runs."""
    import hashlib

    plugins = get_plugins()
    reg = plugins.registry
    ds = Catalog(reg, datasets_files).get(dataset)
    ms = select_metrics(reg, metrics)
    if out is not None:
        check_writable(Path(out).parent, "output folder")
    if name and leaderboard is not None:
        check_writable(leaderboard, "leaderboard folder")
    gen = read_samples(ds, Path(samples))
    geom = ds.geometry
    if tuple(gen.showers.shape[1:]) != tuple(geom.shape):
        raise CalobenchError(f"{samples}: showers have shape {tuple(gen.showers.shape[1:])}, "
                             f"dataset '{ds.name}' expects {tuple(geom.shape)}")
    ranges = ds.condition_ranges()
    missing = [c for c in ranges if c not in gen.conditions]
    if missing:
        raise CalobenchError(f"{samples}: missing condition(s) {', '.join(missing)} (dataset '{ds.name}' has "
                             f"{', '.join(ranges)})")
    if len(gen) == 0:
        raise CalobenchError(f"{samples}: contains no showers")
    gen = ShowerData(gen.array(), gen.conditions, geom)
    check_finite(gen, f"{samples}: showers")
    if float(gen.array().min()) < 0:
        raise CalobenchError(f"{samples}: showers contain negative energies (min {float(gen.array().min()):.4g}); "
                             "cell energies must be >= 0")
    for c, (lo, hi) in ranges.items():
        v = gen.conditions[c]
        span = hi - lo
        if v.min() < lo - 0.05 * span or v.max() > hi + 0.05 * span:
            warnings.warn(f"condition '{c}' in {samples} spans [{v.min():.3g}, {v.max():.3g}], "
                          f"outside the dataset's [{lo:.3g}, {hi:.3g}]", stacklevel=2)
    ds.prepare()
    real = ds.load("test")
    reference = ds.load("reference") if "reference" in ds.splits else None
    dev = resolve_device(device)
    ctx = MetricContext(dataset=dataset_info(ds), seed=seed, device=dev.type if dev.index is None else str(dev))
    log(f"metrics: {', '.join(m.name for m in ms) or 'none'} on {len(gen)} showers vs {len(real)} real (+ floor)")
    metric_results = {}
    results = score(ms, real, gen, ctx, reference, log=log, dataset_key=ds.key, results_out=metric_results)
    physics = physics_checks(plugins, ctx.dataset, real, gen, {}, log, metric_results=metric_results)
    label = name or f"{Path(samples).stem} (external)"
    digest = hashlib.sha256(Path(samples).read_bytes()).hexdigest()
    record = {
        "schema": RECORD_SCHEMA, "kind": "evaluate",
        "identity": {"dataset_key": ds.key, "model": label, "config_hash": digest[:12], "seed": seed},
        "model": label, "dataset": ds.name, "dataset_key": ds.key, "ranked": True,
        "preset": "-", "seed": seed, "samples": str(samples), "samples_sha256": digest, "config_hash": digest[:12],
        "config": {}, "floor_seed": FLOOR_SEED, "task": "generate",
        "model_plugin": {"name": "external", "version": "-"}, "plugins": plugins.versions(),
        "code": code_state(), "environment": environment(torch.device("cpu")),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "generation": {"device": "-", "showers_per_s": {}}, "n_test": len(gen), "metrics": results,
        "physics": physics,
    }
    if out is not None:
        write_json(Path(out), record)
    if name and leaderboard is not None:
        from .leaderboard import add_record

        record["leaderboard"] = [str(p) for p in add_record(leaderboard, record)]
    return record
