"""Gromov-Wasserstein distance between the correlation structures of real and generated
showers (3DGAN): per-shower features -> correlation-distance matrix between features
(``cdist(F.T, F.T, 'correlation')``, divided by its maximum) -> GW with POT.

Default: POT's exact ``gromov_wasserstein2`` (square loss). With tens of features the
exact solver takes milliseconds, is deterministic and has no epsilon to tune; the entropic
variant (``gromov_wasserstein_entropic``, epsilon 0.05) is smoother but biased upwards by
the regularisation, so its floor is not zero.
"""
from __future__ import annotations

import numpy as np
import ot
from scipy.spatial.distance import cdist

from calobench import Metric, MetricResult

from .common import bootstrap, feature_table, profiles, usable_columns


def gw_features(data) -> tuple:
    names, F = feature_table(data)
    prof = profiles(data)
    extra = [prof[a] for a in ("x", "y")]
    names = names + [f"prof_{a}_{i}" for a, p in zip("xy", extra) for i in range(p.shape[1])]
    return names, np.concatenate([F, *extra], axis=1)


def correlation_distance(F: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        D = cdist(F.T, F.T, "correlation")
    D = np.nan_to_num(D, nan=1.0)  # a constant feature: treat as uncorrelated
    return D / D.max() if D.max() > 0 else D


def gw_distance(Dr: np.ndarray, Dg: np.ndarray, entropic: bool = False, epsilon: float = 0.05) -> float:
    p = ot.unif(len(Dr))
    q = ot.unif(len(Dg))
    if entropic:
        return float(ot.gromov.entropic_gromov_wasserstein2(Dr, Dg, p, q, "square_loss", epsilon=epsilon))
    return float(ot.gromov.gromov_wasserstein2(Dr, Dg, p, q, "square_loss"))


class GromovWasserstein(Metric):
    name = "gromov_wasserstein"
    description = "GW distance of feature correlation-distance matrices (POT, exact)"
    min_showers = 50
    entropic = False

    def compute(self, real, generated, ctx):
        names, R = gw_features(real)
        _, G = gw_features(generated)
        cols = usable_columns(R)
        R, G = R[:, cols], G[:, cols]

        def value(ir, ig):
            return gw_distance(correlation_distance(R[ir]), correlation_distance(G[ig]), self.entropic)

        v = value(slice(None), slice(None))
        unc = bootstrap(value, len(R), len(G), ctx.rng(2), n=10)
        return MetricResult(v, unc, {"n_features": len(cols), "solver": "entropic" if self.entropic else "exact"})


class GromovWassersteinEntropic(GromovWasserstein):
    name = "gromov_wasserstein_entropic"
    description = "GW distance, entropic solver (epsilon 0.05)"
    entropic = True
