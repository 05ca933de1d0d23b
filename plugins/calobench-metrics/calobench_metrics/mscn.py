"""MSCN coefficients (3DGAN): per shower, I* = (I - mu)/(sigma + 1e-7) over its non-zero
cells only; histograms of all coefficients (100 bins in [-7, 5]) for real and generated
compared with the Jensen-Shannon distance (base 2: 0 identical, 1 disjoint)."""
from __future__ import annotations

import numpy as np
from scipy.spatial.distance import jensenshannon

from calobench import Metric, MetricResult

from .common import half_spread

EDGES = np.linspace(-7, 5, 101)


def mscn_histograms(data) -> np.ndarray:
    """Per-shower histogram counts of MSCN coefficients, ``[N, 100]`` (cached)."""
    if "mscn" not in data.cache:
        rows = []
        for b in data.chunks():
            a = b.array().reshape(len(b), -1)
            r, c = np.nonzero(a > 0)  # only the hit cells enter: row-major, so r is sorted
            v = a[r, c].astype(np.float64)
            cnt = np.bincount(r, minlength=len(a))
            safe = np.maximum(cnt, 1)
            mu = np.bincount(r, v, minlength=len(a)) / safe
            var = np.bincount(r, (v - mu[r]) ** 2, minlength=len(a)) / safe
            coef = (v - mu[r]) / (np.sqrt(var)[r] + 1e-7)
            idx = np.clip(np.searchsorted(EDGES, coef, side="right") - 1, 0, len(EDGES) - 2)
            nb = len(EDGES) - 1
            rows.append(np.bincount(r * nb + idx, minlength=len(a) * nb).reshape(len(a), nb).astype(np.float64))
        data.cache["mscn"] = np.concatenate(rows)
    return data.cache["mscn"]


def js(hr: np.ndarray, hg: np.ndarray) -> float:
    if hr.sum() == 0 or hg.sum() == 0:
        return 1.0
    return float(jensenshannon(hr, hg, base=2))


class MSCN(Metric):
    name = "mscn"
    description = "Jensen-Shannon distance of MSCN coefficient histograms"
    min_showers = 10
    uncertainty_version = 2  # from disjoint halves (common.half_spread)

    def compute(self, real, generated, ctx):
        Hr, Hg = mscn_histograms(real), mscn_histograms(generated)
        value = js(Hr.sum(0), Hg.sum(0))
        details = {"bins": [-7, 5, 100]}
        unc = half_spread(lambda ir, ig: js(Hr[ir].sum(0), Hg[ig].sum(0)), len(Hr), len(Hg), ctx.rng(4), value,
                          details=details)
        return MetricResult(value, unc, details)
