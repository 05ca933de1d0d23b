"""W1 of every shared physics observable, normalised by the real sample's spread."""
from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance

from calobench import Metric, MetricResult

from .common import bootstrap, condition_bins, feature_table, usable_columns


def normalised_w1(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    return float(wasserstein_distance(a, b) / scale)


class Wasserstein(Metric):
    """Mean over observables of W1(real, gen) / std(real); per observable and per condition bin in details."""

    name = "wasserstein"
    description = "mean W1 of physics observables / real spread"
    min_showers = 20

    def compute(self, real, generated, ctx):
        names, R = feature_table(real)
        _, G = feature_table(generated)
        cols = usable_columns(R)
        scale = R[:, cols].std(0)

        def mean_w1(ir, ig):
            return float(np.mean([normalised_w1(R[ir, c], G[ig, c], s) for c, s in zip(cols, scale)]))

        per_obs = {names[c]: normalised_w1(R[:, c], G[:, c], s) for c, s in zip(cols, scale)}
        value = float(np.mean(list(per_obs.values())))
        per_bin = {}
        for label, ir, ig in condition_bins(real, generated):
            if len(ir) >= 10 and len(ig) >= 10:
                per_bin[label] = mean_w1(ir, ig)
        unc = bootstrap(mean_w1, len(R), len(G), ctx.rng(1))
        return MetricResult(value, unc, {"per_observable": per_obs, "per_condition_bin": per_bin})
