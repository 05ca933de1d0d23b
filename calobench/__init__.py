"""calobench: train, score and compare generative simulators of detector showers."""
from __future__ import annotations

__version__ = "0.1.0"

from .checks import Check, CheckContext, CheckResult  # noqa: E402
from .data import Geometry, ShowerData, cache_dir, read_hdf5, write_hdf5  # noqa: E402
from .errors import CalobenchError  # noqa: E402
from .metric import Metric, MetricContext, MetricResult  # noqa: E402
from .api import get_metrics, get_model, list_datasets, load_dataset, load_run, registry, resolve_device  # noqa: E402
from .io import atomic_path  # noqa: E402
from .reference import Reference  # noqa: E402
from .model import BestWeights, DatasetInfo, Model, Trainer  # noqa: E402
from .options import Options, RunSettings  # noqa: E402
from .plots import Plot, PlotContext  # noqa: E402
from .plugins import hookimpl  # noqa: E402
from .simulator import Simulator  # noqa: E402

__all__ = [
    "BestWeights", "CalobenchError", "Check", "CheckContext", "CheckResult", "DatasetInfo", "Geometry", "Metric", "MetricContext", "MetricResult", "Model",
    "Options", "Plot", "PlotContext", "Reference", "RunSettings", "ShowerData", "Simulator", "Trainer", "atomic_path", "cache_dir", "hookimpl",
    "get_metrics", "get_model", "list_datasets", "load_dataset", "load_run", "read_hdf5", "registry", "resolve_device", "write_hdf5", "__version__",
]
