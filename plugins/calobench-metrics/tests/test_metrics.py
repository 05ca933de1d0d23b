"""Every metric against an independent reference, then floor vs distorted on simulated showers."""
import numpy as np
import ot
import pytest
import scipy.stats
from skimage.metrics import structural_similarity

from calobench import DatasetInfo, Geometry, MetricContext, ShowerData
from calobench_metrics import METRICS
from calobench_metrics.classifier import auc, two_sample_test
from calobench_metrics.common import condition_edges
from calobench_metrics.gromov import gw_distance
from calobench_metrics.mre import relative_error
from calobench_metrics.mscn import mscn_histograms
from calobench_metrics.physics_distances import fpd, frechet_distance, mmd2_poly
from calobench_metrics.separation import separation_power
from calobench_metrics.ssim import window
from calobench_metrics.wasserstein import normalised_w1


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CALOBENCH_CACHE", str(tmp_path))


# -- references on hand-checkable cases --------------------------------------
def test_w1_matches_scipy_and_hand_value():
    assert normalised_w1(np.array([0.0, 1.0]), np.array([1.0, 2.0]), 1.0) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=500), rng.normal(0.3, 1.2, size=700)
    assert normalised_w1(a, b, 2.0) == pytest.approx(scipy.stats.wasserstein_distance(a, b) / 2)
    assert normalised_w1(a, b, 1.0) == pytest.approx(ot.wasserstein_1d(a, b, p=1), rel=1e-6)


def test_gw_two_point_spaces_and_permutation_invariance():
    a, b = 0.3, 1.0
    C1, C2 = np.array([[0, a], [a, 0]]), np.array([[0, b], [b, 0]])
    assert gw_distance(C1, C2) == pytest.approx((a - b) ** 2 / 2, abs=1e-9)
    rng = np.random.default_rng(1)
    X = rng.random((6, 6))
    C = (X + X.T) / 2
    np.fill_diagonal(C, 0)
    perm = rng.permutation(6)
    assert gw_distance(C, C[perm][:, perm]) == pytest.approx(0, abs=1e-9)


def test_ssim_window_and_reference():
    assert window((12, 15, 7)) == 7 and window((9, 9)) == 7 and window((4, 4, 3)) == 3
    assert window((51, 51, 2)) is None and window((6, 8, 5)) == 5
    rng = np.random.default_rng(2)
    img = rng.random((12, 15, 7))
    assert structural_similarity(img, img, data_range=1.0, win_size=window(img.shape)) == pytest.approx(1.0)
    shifted = np.roll(img, 1, axis=0)
    assert structural_similarity(img, shifted, data_range=1.0, win_size=7) < 0.5


def test_mscn_hand_case():
    x = np.zeros((1, 2, 2, 1), np.float32)
    x[0, 0, 0, 0], x[0, 1, 1, 0] = 1.0, 3.0  # non-zero cells 1, 3: mean 2, std 1 -> coefficients -1, +1
    h = mscn_histograms(ShowerData(x, {}, Geometry(shape=(2, 2, 1))))
    edges = np.linspace(-7, 5, 101)
    assert h.sum() == 2
    assert h[0, np.searchsorted(edges, -1.0, side="right") - 1] == 1
    assert h[0, np.searchsorted(edges, 1.0 - 1e-6, side="right") - 1] == 1


def test_relative_error_and_separation_power():
    assert relative_error(np.array([1.0, 2.0, 0.0]), np.array([1.5, 2.0, 7.0])) == pytest.approx(0.25)
    assert separation_power(np.array([1.0, 2, 3]), np.array([2.0, 4, 6])) == pytest.approx(0)
    assert separation_power(np.array([1.0, 0]), np.array([0.0, 1])) == pytest.approx(1)


def test_frechet_closed_form_and_extrapolation():
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    assert frechet_distance(mu1, np.eye(3), mu2, np.eye(3)) == pytest.approx(5.0)
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])  # sum (sigma1 - sigma2)^2 = 1 + 0 + 4
    assert frechet_distance(mu1, s1, mu1, s2) == pytest.approx(5.0)
    from scipy import linalg

    g = np.random.default_rng(1)  # general and singular covariances (fewer samples than features)
    for n, d in ((400, 40), (20, 30)):
        x, y = g.normal(size=(n, d)), 1.3 * g.normal(size=(n, d)) + 0.2
        m1, c1, m2, c2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
        ref = (m1 - m2) @ (m1 - m2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(np.real(linalg.sqrtm(c1 @ c2)))
        assert frechet_distance(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-6)
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3)) + np.array([0.5, 0, 0])
    v, u = fpd(a, b, np.random.default_rng(0))
    assert v == pytest.approx(0.25, abs=max(4 * u, 0.03))
    v0, u0 = fpd(a, rng.normal(size=(4000, 3)), np.random.default_rng(0))
    assert abs(v0) < 0.01


def test_mmd_unbiased():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(800, 4))
    assert abs(mmd2_poly(x, rng.normal(size=(800, 4)))) < 0.05
    assert mmd2_poly(x, rng.normal(size=(800, 4)) + 1) > 0.5


def test_auc_hand_case_and_classifier_limits():
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    rng = np.random.default_rng(5)
    a = rng.normal(size=(600, 5)).astype(np.float32)
    sep = two_sample_test(a, a + 4, seed=0)
    assert sep["auc"] > 0.98 and sep["jsd"] > 0.8
    same = two_sample_test(a, rng.normal(size=(600, 5)).astype(np.float32), seed=0)
    assert 0.4 < same["auc"] < 0.6 and same["jsd"] < 0.1
    assert two_sample_test(a, a + 4, seed=0) == sep  # seeded: reproducible


def test_condition_edges_find_beam_energies():
    rng = np.random.default_rng(6)
    e = np.concatenate([rng.normal(E, 0.01 * E, 100) for E in (20, 32, 50, 80, 90)])
    edges = condition_edges(e)
    assert len(edges) == 4 and 32 < edges[1] < 50
    assert len(condition_edges(rng.uniform(2, 500, 1000))) == 4


# -- floor vs distorted on simulated showers ---------------------------------
GEOM = Geometry(shape=(9, 9, 7), cell_size=(10, 10, 20), energy_unit="MIP", threshold=0.5)


def simulate(n, seed, scale=1.0, shift=0, noise=True):
    """A small physics-like toy: gamma longitudinal profile deepening with ln E, Gaussian core."""
    rng = np.random.default_rng(seed)
    e = rng.uniform(10, 100, n)
    t = 1.2 + 0.9 * np.log(e / 10) + rng.normal(0, 0.25, n)
    z = np.arange(7) + 0.5
    prof = z[None] ** np.clip(t, 0.2, None)[:, None] * np.exp(-z[None])
    prof /= prof.sum(1, keepdims=True)
    c = np.arange(9) + 0.5 - 4.5
    cx, cy = rng.normal(0, 0.4, (2, n, 1))
    w = 0.8 + 0.12 * z
    lx = np.exp(-0.5 * ((c[None] - cx)[:, :, None] / w) ** 2)
    ly = np.exp(-0.5 * ((c[None] - cy)[:, :, None] / w) ** 2)
    lx, ly = lx / lx.sum(1, keepdims=True), ly / ly.sum(1, keepdims=True)
    mean = 20 * e[:, None, None, None] * lx[:, :, None] * ly[:, None] * prof[:, None, None]
    x = rng.poisson(mean) * 0.05 * scale
    if noise:
        x = x + rng.normal(0, 0.3, x.shape).clip(0)
    x = np.roll(x, shift, axis=1)
    x[x < 0.5] = 0
    return ShowerData(x.astype(np.float32), {"energy": e.astype(np.float32)}, GEOM)


def decorrelate(data, seed=0):
    """Each cell permuted independently across showers: every one-cell marginal kept, every correlation gone."""
    rng = np.random.default_rng(seed)
    x = data.array().reshape(len(data), -1).copy()
    for j in range(x.shape[1]):
        x[:, j] = x[rng.permutation(len(x)), j]
    return ShowerData(x.reshape(data.array().shape), data.conditions, data.geometry)


@pytest.fixture(scope="module")
def samples():
    return {"real": simulate(800, 1), "real2": simulate(800, 2),
            "distorted": simulate(800, 3, scale=1.25, shift=1), "decorrelated": decorrelate(simulate(800, 3))}


# the distortion each metric exists to see (the sensitivity benchmark shows all of them)
DISTORTION = {"gromov_wasserstein": "decorrelated", "gromov_wasserstein_entropic": "decorrelated"}


def info():
    splits = {"train": simulate(2000, 10), "validation": simulate(400, 11)}
    return DatasetInfo("toy9", GEOM, {"energy": (10.0, 100.0)}, list(splits), loader=splits.__getitem__, key="toy9-test")


@pytest.mark.parametrize("metric_cls", METRICS, ids=lambda m: m.name)
def test_floor_beats_distorted(metric_cls, samples):
    m = metric_cls()
    ctx = MetricContext(dataset=info(), seed=0)
    floor = m.compute(samples["real"], samples["real2"], ctx)
    bad = m.compute(samples["real"], samples[DISTORTION.get(m.name, "distorted")], ctx)
    sign = -1 if m.higher_is_better else 1
    assert np.isfinite(floor.value) and np.isfinite(bad.value) and floor.uncertainty >= 0
    assert sign * (bad.value - floor.value) > 2 * max(bad.uncertainty, floor.uncertainty, 1e-12), (floor, bad)
    again = m.compute(samples["real"], samples[DISTORTION.get(m.name, "distorted")], ctx)
    assert again.value == bad.value  # seeded, reproducible


def test_metrics_registered_through_entry_point():
    from calobench.plugins import Plugins

    reg = Plugins().registry
    assert {m.name for m in METRICS} <= set(reg.metrics)
    assert reg.owner[("metric", "wasserstein")] == "metrics"


def test_ssim_not_applicable_to_flat_showers():
    from calobench_metrics.ssim import SSIM

    flat = DatasetInfo("flat", Geometry(shape=(368,), layer_axis=None), {"energy": (1, 2)})
    assert SSIM().applies_to(flat)


@pytest.mark.parametrize("name", ["triforce", "classifier_auc", "classifier_auc_high"])
def test_quick_settings_for_smoke_runs(name, samples, tmp_path):
    """ctx.quick (unranked smoke runs) takes the cheap path: still a finite, seeded value; the
    triforce regressor trained that way is cached apart from the full one."""
    m = next(c for c in METRICS if c.name == name)()
    quick = MetricContext(dataset=info(), seed=0, quick=True)
    a = m.compute(samples["real"], samples["distorted"], quick)
    b = m.compute(samples["real"], samples["distorted"], MetricContext(dataset=info(), seed=0, quick=True))
    assert np.isfinite(a.value) and a.value == b.value
    if name != "triforce":
        assert a.details["max_epochs"] < 40  # the full test trains up to 40 epochs
        return
    full = m.compute(samples["real"], samples["distorted"], MetricContext(dataset=info(), seed=0))
    assert full.value != a.value  # a different (cheaper) regressor
    if name == "triforce":
        cached = sorted(p.name for p in (tmp_path / "metrics").iterdir())
        assert cached == ["triforce-v1-toy9-test-seed0-quick.safetensors", "triforce-v1-toy9-test-seed0.safetensors"]


def test_gw_takes_the_better_of_the_independent_and_identity_starts():
    """Identical structures: the identity coupling is optimal (GW 0); POT's default start from the
    independent coupling may stop in a local minimum above it (version 1 reported that)."""
    rng = np.random.default_rng(4)
    F = rng.normal(size=(500, 30)) @ rng.normal(size=(30, 30))
    from calobench_metrics.gromov import correlation_distance

    D = correlation_distance(F)
    D2 = correlation_distance(F + 0.3 * rng.normal(size=F.shape))
    assert gw_distance(D, D) == pytest.approx(0, abs=1e-12)
    for other in (D, D2):
        both = gw_distance(D, other)
        assert both == min(gw_distance(D, other, starts="identity"), gw_distance(D, other, starts="independent"))
    assert gw_distance(D, D2) <= gw_distance(D, D2, starts="independent")


def test_separation_power_drops_out_of_range_values():
    from calobench_metrics.separation import binned, in_range_counts

    edges = np.linspace(0.0, 1.0, 11)
    x = np.array([-0.5, 0.0, 0.05, 0.5, 1.0, 1.5, np.nan])
    idx = binned(x, edges)
    assert idx.tolist() == [-1, 0, 0, 5, 9, -1, -1]  # numpy's histogram rule; outside dropped
    np.testing.assert_array_equal(in_range_counts(idx, 10), np.histogram(x[np.isfinite(x)], edges)[0])
    assert separation_power(np.zeros(10), np.ones(10)) == 1.0  # nothing in range: disjoint
    from calobench_metrics.gromov import GromovWassersteinEntropic

    assert GromovWassersteinEntropic.ranked is False and GromovWassersteinEntropic.unranked_reason


# -- uncertainties: the ± is the spread over independent pairs ----------------
@pytest.mark.parametrize("shift", [0.0, 0.3])  # at the floor, and far from it (delta^2 ~ 20x the noise)
def test_half_spread_matches_the_spread_over_independent_pairs(shift):
    """A quadratic distance, D = (mean_R - mean_G)^2 over 3 features: the reported ± (disjoint halves)
    against the spread of D over 300 independent pairs. The plain bootstrap overstates the floor's
    spread (sqrt(3) in theory for one chi^2 term); the halves must be within 25 %."""
    from calobench_metrics.common import bootstrap, half_spread

    rng = np.random.default_rng(0)
    n = 400

    def dist(a, b):
        return float(np.sum((a.mean(0) - b.mean(0)) ** 2))

    vals, halves, boots = [], [], []
    for k in range(300):
        R, G = rng.normal(size=(n, 3)), rng.normal(shift / np.sqrt(3), 1.0, size=(n, 3))
        v = dist(R, G)
        vals.append(v)
        fn = lambda ir, ig: dist(R[ir], G[ig])  # noqa: E731
        halves.append(half_spread(fn, n, n, np.random.default_rng(k), v))
        if k < 100:
            boots.append(bootstrap(fn, n, n, np.random.default_rng(k)))
    true = np.std(vals, ddof=1)
    assert 0.8 < true / np.mean(halves) < 1.25
    if shift == 0.0:
        assert true / np.mean(boots) < 0.75  # the bootstrap's overstatement the halves remove


def test_null_corrected_bootstrap_at_the_floor():
    """FPD's ± (bootstrap minus twice the null variance): for a floor-level quadratic distance the
    plain bootstrap is ~sqrt(3) too wide, the corrected one within 25 % of the true spread."""
    from calobench_metrics.common import bootstrap

    rng = np.random.default_rng(1)
    n = 400

    def dist(a, b):
        return float(np.sum((a.mean(0) - b.mean(0)) ** 2))

    vals, corrected = [], []
    for k in range(200):
        R, G = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
        vals.append(dist(R, G))
        corrected.append(bootstrap(lambda ir, ig: dist(R[ir], G[ig]), n, n, np.random.default_rng(k),
                                   null=lambda i1, i2: dist(R[i1], R[i2])))
    assert 0.8 < np.std(vals, ddof=1) / np.mean(corrected) < 1.25
