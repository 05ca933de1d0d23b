"""The public entry points for plugin authors and notebooks.

``load_dataset(name)``: a dataset of the catalog, its ``info`` (a DatasetInfo) and ``load(split)``.
``load_run(folder)``: a finished (or checkpointed) run folder: its config, record, samples and the
trained model, rebuilt from config.json and model.safetensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import CalobenchError


@dataclass
class LoadedDataset:
    name: str
    info: object  # DatasetInfo
    dataset: object  # catalog.Dataset

    def load(self, split: str, progress: bool = False):
        """The split as ShowerData (simulated into the cache or fetched first if needed; read lazily)."""
        return self.dataset.load(split, progress=progress)

    @property
    def splits(self) -> list:
        return self.dataset.splits


def load_dataset(name: str, datasets_files=()) -> LoadedDataset:
    from .catalog import Catalog
    from .plugins import get_plugins
    from .runner import dataset_info

    ds = Catalog(get_plugins().registry, datasets_files).get(name)
    return LoadedDataset(name, dataset_info(ds), ds)


@dataclass
class LoadedRun:
    folder: Path
    config: dict  # config.json: model, dataset, preset, seed, config_hash, options, runner
    record: dict | None  # record.json, None for a run that has not finished
    model: object  # the trained Model (weights from model.safetensors), or None before training finished

    def samples(self, split: str | None = None):
        """The generated showers of the test split (or of an extra split such as ``interp70``)."""
        from .data import read_hdf5

        return read_hdf5(self.folder / (f"samples_{split}.h5" if split else "samples.h5"))


def load_run(folder, device: str = "cpu", datasets_files=(), weights: bool = True) -> LoadedRun:
    """A run folder: its config, record, samples and (``weights``) the trained model. Weights written by
    code whose networks differ from the installed plugin's raise a one-line CalobenchError; pass
    ``weights=False`` to read the record and samples only."""
    from .io import read_json
    from .plugins import get_plugins

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise CalobenchError(f"{folder}: not a calobench run folder (no config.json)")
    config = read_json(folder / "config.json")
    if "options" not in config:
        raise CalobenchError(f"{folder}: run folder of an older calobench (no typed options in config.json)")
    record = read_json(folder / "record.json") if (folder / "record.json").exists() else None
    model = None
    if weights and (folder / "model.safetensors").exists():
        import torch

        from .options import RunSettings

        cls = get_plugins().registry.get("model", config["model"])
        info = load_dataset(config["dataset"], datasets_files).info
        model = cls(info, dict(config["options"]), torch.device(device))
        model.settings = RunSettings(**config.get("runner", {}))
        try:
            model.load(folder / "model.safetensors")
        except (RuntimeError, KeyError) as e:  # torch's state-dict mismatch: a newer or older network
            rev = (record or {}).get("code", {}).get("revision", "")[:7] or "unknown code"
            first = str(e).strip().splitlines()
            raise CalobenchError(f"{folder}: the weights (written by {rev}) do not fit the installed "
                                 f"{config['model']}: {' '.join(first[:2])[:200]}; load_run(..., weights=False) "
                                 "reads the record and samples only") from None
    return LoadedRun(folder, config, record, model)


def registry():
    """Everything the installed plugins registered: ``.models``, ``.metrics``, ``.plots``,
    ``.simulators``, ``.datasets``, ``.layouts`` (dicts by name), ``.owner``, ``.warnings``."""
    from .plugins import get_plugins

    return get_plugins().registry


def get_model(name: str):
    """The installed model class called ``name`` (one-line CalobenchError with close matches if none)."""
    return registry().get("model", name)


def get_metrics(names=None) -> list:
    """Instances of the installed metrics called ``names`` (all of them, sorted by name, if None)."""
    from .runner import select_metrics

    return select_metrics(registry(), list(names) if names is not None else None)


def resolve_device(name: str = "auto"):
    """``auto`` (CUDA when torch sees one), ``cpu`` or ``cuda[:i]`` as a torch.device."""
    from .runner import resolve_device as _resolve

    return _resolve(name)


def list_datasets(datasets_files=()) -> list:
    """Names of every dataset in the catalog (built-in YAML, plugins, ``datasets_files``)."""
    from .catalog import Catalog

    return list(Catalog(registry(), datasets_files).names())
