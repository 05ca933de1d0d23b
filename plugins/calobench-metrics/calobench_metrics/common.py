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


def bootstrap(fn, real_n: int, gen_n: int, rng: np.random.Generator, n: int = N_BOOT, null=None,
              details: dict | None = None) -> float:
    """The metric's ± from resampling.

    Without ``null``: the std of ``fn(real_index, gen_index)`` over ``n`` resamples of both samples
    with replacement (the plain bootstrap).

    With ``null(real_index_a, real_index_b)`` (the metric between two resamples of the *real* sample,
    the second of the generated sample's size): the null-corrected bootstrap. A distance measured
    near the floor is a function of the sampling noise itself, and resampling adds a second noise on
    top of the observed one: for a quadratic distance D = |delta + e|^2 the bootstrap variance is the
    true one plus twice the variance of D between two real samples (the null), so the plain bootstrap
    overstates the ± near the floor and is right far from it. The correction:
    var = max(var_boot - 2 var_null, var_null), never below the floor's own spread (FPD, whose
    extrapolation in 1/N needs every shower). ``details`` (if given) receives both spreads."""
    if n < 2:
        return 0.0
    boot = np.std([fn(rng.integers(0, real_n, real_n), rng.integers(0, gen_n, gen_n)) for _ in range(n)], ddof=1)
    if null is None:
        return float(boot)
    zeros = [null(rng.integers(0, real_n, real_n), rng.integers(0, real_n, gen_n)) for _ in range(n)]
    zero = np.std(zeros, ddof=1)
    if details is not None:
        details.update(bootstrap_std=float(boot), null_std=float(zero), null_mean=float(np.mean(zeros)))
    return float(np.sqrt(max(boot**2 - 2 * zero**2, zero**2)))


def floor_or_bootstrap(fn, null, real_n: int, gen_n: int, rng: np.random.Generator, value: float,
                       n: int = N_BOOT, details: dict | None = None) -> float:
    """The disjoint halves (``half_spread``) when ``value`` is within 2 sigma of the null (two real
    samples: the floor), else the null-corrected bootstrap. For a metric whose ± neither gets right
    everywhere (MRE: the halves are right at the floor and 1.8x too small at +5 % energy, where the
    relative errors of sparse tail bins dominate; the bootstrap is right there and 1.7x too large at
    the floor; calibration benchmark)."""
    d = {} if details is None else details
    boot = bootstrap(fn, real_n, gen_n, rng, n, null=null, details=d)
    near = value <= d["null_mean"] + 2 * d["null_std"]
    d["uncertainty_from"] = "disjoint halves (near the floor)" if near else "null-corrected bootstrap"
    return half_spread(fn, real_n, gen_n, rng, value, n, d) if near else boot


def profiles(data) -> dict:
    """Per-shower energy profiles along x, y and the layer axis: ``{axis: [N, bins]}`` (cached; the
    shared observables' definition, radial and angular for cylindrical geometries)."""
    from calobench.observables import profiles as shared

    return shared(data)


def half_spread(fn, real_n: int, gen_n: int, rng: np.random.Generator, value: float, n: int = N_BOOT,
                details: dict | None = None) -> float:
    """The metric's ± from disjoint halves (no shower counted twice, unlike a bootstrap).

    Each of ``n`` random splits of both samples into halves gives two independent pairs of N/2
    showers, (R1, G1) and (R2, G2): (D11 - D22)^2 / 2 estimates the variance of the metric at N/2
    exactly, whatever the metric. Scaling it to N depends on the regime: at the floor a binned or
    quadratic distance is sampling noise, its mean and variance go as 1/N and 1/N^2 (D at N/2 is
    twice D at N); far from it the value is stable and the variance goes as 1/N. The ratio
    r = mean(D at N/2) / D tells which: var(N) = var(N/2) / (2 r), r clipped to [1, 2]. The
    bootstrap instead resamples with replacement, adding resampling noise on top of the observed one:
    it overstated the ± at the floor 1.5-2.2x (calibration benchmark)."""
    if n < 2 or real_n < 4 or gen_n < 4:
        return 0.0
    diffs, halves = [], []
    for _ in range(n):
        pr, pg = rng.permutation(real_n), rng.permutation(gen_n)
        a = fn(pr[: real_n // 2], pg[: gen_n // 2])
        b = fn(pr[real_n // 2 : 2 * (real_n // 2)], pg[gen_n // 2 : 2 * (gen_n // 2)])
        diffs.append(a - b)
        halves += [a, b]
    var_half = float(np.mean(np.square(diffs)) / 2)
    r = float(np.clip(np.mean(halves) / value, 1.0, 2.0)) if value > 0 else 2.0
    if details is not None:
        details.update(half_sample_std=float(np.sqrt(var_half)), half_to_full_ratio=r)
    return float(np.sqrt(var_half / (2 * r)))
