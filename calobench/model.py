"""The Model interface and the Trainer that owns the training loop's chores.

Lifecycle of a model in a run (``calobench run``):

1. ``Model(dataset, config, device)``: ``config`` is the model's validated options as a dict
   (preset + ``Options`` defaults + ``--set``; ``self.options`` is the typed object). Build the
   networks into ``self.nets`` and their optimisers into ``self.optimizers`` here.
2. ``fit(train, trainer, validation)``: loop over ``trainer.steps(self, n)`` (one phase named
   "train"), or over several named phases ``trainer.phase("pretrain", n1)`` then
   ``trainer.phase("main", n2)``. Register anything else with a state dict (schedulers, EMA,
   best weights, GradScaler) with ``trainer.track(name, obj)`` before its first phase. On
   ``--resume`` the saved state (weights, optimisers, tracked objects, random generators) is
   restored when ``fit`` first enters a phase, so set-up code before it simply runs again;
   finished phases are then skipped whole, and the interrupted one continues at its next step.
   ``trainer.stop()`` (or a plain ``break``) ends a phase early; the checkpoint is still written.
3. ``sample(conditions)`` (task ``generate``) or ``refine(showers)`` (task ``refine``), called in
   blocks by the runner; ``inference_nets`` names the networks that generate (counted as the
   model's parameters, and the ones the fast paths touch).
4. Weights of ``nets`` are saved as safetensors; checkpoints load with
   ``torch.load(weights_only=True)``, so nothing is ever unpickled.
"""
from __future__ import annotations

import json
import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import Geometry, ShowerData
from .errors import CalobenchError
from .io import atomic_path
from .options import Options, RunSettings


@dataclass
class DatasetInfo:
    """What a model or metric may know about its dataset (and a lazy loader of its splits).

    ``conditions`` maps each condition name to its ``(low, high)`` range in the dataset's units;
    ``key`` identifies the dataset's content (simulator parameters and version, or file checksums)."""

    name: str
    geometry: Geometry
    conditions: dict  # name -> (low, high)
    splits: list = field(default_factory=list)
    counterpart: str | None = None
    loader: object = None  # callable(split) -> ShowerData
    key: str = ""

    def load(self, split: str) -> ShowerData:
        if self.loader is None:
            raise CalobenchError(f"dataset '{self.name}' has no loader here")
        return self.loader(split)


class Model:
    """Subclass, set the class attributes, implement ``__init__``/``fit``/``sample`` (or ``refine``).

    Attributes set by ``Model.__init__``: ``dataset`` (DatasetInfo), ``config`` (dict of the
    options), ``options`` (the typed ``Options``), ``device``, ``nets`` and ``optimizers``
    (empty dicts to fill), ``settings`` (the runner's ``RunSettings``; defaults outside a run).
    """

    name: str = ""
    task: str = "generate"  # or "refine"
    datasets: tuple = ()  # supported dataset names; empty: any dataset with a suitable geometry
    Options: type = Options  # the model's typed options (a subclass of calobench.Options)
    presets: dict = {"smoke": {}, "default": {}, "paper": {}}
    unranked_presets: tuple = ("smoke",)  # presets whose runs never reach a leaderboard
    inference_nets: tuple = ()  # the nets that generate (empty: every net)
    sample_with_grad: bool = False  # True: sample()/refine() run with autograd enabled
    # True: refine(showers, conditions) also receives the source showers' conditions (a simulation's
    # truth: its energy, say), as sample() does; False: refine(showers)
    refine_reads_conditions: bool = False
    description: str = ""
    distributed: bool = False  # True: fit() follows calobench.distributed's conventions (multi-process runs)
    dataset_views: dict = {}  # {dataset asked for: the dataset (a view of it) the model works on}

    def __init__(self, dataset: DatasetInfo, config: dict, device: torch.device):
        self.options = config if isinstance(config, Options) else self.Options(**(config or {}))
        self.dataset, self.config, self.device = dataset, self.options.model_dump(), device
        self.settings = RunSettings()
        self.nets: dict = {}
        self.optimizers: dict = {}

    # -- capability ----------------------------------------------------------
    @classmethod
    def supports(cls, dataset: DatasetInfo) -> str | None:
        """None if the model can run on ``dataset``, else the reason it cannot."""
        if cls.datasets and dataset.name not in cls.datasets:
            return f"model '{cls.name}' does not support dataset '{dataset.name}' (supports: {', '.join(cls.datasets)})"
        return None

    @classmethod
    def resolve(cls, preset: str, overrides: dict | None = None, dataset: str | None = None):
        """The validated (Options, RunSettings) of ``preset`` on ``dataset`` with ``overrides``;
        one-line errors. A preset may hold ``"per_dataset": {name: {...}}``: values that replace
        the preset's own on that dataset (a model that serves every geometry sizes itself per
        dataset in the open: the effective values are in the run's config and its hash)."""
        from .options import resolve

        if preset not in cls.presets:
            raise CalobenchError(f"model '{cls.name}' has no preset '{preset}' (presets: {', '.join(cls.presets)})")
        values = dict(cls.presets[preset])
        per_dataset = values.pop("per_dataset", {}) or {}
        return resolve(cls.Options, f"model '{cls.name}'",
                       {**values, **per_dataset.get(dataset, {}), **(overrides or {})})

    @classmethod
    def config_for(cls, preset: str, overrides: dict | None = None, dataset: str | None = None) -> dict:
        """The model's effective options of ``preset`` (on ``dataset``) with ``overrides``, as a dict."""
        return cls.resolve(preset, overrides, dataset)[0].model_dump()

    def warn_extrapolation(self, conditions: dict, names=None, describe=None) -> None:
        """Warn (once per model) when conditions leave the ranges the model was trained on: allowed,
        but it is extrapolation. ``describe(name)`` words the warning (default: "<name> outside the
        trained range")."""
        if getattr(self, "_warned_extrapolation", False):
            return
        for c in names or self.dataset.conditions:
            lo, hi = self.dataset.conditions[c]
            v = np.asarray(conditions[c])
            if v.size and (v.min() < lo - 1e-6 or v.max() > hi + 1e-6):
                what = describe(c) if describe else f"{c} outside the trained range"
                warnings.warn(f"{what} [{lo:.3g}, {hi:.3g}]: got [{v.min():.3g}, {v.max():.3g}]; "
                              "this is extrapolation", stacklevel=3)
                self._warned_extrapolation = True

    # -- the work ------------------------------------------------------------
    def fit(self, train: ShowerData, trainer: "Trainer", validation: ShowerData | None = None) -> None:
        raise NotImplementedError

    def sample(self, conditions: dict) -> np.ndarray:
        raise NotImplementedError(f"model '{self.name}' does not generate")

    def refine(self, showers: np.ndarray, conditions: dict | None = None) -> np.ndarray:
        """Source showers -> target-like showers; ``conditions`` (the source's) only when the class sets
        ``refine_reads_conditions``."""
        raise NotImplementedError(f"model '{self.name}' does not refine")

    def generate_batch(self, conditions: dict | None = None, showers: np.ndarray | None = None) -> np.ndarray:
        """One call of the task's entry point (used by the runner and the timing benchmark), under
        ``torch.inference_mode`` unless ``sample_with_grad``. The opt-in fast paths of
        ``self.settings`` (``generation_amp``, ``generation_compile``, ``channels_last``,
        ``cudnn_benchmark``; see ``calobench.options.RunSettings``) apply to ``inference_nets``.
        Compilation is for generation only: the WGAN-GP gradient penalty needs a double backward,
        which compiled graphs do not support."""
        amp = self.settings.generation_amp
        if not getattr(self, "_fast_paths_applied", False):
            self.apply_fast_paths()
        grad = torch.enable_grad() if self.sample_with_grad else torch.inference_mode()
        with grad, torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            if self.task != "refine":
                out = self.sample(conditions)
            elif self.refine_reads_conditions:
                if conditions is None:
                    raise CalobenchError(f"model '{self.name}' refines with the source showers' conditions: none given")
                out = self.refine(showers, conditions)
            else:
                out = self.refine(showers)
        if isinstance(out, torch.Tensor):
            out = out.detach().float().cpu().numpy()
        return np.asarray(out, dtype=np.float32)

    def generating_nets(self) -> dict:
        """The networks named by ``inference_nets`` (every net when it is empty)."""
        missing = [n for n in self.inference_nets if n not in self.nets]
        if missing:
            raise CalobenchError(f"model '{self.name}': inference_nets names unknown net(s) {missing}")
        return {n: self.nets[n] for n in (self.inference_nets or self.nets)}

    def apply_fast_paths(self) -> dict:
        """Apply the opt-in generation fast paths of the settings to the inference nets (once)."""
        self._fast_paths_applied = True
        s, done = self.settings, {}
        if s.cudnn_benchmark and self.device.type == "cuda":
            torch.backends.cudnn.benchmark = done["cudnn_benchmark"] = True
        if s.channels_last:
            for net in self.generating_nets().values():
                for m in net.modules():
                    if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                        m.to(memory_format=torch.channels_last)
                    elif isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
                        m.to(memory_format=torch.channels_last_3d)
            done["channels_last"] = True
        if s.generation_compile:
            for net in self.generating_nets().values():
                net.compile()  # in place: state_dict keys unchanged
            done["generation_compile"] = True
        return done

    # -- weights -------------------------------------------------------------
    def state_dict(self) -> dict:
        """Every net's tensors (parameters and buffers), keyed ``<net>.<tensor>``."""
        return {f"{n}.{k}": v for n, net in self.nets.items() for k, v in net.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        for n, net in self.nets.items():
            prefix = n + "."
            net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def training_state(self) -> dict:
        return {"weights": self.state_dict(), "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()}}

    def load_training_state(self, state: dict) -> None:
        self.load_state_dict(state["weights"])
        for n, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][n])

    def n_parameters(self) -> int:
        """Parameters of the networks that generate (critics, constrainers and the like excluded)."""
        return sum(p.numel() for net in self.generating_nets().values() for p in net.parameters())

    def save(self, path) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"model": self.name, "config": json.dumps(self.config)})

    def load(self, path) -> None:
        from safetensors.torch import load_file

        self.load_state_dict(load_file(str(path), device=str(self.device)))


class BestWeights:
    """Keeps a copy of a network's weights at its best score (lower is better with ``mode="min"``);
    give it to ``trainer.track`` so it survives a resume, and ``restore()`` it at the end of fit."""

    def __init__(self, net: torch.nn.Module, mode: str = "min"):
        if mode not in ("min", "max"):
            raise ValueError("mode must be 'min' or 'max'")
        self.net, self.sign = net, 1.0 if mode == "min" else -1.0
        self.score, self.step, self.weights = math.inf, -1, {}

    def update(self, score: float, step: int) -> bool:
        """Keep the weights if ``score`` is the best so far; True if it was."""
        if self.sign * score < self.sign * self.score or self.step < 0:
            self.score, self.step = float(score), int(step)
            self.weights = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            return True
        return False

    def restore(self) -> None:
        if self.weights:
            self.net.load_state_dict(self.weights)

    def state_dict(self) -> dict:
        return {"score": torch.tensor(self.score), "step": torch.tensor(self.step),
                "weights": {k: v.cpu() for k, v in self.weights.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.score, self.step = float(state["score"]), int(state["step"])
        dev = next(self.net.parameters()).device
        self.weights = {k: v.to(dev) for k, v in state["weights"].items()}


class Interrupted(KeyboardInterrupt):
    """Training was stopped by SIGINT/SIGTERM at a step boundary, after writing a checkpoint."""


class Trainer:
    """Runs the step loops of a model: phases, progress, checkpoints, resume, loss checks, signals.

    ``trainer.rng`` (numpy) and torch's global generator are the only randomness a model
    should use in ``fit``: both are saved in checkpoints, so a resumed run continues exactly
    where the interrupted one stopped. SIGINT/SIGTERM during a phase finish the current step,
    write a checkpoint and raise ``Interrupted``; a second signal stops at once.
    """

    FORMAT = 2

    def __init__(self, checkpoint: Path | None = None, resume: bool = False, seed: int = 0,
                 progress: bool = True, checkpoint_every: float = 120.0, log_every: int = 10, desc: str = "training",
                 stop_after: int | None = None):
        self.checkpoint, self.resume, self.progress, self.stop_after = checkpoint, resume, progress, stop_after
        self.checkpoint_every, self.log_every, self.desc = checkpoint_every, log_every, desc
        self.rng = np.random.default_rng(seed)
        self.history: list = []
        self.step = 0  # steps done over all phases
        self.phases: dict = {}  # phase name -> steps it ran (finished phases)
        self.last_checkpoint_step = 0
        self.resumed_from = 0
        self.wall_s = 0.0
        self.model: Model | None = None
        self._tracked: dict = {}
        self._restored = False
        self._saved_state = None  # the checkpoint read on resume, consumed phase by phase
        self._current = None  # (phase name, steps done in it) while a phase runs
        self._pending: dict = {}
        self._first_bad: dict = {}
        self._stop = False
        self._closed_early = None  # a phase left by `break`: saved once fit() returns normally
        self._signal = None

    # -- what a model calls ------------------------------------------------------
    def track(self, name: str, obj) -> None:
        """Save ``obj.state_dict()`` in checkpoints and restore it on resume (schedulers, EMA
        weights, best weights, GradScaler...). Call before the first phase."""
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise CalobenchError(f"trainer.track('{name}'): the object has no state_dict/load_state_dict")
        if self._restored:
            raise CalobenchError(f"trainer.track('{name}') after training started: track objects before the first phase")
        self._tracked[name] = obj

    def stop(self) -> None:
        """End the current phase after this step (early stopping); the checkpoint is written."""
        self._stop = True

    def log(self, **losses) -> None:
        """Note this step's losses. They are read (a host sync; averaged over processes in a
        distributed run) every ``log_every`` steps and before every checkpoint; a NaN/inf loss
        then stops the run with a clear error, before anything non-finite is saved."""
        self._pending = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in losses.items()}
        for k, v in self._pending.items():  # first non-finite step per loss, tracked on the device: no sync
            if isinstance(v, torch.Tensor):
                fb = self._first_bad.get(k)
                if fb is None:
                    fb = torch.full((), -1, dtype=torch.long, device=v.device)
                self._first_bad[k] = torch.where(~torch.isfinite(v).all() & (fb < 0), self.step, fb)
            elif not math.isfinite(float(v)) and self._first_bad.get(k, -1) < 0:
                self._first_bad[k] = self.step

    def steps(self, model: Model, total: int):
        """Yield the step indices still to do of a single phase named "train"."""
        self.bind(model)
        return self.phase("train", total)

    def phase(self, name: str, total: int):
        """Yield the step indices (0 .. total-1) still to do in phase ``name``, checkpointing as it goes."""
        if self.model is None:
            raise CalobenchError("trainer.phase(): no model bound (the runner binds it; or call trainer.bind(model))")
        total = int(total)
        if total < 0:
            raise CalobenchError(f"phase '{name}': negative step count {total}")
        return self._run_phase(name, total)

    def once(self, name: str, fn, log=None):
        """Run ``fn(generator)`` as phase ``name`` of one step (a calibration after training, say).
        ``generator`` is a ``torch.Generator`` seeded from ``trainer.rng``: a rerun with the same seed
        draws the same numbers, and a resumed run skips the phase once it is done (what it set lives in
        the model's nets, saved with the checkpoint). What ``fn`` returns is logged in the training
        history, through ``log`` (the result -> a dict of numbers) when given. Returns ``fn``'s
        result, or None when the phase was skipped on resume."""
        found = None
        for _ in self.phase(name, 1):
            found = fn(torch.Generator().manual_seed(int(self.rng.integers(2**31))))
            self.log(**(log(found) if log is not None else found))
        return found

    def bind(self, model: Model) -> None:
        if self.model is not None and self.model is not model:
            raise CalobenchError("this trainer is bound to another model")
        self.model = model

    # -- what the runner calls ---------------------------------------------------
    def finish(self) -> None:
        """After fit() returned normally: write the checkpoint of a phase left by ``break``."""
        self._flush_closed()

    # -- internals ---------------------------------------------------------------
    def _restore_once(self) -> None:
        if self._restored:
            return
        self._restored = True
        if self.resume and self.checkpoint is not None and self.checkpoint.exists():
            self._saved_state = self._load(self.model)
            self.resumed_from = self.step

    def _flush_closed(self) -> None:
        if self._closed_early is not None:
            name, done = self._closed_early
            self._closed_early = None
            self.phases[name] = done
            self._save(self.model)

    def _run_phase(self, name: str, total: int):
        from tqdm.auto import tqdm

        from . import distributed

        self._flush_closed()
        self._restore_once()
        if name in self.phases:
            if self._saved_state is not None and name in self._saved_state["phases_done"]:
                return  # finished before the interruption: skipped whole on resume
            raise CalobenchError(f"phase '{name}' entered twice: give every phase its own name")
        start = 0
        if self._saved_state is not None and self._saved_state["phase"] == name:
            start = int(self._saved_state["phase_step"])
        self._current, self._stop = (name, start), False
        if start == 0 and self.step == 0 and not (self.checkpoint is not None and self.checkpoint.exists()):
            self._save(self.model)  # a failure before the first periodic checkpoint still leaves one
        label = self.desc if name == "train" else f"{self.desc} [{name}]"
        bar = tqdm(total=total, initial=start, desc=label, unit="step",
                   disable=not self.progress or not distributed.is_main(), dynamic_ncols=True)
        last_save, t0 = time.monotonic(), time.perf_counter()
        old_handlers = self._install_signals()
        done = start
        try:
            for k in range(start, total):
                self._pending = {}
                try:
                    yield k
                except GeneratorExit:  # `break` (or an exception) in the loop body: saved only if fit() returns
                    self.wall_s += time.perf_counter() - t0
                    self._closed_early = (name, k + 1)
                    self.step += 1
                    self._current = None
                    raise
                done = k + 1
                self.step += 1
                self._current = (name, done)
                interrupted = self._signal is not None
                limit = self.stop_after is not None and self.step >= self.stop_after  # the same on every rank
                stop = self._stop or done == total
                save = stop or interrupted or limit or time.monotonic() - last_save > self.checkpoint_every
                if distributed.world_size() > 1:  # every rank takes the same decisions as rank 0
                    bits = distributed.broadcast_int(int(save) | int(interrupted) << 1)
                    save, interrupted = bool(bits & 1), bool(bits & 2)
                logged = k % self.log_every == 0 or done == total or stop
                if self._pending and (logged or save):
                    losses = self._read_pending()
                    if logged:
                        self.history.append({"phase": name, "step": self.step - 1, **losses})
                        bar.set_postfix({n: f"{v:.3g}" for n, v in list(losses.items())[:3]})
                bar.update(1)
                if stop:
                    self.phases[name] = done
                    self._current = None
                if save:
                    self.wall_s += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self._save(self.model)
                    last_save = time.monotonic()
                if interrupted:
                    sig = signal.Signals(self._signal).name if self._signal else "signal"
                    raise Interrupted(f"{sig} at step {done} of phase '{name}'; checkpoint written")
                if limit:
                    raise Interrupted(f"stopped after {self.step} steps as asked (stop_after_steps); "
                                      "checkpoint written")
                if stop:
                    break
            else:
                if total == 0 or done == total:
                    self.phases[name] = done
                    self._current = None
        finally:
            bar.close()
            self._restore_signals(old_handlers)

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        self._signal = None

        def handler(signum, frame):
            if self._signal is not None:  # a second signal: stop now, the last checkpoint stays
                raise KeyboardInterrupt
            self._signal = signum

        old = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                old[s] = signal.signal(s, handler)
            except (ValueError, OSError):
                pass
        return old

    def _restore_signals(self, old) -> None:
        for s, h in (old or {}).items():
            signal.signal(s, h)

    def _read_pending(self) -> dict:
        from . import distributed

        out = {}
        for k, v in self._pending.items():
            v = float(distributed.mean(v)) if isinstance(v, torch.Tensor) else float(v)
            first = int(self._first_bad.get(k, -1))
            if not math.isfinite(v) or first >= 0:
                raise CalobenchError(
                    f"loss '{k}' became non-finite at step {first if first >= 0 else self.step}; stopped "
                    f"(last checkpoint: step {self.last_checkpoint_step})"
                )
            out[k] = v
        return out

    def _save(self, model: Model) -> None:
        from . import distributed

        if self.checkpoint is None:
            return
        if not distributed.is_main():  # the states are identical on every rank: rank 0 writes them
            self.last_checkpoint_step = self.step
            return
        phase, phase_step = self._current or (None, 0)
        state = {
            "format": self.FORMAT,
            "step": self.step,
            "phase": phase or "",
            "phase_step": phase_step,
            "phases_done": json.dumps(self.phases),
            "model": model.training_state(),
            "tracked": {n: o.state_dict() for n, o in self._tracked.items()},
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            "history": json.dumps(self.history),
            "wall_s": self.wall_s,
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        with atomic_path(self.checkpoint) as tmp:
            torch.save(state, tmp)
        self.last_checkpoint_step = self.step

    def _load(self, model: Model) -> dict:
        try:
            state = torch.load(self.checkpoint, map_location=model.device, weights_only=True)
        except Exception as exc:
            raise CalobenchError(f"{self.checkpoint}: unreadable checkpoint ({type(exc).__name__})") from None
        if state.get("format") != self.FORMAT:
            raise CalobenchError(f"{self.checkpoint}: checkpoint of an older calobench (format "
                                 f"{state.get('format', 1)}); start the run again without --resume")
        try:
            model.load_training_state(state["model"])
            for n, obj in self._tracked.items():
                obj.load_state_dict(state["tracked"][n])
        except (KeyError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CalobenchError(f"{self.checkpoint}: does not fit this model's networks ({first[:200]})") from None
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.rng.bit_generator.state = json.loads(state["numpy_rng"])
        self.history = json.loads(state["history"])
        self.wall_s = float(state.get("wall_s", 0.0))
        self.step = self.last_checkpoint_step = int(state["step"])
        self.phases = json.loads(state["phases_done"])
        return {"phase": state["phase"] or None, "phase_step": int(state["phase_step"]),
                "phases_done": dict(self.phases)}
