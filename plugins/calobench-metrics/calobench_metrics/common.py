"""Helpers shared by the metrics: condition bins, bootstrap, feature matrices."""
from __future__ import annotations

import numpy as np

from calobench.observables import features

N_BOOT = 20


def primary_condition(data):
    """The condition metrics bin in: energy if there is one, else the first, else None."""
    if "energy" in data.conditions:
        return "energy"
    return next(iter(data.conditions), None)


def condition_edges(values: np.ndarray, max_bins: int = 5) -> np.ndarray:
    """Inner bin edges: the natural clusters of ``values`` if it has 2..10 of them
    (e.g. beam energies), else ``max_bins`` equal-population bins."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if len(v) < 2 or v[-1] == v[0]:
        return np.zeros(0)
    gaps = np.diff(v)
    big = np.flatnonzero(gaps > 0.05 * (v[-1] - v[0]))
    if 1 <= len(big) <= 9:
        return (v[big] + v[big + 1]) / 2
    return np.unique(np.quantile(v, np.linspace(0, 1, max_bins + 1)[1:-1]))


def condition_bins(real, generated, max_bins: int = 5):
    """``[(label, real_index, generated_index)]`` per condition bin (edges from the real sample)."""
    c = primary_condition(real)
    if c is None or c not in generated.conditions:
        return [("all", np.arange(len(real)), np.arange(len(generated)))]
    edges = condition_edges(real.conditions[c], max_bins)
    br, bg = np.searchsorted(edges, real.conditions[c]), np.searchsorted(edges, generated.conditions[c])
    out = []
    for b in range(len(edges) + 1):
        ir, ig = np.flatnonzero(br == b), np.flatnonzero(bg == b)
        if len(ir) and len(ig):
            lo = real.conditions[c][ir].min()
            hi = real.conditions[c][ir].max()
            out.append((f"{c} {lo:.3g}-{hi:.3g}", ir, ig))
    return out


def feature_table(data, exclude_constant_in=None) -> tuple:
    """(names, matrix [N, F]) of the shared high-level observables."""
    f = features(data)
    names = [k for k in f if not k.startswith("max_cell")]
    return names, np.stack([f[k] for k in names], axis=1)


def usable_columns(real_matrix: np.ndarray) -> np.ndarray:
    """Columns with spread in the real sample (a constant observable carries no information)."""
    return np.flatnonzero(real_matrix.std(0) > 1e-12 * (np.abs(real_matrix).mean(0) + 1e-30))


def bootstrap(fn, real_n: int, gen_n: int, rng: np.random.Generator, n: int = N_BOOT) -> float:
    """Std of ``fn(real_index, gen_index)`` over ``n`` resamples with replacement."""
    vals = [fn(rng.integers(0, real_n, real_n), rng.integers(0, gen_n, gen_n)) for _ in range(n)]
    return float(np.std(vals, ddof=1)) if n > 1 else 0.0


def profiles(data) -> dict:
    """Per-shower energy profiles along x, y and the layer axis: ``{axis: [N, bins]}`` (cached; the
    shared observables' definition, radial and angular for cylindrical geometries)."""
    from calobench.observables import profiles as shared

    return shared(data)
