"""Separation power of each high-level observable's histogram (CaloChallenge 2022):
S = 0.5 * sum_i (h1_i - h2_i)^2 / (h1_i + h2_i), histograms normalised to unit sum;
0 for identical, 1 for disjoint. 30 bins between the real sample's 0.5 and 99.5
percentiles; values outside the range are dropped, as the CaloChallenge's histograms drop
them (version 1 clipped them into the edge bins, up to 42 % off on a one-cell shift); a sample
with no value in range scores 1 for that observable. The value is the mean over observables."""
from __future__ import annotations

import numpy as np

from calobench import Metric, MetricResult

from .common import feature_table, half_spread, usable_columns

N_BINS = 30


def separation_power(h1: np.ndarray, h2: np.ndarray) -> float:
    if h1.sum() <= 0 or h2.sum() <= 0:  # one sample has nothing in range: as far apart as it gets
        return 1.0
    h1 = h1 / max(h1.sum(), 1e-30)
    h2 = h2 / max(h2.sum(), 1e-30)
    s = h1 + h2
    ok = s > 0
    return float(0.5 * np.sum((h1[ok] - h2[ok]) ** 2 / s[ok]))


def binned(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value (numpy's histogram rule: the last bin includes its right edge);
    out of range: -1 (dropped)."""
    i = np.searchsorted(edges, x, side="right") - 1
    i[x == edges[-1]] = len(edges) - 2
    i[(x < edges[0]) | (x > edges[-1]) | ~np.isfinite(x)] = -1
    return i


def in_range_counts(idx: np.ndarray, n_bins: int) -> np.ndarray:
    return np.bincount(idx[idx >= 0], minlength=n_bins).astype(float)


class SeparationPower(Metric):
    name = "separation_power"
    description = "mean separation power of observable histograms"
    min_showers = 20
    uncertainty_version = 2  # from disjoint halves (common.half_spread)
    version = 2

    def compute(self, real, generated, ctx):
        names, R = feature_table(real)
        _, G = feature_table(generated)
        cols = usable_columns(R)

        def per_feature(ir, ig):
            out = []
            for c in cols:  # the range from the real showers in hand: part of what varies between samples
                r, g = R[ir, c], G[ig, c]
                lo, hi = np.percentile(r, [0.5, 99.5])
                edges = np.linspace(lo, hi if hi > lo else lo + 1e-9, N_BINS + 1)
                out.append(separation_power(in_range_counts(binned(r, edges), N_BINS),
                                            in_range_counts(binned(g, edges), N_BINS)))
            return out

        sp = per_feature(np.arange(len(R)), np.arange(len(G)))
        details = {"per_observable": dict(zip([names[c] for c in cols], sp))}
        unc = half_spread(lambda ir, ig: float(np.mean(per_feature(ir, ig))), len(R), len(G), ctx.rng(6),
                          float(np.mean(sp)), details=details)
        return MetricResult(float(np.mean(sp)), unc, details)
