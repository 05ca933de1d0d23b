"""Classifier two-sample test in the manner of the CaloChallenge 2022 (calobench's protocol: a smaller,
standardised network with early stopping; the challenge's own is cc_auc_low / cc_auc_high), seeded.

A network with two hidden layers (LeakyReLU) learns to tell real from generated showers,
on low-level input (cells / incident energy, plus log incident energy; transverse axes
pooled when a shower has more than 4096 cells) and on high-level input (the shared
observables). Splits 60/20/20 (train / early-stopping test / validation), seeded from the
run's seed — the challenge's own code does not seed them. Test-split outputs calibrate an
isotonic regression (``scipy.optimize.isotonic_regression``); on the validation split we
report AUC and JSD = (ln 2 - BCE) / ln 2. Real vs real gives AUC ~0.5, JSD ~0.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import isotonic_regression
from scipy.stats import mannwhitneyu

from calobench import Metric, MetricResult

from .common import feature_table, primary_condition
from .nets import Standardise, low_level, mlp, seeded_init, train


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return np.nan
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def calibrate(p_test, y_test, p_val) -> np.ndarray:
    """Isotonic calibration fitted on the test split, applied to validation outputs."""
    order = np.argsort(p_test, kind="stable")
    fitted = isotonic_regression(y_test[order].astype(float)).x
    return np.interp(p_val, p_test[order], fitted)


def jsd(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float((np.log(2) - bce) / np.log(2))


def two_sample_test(xr: np.ndarray, xg: np.ndarray, seed: int, epochs: int = 40) -> dict:
    n = min(len(xr), len(xg))
    rng = np.random.default_rng(seed)
    x = np.concatenate([xr[rng.permutation(len(xr))[:n]], xg[rng.permutation(len(xg))[:n]]])
    y = np.concatenate([np.ones(n), np.zeros(n)]).astype(np.float32)
    perm = rng.permutation(2 * n)
    x, y = x[perm], y[perm]
    a, b = int(0.6 * len(x)), int(0.8 * len(x))
    scale = Standardise(x[:a])
    x = scale(x)
    with seeded_init(seed):
        net = mlp(x.shape[1], 1)
    bce = torch.nn.BCEWithLogitsLoss()
    train(net, x[:a], y[:a, None], x[a:b], y[a:b, None], bce, seed, epochs=epochs)
    with torch.no_grad():
        p = torch.sigmoid(net(torch.as_tensor(x[a:]))).numpy()[:, 0]
    p_test, p_val, y_test, y_val = p[: b - a], p[b - a :], y[a:b], y[b:]
    p_cal = calibrate(p_test, y_test, p_val)
    boot = [auc(p_cal[i], y_val[i]) for i in (rng.integers(0, len(p_val), len(p_val)) for _ in range(20))]
    return {"auc": auc(p_cal, y_val), "auc_unc": float(np.nanstd(boot, ddof=1)), "jsd": jsd(p_cal, y_val),
            "n_validation": int(len(y_val)), "max_epochs": epochs}


QUICK_EPOCHS = 8  # smoke runs (ctx.quick): enough to exercise every path


class ClassifierAUC(Metric):
    name = "classifier_auc"
    description = "real-vs-generated classifier AUC on cells (0.5 = indistinguishable)"
    min_showers = 100

    def compute(self, real, generated, ctx):
        c = primary_condition(real)
        lr, lg = low_level(real), low_level(generated)
        if c == "energy" and c in generated.conditions:
            er, eg = real.conditions[c].astype(np.float32), generated.conditions[c].astype(np.float32)
            lr = np.concatenate([lr / er[:, None], np.log(er)[:, None]], 1)
            lg = np.concatenate([lg / eg[:, None], np.log(eg)[:, None]], 1)
        r = two_sample_test(lr, lg, ctx.seed * 1000 + 11, epochs=QUICK_EPOCHS if ctx.quick else 40)
        return MetricResult(r["auc"], r["auc_unc"], r)


class ClassifierAUCHighLevel(Metric):
    """The same test on the high-level observables only (cheaper; the challenge's second table)."""

    name = "classifier_auc_high"
    description = "real-vs-generated classifier AUC on observables"
    min_showers = 100

    def compute(self, real, generated, ctx):
        r = two_sample_test(feature_table(real)[1].astype(np.float32),
                            feature_table(generated)[1].astype(np.float32), ctx.seed * 1000 + 12,
                            epochs=QUICK_EPOCHS if ctx.quick else 40)
        return MetricResult(r["auc"], r["auc_unc"], r)
