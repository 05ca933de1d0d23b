"""The Metric interface: ``compute(real, generated, ctx) -> MetricResult`` with an uncertainty."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data import ShowerData
from .model import DatasetInfo


@dataclass
class MetricResult:
    """``details`` go into the record (JSON); ``artifacts`` stay in memory for this run's plots
    (e.g. per-shower predictions), handed to them as ``PlotContext.metrics[name].artifacts``."""

    value: float
    uncertainty: float = 0.0
    details: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"value": self.value, "uncertainty": self.uncertainty, "details": self.details}


@dataclass
class MetricContext:
    """What a metric may use besides the two samples: the dataset (to train a network on
    its train split), a seed for every random choice, the device, and for refine tasks the
    source dataset. ``quick`` is true for unranked (smoke) runs: a metric may then use its
    cheapest settings, as long as every code path still runs. ``shared`` is a fresh dict per
    (real, generated) pair scored: a computation several metrics need is done once and kept there."""

    dataset: DatasetInfo
    seed: int = 0
    device: str = "cpu"
    source: DatasetInfo | None = None  # refine tasks: the dataset the refined showers came from
    quick: bool = False  # a smoke run: use the cheapest settings that still exercise the code
    # scratch space shared by the metrics scoring one (real, generated) pair in one call of the
    # runner's score(): several metrics may reuse one expensive computation through it
    shared: dict = field(default_factory=dict, repr=False)

    def rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])


class Metric:
    """Subclass, set ``name``/``higher_is_better``; implement ``compute``.

    ``applies_to`` returns None or the reason the metric does not apply (the leaderboard
    shows n/a). ``min_showers`` is the smallest sample the metric can say anything about;
    below it the runner skips the metric with a note instead of failing the run.
    ``version``: bump it whenever the definition changes (floors and boards keep versions apart);
    ``uncertainty_version``: bump it when only the ± changes (cached floors are recomputed, records
    carry it, the value stays comparable across it).
    ``target``: the ideal value when it is neither the smallest nor the largest (e.g. a ratio
    whose ideal is 1); rows are then ranked by the distance to it.
    A NaN/inf value is recorded as a failed metric.
    ``ranked = False`` keeps a metric in records but out of board ranks (a diagnostic that can
    mislead, e.g. one that scores a distortion below the floor); ``unranked_reason`` says why
    (the board prints it).
    """

    name: str = ""
    higher_is_better: bool = False
    version: int = 1
    uncertainty_version: int = 1
    target: float | None = None
    min_showers: int = 2
    description: str = ""
    ranked: bool = True
    unranked_reason: str = ""

    def applies_to(self, dataset: DatasetInfo) -> str | None:
        return None

    def compute(self, real: ShowerData, generated: ShowerData, ctx: MetricContext) -> MetricResult:
        raise NotImplementedError

    @property
    def arrow(self) -> str:
        if self.target is not None:
            return f"→{self.target:g}"
        return "↑" if self.higher_is_better else "↓"
