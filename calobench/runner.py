"""One run: data -> fit -> sample -> score (with the floor) -> time -> record -> leaderboard."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__, distributed
from .catalog import Catalog, Dataset
from .data import ShowerData, read_hdf5, write_hdf5
from .errors import CalobenchError
from .io import write_json
from .metric import MetricContext
from .model import DatasetInfo, Trainer
from .plugins import get_plugins

STANDARD_SPLITS = ("train", "validation", "test", "reference")
TIMING_BATCHES = (1, 100, 10_000)
# Keys of a record that legitimately differ between two identical-seed runs.
VOLATILE = ("date", "train.wall_s", "generation.showers_per_s", "generation.wall_s", "run_dir", "git_revision")


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
    leaderboard: Path | None = Path("leaderboard")
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


# -- scoring -----------------------------------------------------------------
def score(metrics, real: ShowerData, generated: ShowerData, ctx: MetricContext, reference: ShowerData | None,
          log=print) -> dict:
    """Every metric on (real, generated) and, if ``reference`` is given, its floor (real vs reference)."""
    results = {}
    for m in metrics:
        entry = {"higher_is_better": m.higher_is_better, "status": "ok"}
        reason = m.applies_to(ctx.dataset)
        n = min(len(real), len(generated))
        if reason:
            entry.update(status="n/a", note=reason)
        elif n < m.min_showers:
            entry.update(status="skipped", note=f"needs at least {m.min_showers} showers, got {n}")
        else:
            t0 = time.perf_counter()
            try:
                r = m.compute(real, generated, ctx)
                entry.update(value=float(r.value), uncertainty=float(r.uncertainty), details=r.details)
                if reference is not None:
                    nf = min(len(real), len(reference), len(generated))
                    f = m.compute(real.head(nf), reference.head(nf), ctx)
                    entry.update(floor=float(f.value), floor_uncertainty=float(f.uncertainty), floor_n=nf)
            except CalobenchError as exc:
                entry.update(status="error", note=str(exc))
            except Exception as exc:  # a broken metric is reported, the run goes on
                entry.update(status="error", note=f"{type(exc).__name__}: {exc}")
            entry["seconds"] = round(time.perf_counter() - t0, 3)
        if entry["status"] != "ok":
            log(f"  metric {m.name}: {entry['status']} ({entry.get('note', '')})")
        results[m.name] = entry
    return results


# -- generation and timing ---------------------------------------------------
def generate(model, task_input: ShowerData, batch_size: int | None = None) -> ShowerData:
    """Run the model's task over ``task_input`` (conditions for generate, showers for refine), in
    blocks of ``batch_size`` (default: the config's ``generation_batch``, else 1000)."""
    batch_size = int(batch_size or model.config.get("generation_batch", 1000))
    if batch_size < 1:
        raise CalobenchError(f"generation_batch must be a positive integer, got {batch_size}")
    outs = []
    for block in task_input.chunks(batch_size):
        if model.task == "refine":
            out = model.generate_batch(showers=block.array())
        else:
            out = model.generate_batch(conditions=block.conditions)
        outs.append(np.asarray(out, dtype=np.float32))
    showers = np.concatenate(outs) if outs else np.zeros((0, *model.dataset.geometry.shape), np.float32)
    expected = tuple(model.dataset.geometry.shape)
    if tuple(showers.shape[1:]) != expected:
        raise CalobenchError(f"model '{model.name}' produced showers of shape {showers.shape[1:]}, expected {expected}")
    return ShowerData(showers, task_input.conditions, model.dataset.geometry)


def time_generation(model, task_input: ShowerData, batches=TIMING_BATCHES, reps: int = 10,
                    budget_s: float = 20.0) -> dict:
    """Median showers/s per batch size over up to ``reps`` repetitions after a warm-up."""
    out = {}
    for b in batches:
        idx = np.arange(b) % len(task_input)
        block = task_input.take(idx)
        kwargs = {"showers": block.array()} if model.task == "refine" else {"conditions": block.conditions}
        model.generate_batch(**kwargs)  # warm-up
        times, t_start = [], time.perf_counter()
        while len(times) < reps and (time.perf_counter() - t_start < budget_s or len(times) < 3):
            t0 = time.perf_counter()
            model.generate_batch(**kwargs)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out[str(b)] = round(b / float(np.median(times)), 2)
    return out


# -- provenance --------------------------------------------------------------
def git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    env = {
        "calobench": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "numpy": np.__version__,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu x{torch.get_num_threads()}"


# -- the run -----------------------------------------------------------------
def run(opts: RunOptions) -> dict:
    log = opts.log if os.environ.get("RANK", "0") == "0" else (lambda s: None)
    plugins = get_plugins()
    reg = plugins.registry
    catalog = Catalog(reg, opts.datasets_files)
    model_cls = reg.get("model", opts.model)
    ds_name = model_cls.dataset_views.get(opts.dataset, opts.dataset)
    ds = catalog.get(ds_name)
    if ds_name != opts.dataset:
        log(f"data: {model_cls.name} works on '{ds_name}', a view of '{opts.dataset}' ({ds.entry['description']})")
    metrics = select_metrics(reg, opts.metrics)
    device = resolve_device(opts.device)
    if distributed.launched() and not model_cls.distributed:
        raise CalobenchError(f"model '{model_cls.name}' does not support multi-process training")
    device = distributed.init(device)
    try:
        return _run(opts, plugins, catalog, model_cls, ds, metrics, device)
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


def _run(opts, plugins, catalog, model_cls, ds, metrics, device) -> dict:
    log = opts.log if distributed.is_main() else (lambda s: None)
    info = dataset_info(ds)
    reason = model_cls.supports(info)
    if reason:
        raise CalobenchError(reason)
    target_ds, board = _target(opts, catalog, model_cls, ds, info), ds.name
    if target_ds is not None and target_ds.name != ds.counterpart:  # scores against another target: own board
        board = f"{ds.name}_to_{target_ds.name}"
    config = model_cls.config_for(opts.preset, opts.overrides)

    run_dir = Path(opts.out) / f"{board}__{model_cls.name}__{opts.preset}__seed{opts.seed}"
    if run_dir.exists() and any(run_dir.iterdir()) and not opts.resume:
        raise CalobenchError(f"{run_dir} already exists; pass --resume to continue it or --out to start elsewhere")
    distributed.barrier()  # every rank has checked before rank 0 creates anything
    if not distributed.is_main():
        return _worker(opts, catalog, model_cls, ds, info, config, device, target_ds, run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CalobenchError(f"cannot create run folder {run_dir}: {exc.strerror or exc}") from None
    if not os.access(run_dir, os.W_OK):
        raise CalobenchError(f"run folder {run_dir} is not writable")
    for stale in run_dir.glob(".*.tmp"):  # temp files of a run killed mid-write; the real files are intact
        stale.unlink()
    write_json(run_dir / "config.json", {"model": model_cls.name, "dataset": ds.name, "preset": opts.preset,
                                         "seed": opts.seed, "config": config,
                                         **({"target": target_ds.name} if target_ds is not None else {})})

    log(f"data: preparing {ds.name} (cache {ds.split_path('train').parent})")
    ds.prepare(progress=opts.progress)
    train, test = ds.load("train"), ds.load("test")
    validation = ds.load("validation") if "validation" in ds.splits else None
    reference = ds.load("reference") if "reference" in ds.splits else None
    target_train = None
    if target_ds is not None:
        target_ds.prepare(progress=opts.progress)
        target_train = target_ds.load("train")

    _seed_everything(opts.seed)  # the same on every rank: they draw the same global batches
    world = distributed.world_size()
    model = model_cls(info, config, device)
    trainer = Trainer(checkpoint=run_dir / "checkpoint.pt", resume=opts.resume, seed=opts.seed,
                      progress=opts.progress, checkpoint_every=float(config.get("checkpoint_every_s", 120)),
                      log_every=int(config.get("log_every", 10)),
                      desc=f"training {model_cls.name}")
    log(f"model: {model_cls.name} ({opts.preset}), {model.n_parameters():,} parameters, device {device}")
    fit_kwargs = {"target": target_train} if target_train is not None else {}
    distributed.barrier()  # the data are prepared (by this rank) before the others read them
    model.fit(train, trainer, validation, **fit_kwargs)
    distributed.barrier()
    distributed.shutdown()  # what follows is rank 0's alone
    model.save(run_dir / "model.safetensors")

    # samples for the test split (and any extra evaluation splits)
    _seed_everything(opts.seed + 1)
    real = target_ds.load("test") if target_ds is not None else test
    if target_ds is not None and "reference" in target_ds.splits:
        reference = target_ds.load("reference")
    t0 = time.perf_counter()
    generated = generate(model, test)
    gen_wall = time.perf_counter() - t0
    check_finite(generated, f"showers generated by '{model_cls.name}'")
    write_hdf5(run_dir / "samples.h5", generated, {"model": model_cls.name, "dataset": ds.name, "split": "test"})

    ctx = MetricContext(dataset=info if target_ds is None else dataset_info(target_ds), seed=opts.seed,
                        device=str(device), source=info if target_ds is not None else None)
    log(f"metrics: {', '.join(m.name for m in metrics) or 'none'} on {len(generated)} showers (+ floor)")
    results = score(metrics, real, generated, ctx, reference, log=log)
    extra, extra_data = {}, {}
    if model_cls.task == "generate":
        for split in ds.splits:
            if split in STANDARD_SPLITS:
                continue
            split_real = ds.load(split)
            split_gen = generate(model, split_real)
            check_finite(split_gen, f"showers generated by '{model_cls.name}' for split {split}")
            write_hdf5(run_dir / f"samples_{split}.h5", split_gen, {"model": model_cls.name, "split": split})
            extra[split] = {"n": len(split_real), "metrics": score(metrics, split_real, split_gen, ctx, None, log=log)}
            extra_data[split] = (split_real, split_gen)

    throughput = {}
    if opts.timing:
        batches = tuple(config.get("timing_batches", TIMING_BATCHES))
        throughput = time_generation(model, test, batches)
    record = {
        "schema": 1,
        "kind": "run",
        "model": model_cls.name,
        "dataset": board,  # the leaderboard it belongs to: the source, or source_to_target for another target
        "dataset_key": ds.key,
        **({"source": ds.name, "target": target_ds.name, "target_key": target_ds.key} if target_ds is not None else {}),
        "task": model_cls.task,
        "preset": opts.preset,
        "seed": opts.seed,
        "config": config,
        "model_plugin": {"name": plugins.plugin_of("model", model_cls.name).name,
                         "version": plugins.plugin_of("model", model_cls.name).version},
        "plugins": plugins.versions(),
        "git_revision": git_revision(),
        "environment": environment(device),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "train": {"steps": trainer.step, "resumed_from": trainer.resumed_from, "wall_s": round(trainer.wall_s, 3),
                  "processes": world,
                  "n_train": len(train), "history": trainer.history},
        "generation": {"device": _device_label(device), "n_parameters": model.n_parameters(),
                       "showers_per_s": throughput, "wall_s": round(gen_wall, 3)},
        "n_test": len(generated),
        "metrics": results,
        "extra_splits": extra,
        "run_dir": str(run_dir),
    }
    if opts.plots:
        from .plots import run_plots

        record["plots"] = run_plots(plugins, ds, real, generated, run_dir, model, trainer.history, extra_data)
    write_json(run_dir / "record.json", record)
    if opts.leaderboard is not None:
        from .leaderboard import add_record

        record["leaderboard"] = [str(p) for p in add_record(opts.leaderboard, record)]
    return record


def _worker(opts, catalog, model_cls, ds, info, config, device, target_ds, run_dir) -> dict:
    """Ranks > 0 of a distributed run: wait for rank 0's data, train their shard, write nothing."""
    distributed.barrier()  # rank 0 prepares the data and the run folder
    train = ds.load("train")
    validation = ds.load("validation") if "validation" in ds.splits else None
    kwargs = {"target": target_ds.load("train")} if target_ds is not None else {}
    _seed_everything(opts.seed)
    model = model_cls(info, config, device)
    trainer = Trainer(checkpoint=run_dir / "checkpoint.pt", resume=opts.resume, seed=opts.seed, progress=False,
                      checkpoint_every=float(config.get("checkpoint_every_s", 120)),
                      log_every=int(config.get("log_every", 10)))
    model.fit(train, trainer, validation, **kwargs)
    distributed.barrier()
    return {"rank": distributed.rank()}


def evaluate(dataset: str, samples: Path, metrics=None, seed: int = 0, name: str | None = None,
             leaderboard: Path | None = None, out: Path | None = None, datasets_files=(), log=print) -> dict:
    """Score showers produced elsewhere against the dataset's test split (no plugin needed)."""
    plugins = get_plugins()
    reg = plugins.registry
    ds = Catalog(reg, datasets_files).get(dataset)
    ms = select_metrics(reg, metrics)
    gen = read_hdf5(samples, lazy=True)
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
    for c, (lo, hi) in ranges.items():
        v = gen.conditions[c]
        span = hi - lo
        if v.min() < lo - 0.05 * span or v.max() > hi + 0.05 * span:
            warnings.warn(f"condition '{c}' in {samples} spans [{v.min():.3g}, {v.max():.3g}], "
                          f"outside the dataset's [{lo:.3g}, {hi:.3g}]", stacklevel=2)
    ds.prepare()
    real = ds.load("test")
    reference = ds.load("reference") if "reference" in ds.splits else None
    ctx = MetricContext(dataset=dataset_info(ds), seed=seed)
    log(f"metrics: {', '.join(m.name for m in ms) or 'none'} on {len(gen)} showers vs {len(real)} real (+ floor)")
    results = score(ms, real, gen, ctx, reference, log=log)
    label = name or f"{Path(samples).stem} (external)"
    record = {
        "schema": 1, "kind": "evaluate", "model": label, "dataset": ds.name, "dataset_key": ds.key,
        "preset": "-", "seed": seed, "samples": str(samples), "task": "generate",
        "model_plugin": {"name": "external", "version": "-"}, "plugins": plugins.versions(),
        "git_revision": git_revision(), "environment": environment(torch.device("cpu")),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "generation": {"device": "-", "showers_per_s": {}}, "n_test": len(gen), "metrics": results,
    }
    if out is not None:
        write_json(Path(out), record)
    if name and leaderboard is not None:
        from .leaderboard import add_record

        record["leaderboard"] = [str(p) for p in add_record(leaderboard, record)]
    return record
