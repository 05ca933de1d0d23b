"""The Model interface and the Trainer that owns the training loop's chores.

A model builds its networks in ``__init__``, trains in ``fit`` by iterating
``trainer.steps(self, total)`` (progress bar, periodic atomic checkpoints, exact resume,
NaN/inf checks are the trainer's job) and generates with ``sample`` (task ``generate``:
conditions -> showers) or ``refine`` (task ``refine``: source showers -> target-like).
Weights are saved as safetensors; checkpoints load with ``torch.load(weights_only=True)``,
so nothing is ever unpickled.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import Geometry, ShowerData
from .errors import CalobenchError
from .io import atomic_path


@dataclass
class DatasetInfo:
    """What a model or metric may know about its dataset (and a lazy loader of its splits)."""

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

    ``nets`` (name -> nn.Module) and ``optimizers`` (name -> Optimizer) drive the default
    save/load/checkpoint behaviour; models without torch networks override
    ``state_dict``/``load_state_dict``.
    """

    name: str = ""
    task: str = "generate"  # or "refine"
    datasets: tuple = ()  # supported dataset names; empty: any dataset with a suitable geometry
    presets: dict = {"smoke": {}, "default": {}, "paper": {}}
    description: str = ""
    distributed: bool = False  # True: fit() follows calobench.distributed's conventions (multi-process runs)
    dataset_views: dict = {}  # {dataset asked for: the dataset (a view of it) the model works on}

    def __init__(self, dataset: DatasetInfo, config: dict, device: torch.device):
        self.dataset, self.config, self.device = dataset, dict(config), device
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
    def config_for(cls, preset: str, overrides: dict | None = None) -> dict:
        if preset not in cls.presets:
            raise CalobenchError(f"model '{cls.name}' has no preset '{preset}' (presets: {', '.join(cls.presets)})")
        return {**cls.presets[preset], **(overrides or {})}

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

    def refine(self, showers: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"model '{self.name}' does not refine")

    def generate_batch(self, conditions: dict | None = None, showers: np.ndarray | None = None) -> np.ndarray:
        """One call of the task's entry point (used by the runner and the timing benchmark).

        Opt-in fast paths (config keys, all off by default; each is measured in
        ``benchmarks/speed.py --set KEY=VALUE``): ``generation_amp: bf16`` (bfloat16 autocast),
        ``generation_compile: true`` (``torch.compile`` of every network, in place, so weights
        and checkpoints keep their names), ``channels_last: true`` (channels-last memory format
        for 2-D/3-D convolution weights), ``cudnn_benchmark: true`` (cuDNN autotuning; CUDA only).
        ``generation_batch: N`` sets how many showers the runner asks for per call (default
        1 000; on a CPU the best is the largest batch whose activations stay in cache, see
        ``benchmarks/speed.py --batches``).
        Compilation is for generation only: the WGAN-GP gradient penalty needs a double
        backward, which compiled graphs do not support."""
        amp = self.config.get("generation_amp")
        if amp not in (None, "bf16"):
            raise CalobenchError(f"generation_amp must be bf16 or absent, got {amp!r}")
        if not getattr(self, "_fast_paths_applied", False):
            self.apply_fast_paths()
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            out = self.refine(showers) if self.task == "refine" else self.sample(conditions)
        return np.asarray(out, dtype=np.float32)

    def apply_fast_paths(self) -> dict:
        """Apply the opt-in generation fast paths of the config to ``nets`` (once); returns what was applied."""
        self._fast_paths_applied = True
        done = {}
        if self.config.get("cudnn_benchmark") and self.device.type == "cuda":
            torch.backends.cudnn.benchmark = done["cudnn_benchmark"] = True
        if self.config.get("channels_last"):
            for net in self.nets.values():
                for m in net.modules():
                    w = getattr(m, "weight", None)
                    if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                        m.to(memory_format=torch.channels_last)
                    elif isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) and w is not None:
                        m.to(memory_format=torch.channels_last_3d)
            done["channels_last"] = True
        if self.config.get("generation_compile"):
            for net in self.nets.values():
                net.compile()  # in place: state_dict keys unchanged
            done["generation_compile"] = True
        return done

    # -- weights -------------------------------------------------------------
    def state_dict(self) -> dict:
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
        return sum(p.numel() for net in self.nets.values() for p in net.parameters())

    def save(self, path) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"model": self.name, "config": json.dumps(self.config)})

    def load(self, path) -> None:
        from safetensors.torch import load_file

        self.load_state_dict(load_file(str(path), device=str(self.device)))


class Trainer:
    """Runs the step loop for a model: progress, checkpoints, resume, loss checks.

    ``trainer.rng`` (numpy) and torch's global generator are the only randomness a model
    should use in ``fit``: both are saved in checkpoints, so a resumed run continues exactly
    where the interrupted one stopped.
    """

    def __init__(self, checkpoint: Path | None = None, resume: bool = False, seed: int = 0,
                 progress: bool = True, checkpoint_every: float = 120.0, log_every: int = 10, desc: str = "training"):
        self.checkpoint, self.resume, self.progress = checkpoint, resume, progress
        self.checkpoint_every, self.log_every, self.desc = checkpoint_every, log_every, desc
        self.rng = np.random.default_rng(seed)
        self.history: list = []
        self.step = 0
        self.last_checkpoint_step = 0
        self.resumed_from = 0
        self.wall_s = 0.0
        self._pending: dict = {}
        self._first_bad: dict = {}

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

    def steps(self, model: Model, total: int):
        """Yield the step indices still to do, checkpointing as it goes."""
        from tqdm.auto import tqdm

        from . import distributed

        start = 0
        if self.resume and self.checkpoint is not None and self.checkpoint.exists():
            start = self._load(model)
            self.resumed_from = start
        bar = tqdm(total=total, initial=start, desc=self.desc, unit="step",
                   disable=not self.progress or not distributed.is_main(), dynamic_ncols=True)
        last_save = time.monotonic()
        t0 = time.perf_counter()
        try:
            for step in range(start, total):
                self.step = step
                self._pending = {}
                yield step
                done = step + 1
                save = done == total or time.monotonic() - last_save > self.checkpoint_every
                if distributed.world_size() > 1:  # every rank takes the same decision as rank 0
                    save = distributed.broadcast_flag(save)
                if self._pending and (step % self.log_every == 0 or step == total - 1 or save):
                    losses = self._read_pending()
                    if step % self.log_every == 0 or step == total - 1:
                        self.history.append({"step": step, **losses})
                        bar.set_postfix({k: f"{v:.3g}" for k, v in list(losses.items())[:3]})
                bar.update(1)
                if save:
                    self.wall_s += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self._save(model, done)
                    last_save = time.monotonic()
        finally:
            bar.close()
        self.step = total

    def _save(self, model: Model, step: int) -> None:
        from . import distributed

        if self.checkpoint is None:
            return
        if not distributed.is_main():  # the states are identical on every rank: rank 0 writes them
            self.last_checkpoint_step = step
            return
        state = {
            "step": step,
            "model": model.training_state(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            "history": json.dumps(self.history),
            "wall_s": self.wall_s,
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        with atomic_path(self.checkpoint) as tmp:
            torch.save(state, tmp)
        self.last_checkpoint_step = step

    def _load(self, model: Model) -> int:
        try:
            state = torch.load(self.checkpoint, map_location=model.device, weights_only=True)
        except Exception as exc:
            raise CalobenchError(f"{self.checkpoint}: unreadable checkpoint ({type(exc).__name__})") from None
        model.load_training_state(state["model"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.rng.bit_generator.state = json.loads(state["numpy_rng"])
        self.history = json.loads(state["history"])
        self.wall_s = float(state.get("wall_s", 0.0))
        self.last_checkpoint_step = int(state["step"])
        return int(state["step"])
