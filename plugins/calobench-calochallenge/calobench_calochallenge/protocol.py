"""The CaloChallenge 2022 evaluation (its ``evaluate.py``), re-implemented and seeded.

What is the challenge's, exactly:
* voxels below the dataset's ``min_energy`` (the geometry's threshold) are zeroed first;
* high-level features (``high_level``): log10 E_inc, log10(E_layer + 1e-8) per layer, centre of
  energy and width in x and y / 100 for the layers binned in alpha, log10(E_tot + 1e-8),
  sparsity per layer, centre of energy and width in r / 100 per layer (calobench's shared
  observables for binned geometries, arranged in the challenge's order);
* low-level input (``low_level``): log10 E_inc and the voxels / E_inc;
* the classifier: Linear(d, 2048), LeakyReLU, then 2 x [Linear(2048, 2048), LeakyReLU], then
  Linear(2048, 1); BCE with logits, Adam lr 2e-4, batch 1000, 50 epochs, the epoch of the best
  test accuracy kept (training stops at accuracy 1); the test split's sigmoid outputs fit an
  isotonic regression (clipped to [1e-6, 1 - 1e-6]) that calibrates the validation outputs, on
  which AUC and JSD = (ln 2 - BCE) / ln 2 are reported. Splits: 60 / 20 / 20 of each sample
  (the challenge's fixed counts when the samples have the challenge's sizes);
* FPD and KPD: jetnet 0.2.5's ``fpd(real, gen, min_samples=10000)`` and
  ``kpd(real, gen, batch_size=10000)`` on the high-level features (features divided by the
  real sample's max |x|; FPD: 20 batches at 10 sizes regular in 1/N between 10 000 and 50 000,
  drawn with replacement, a linear fit in 1/N with non-negative intercept and slope, the
  intercept and its fit error; KPD: unbiased MMD^2 with the kernel (x.y/d + 1)^4 on 10 batches
  of 10 000 drawn with replacement, the median and half the 16.275-83.725 % range), seed 42;
* separation power 0.5 sum (h1 - h2)^2 / (h1 + h2) of unit-sum histograms, values outside the
  range dropped (the challenge's matplotlib histograms), with its binnings.

What calobench adds: every split, shuffle and initialisation is seeded (the challenge's are
not), the samples are cut to equal size with a seeded draw, and a histogram that has no entry
in range scores separation 1 (the challenge's would be NaN).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from scipy.optimize import curve_fit, isotonic_regression
from scipy.stats import mannwhitneyu

from calobench import ShowerData
from calobench.observables import features

from .binning import is_regular

LOG_EPS = 1e-8
CHALLENGE_SPLITS = {121000: (80000, 20000, 21000), 120800: (80000, 20000, 20800), 100000: (60000, 20000, 20000)}


# -- inputs ---------------------------------------------------------------------
def cut(data: ShowerData) -> ShowerData:
    """The data with voxels below the geometry's threshold zeroed (the challenge's first step); cached."""
    if "calochallenge_cut" not in data.cache:
        thr = float(data.geometry.threshold)
        a = data.array().reshape(len(data), -1)
        a = np.where(a < thr, np.float32(0), a)
        data.cache["calochallenge_cut"] = ShowerData(a, data.conditions, data.geometry)
    return data.cache["calochallenge_cut"]


def incident(data: ShowerData) -> np.ndarray:
    return np.asarray(data.conditions["energy"], dtype=np.float64)


def high_level(data: ShowerData) -> tuple:
    """(names, [N, F] float64) the challenge's high-level classifier / FPD / KPD inputs."""
    c = cut(data)
    f = features(c)
    ids = [b["layer"] for b in data.geometry.binning]
    alpha_ids = [b["layer"] for b in data.geometry.binning if b["n_alpha"] > 1]
    cols = [("log10_E_inc", np.log10(incident(data)))]
    cols += [(f"log10_E_layer_{i}", np.log10(f[f"E_layer_{i}"] + LOG_EPS)) for i in ids]
    for q in ("cog_x", "cog_y", "width_x", "width_y"):
        cols += [(f"{q}_layer_{i}/100", f[f"{q}_layer_{i}"] / 1e2) for i in alpha_ids]
    cols.append(("log10_E_tot", np.log10(f["E_total"] + LOG_EPS)))
    cols += [(f"sparsity_layer_{i}", f[f"sparsity_layer_{i}"]) for i in ids]
    cols += [(f"cog_r_layer_{i}/100", f[f"cog_r_layer_{i}"] / 1e2) for i in ids]
    cols += [(f"width_r_layer_{i}/100", f[f"width_r_layer_{i}"] / 1e2) for i in ids]
    return [n for n, _ in cols], np.stack([v for _, v in cols], 1)


def low_level(data: ShowerData) -> np.ndarray:
    e = incident(data)
    return np.concatenate([np.log10(e)[:, None], cut(data).array() / e[:, None]], 1)


# -- jetnet's FPD and KPD -----------------------------------------------------------
def normalise(real: np.ndarray, gen: np.ndarray) -> tuple:
    m = np.abs(real).max(0)
    m[m == 0] = 1
    return real / m, gen / m


def frechet(mu1, s1, mu2, s2, eps: float = 1e-6) -> float:
    """Fréchet distance of two Gaussians (the stable form jetnet and pytorch-fid use)."""
    s1, s2 = np.atleast_2d(s1), np.atleast_2d(s2)
    diff = np.atleast_1d(mu1) - np.atleast_1d(mu2)
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        off = np.eye(len(s1)) * eps
        covmean = linalg.sqrtm((s1 + off).dot(s2 + off))
    covmean = np.real(covmean)
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fpd(real, gen, min_samples=10_000, max_samples=50_000, num_batches=20, num_points=10, seed=42) -> tuple:
    X, Y = normalise(np.asarray(real, np.float64), np.asarray(gen, np.float64))
    sizes = (1 / np.linspace(1.0 / min_samples, 1.0 / max_samples, num_points)).astype("int32")
    rng = np.random.default_rng(seed)
    vals = []
    for m in sizes:
        pts = []
        for _ in range(num_batches):
            a, b = X[rng.choice(len(X), size=m)], Y[rng.choice(len(Y), size=m)]
            pts.append(frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)))
        vals.append(np.mean(pts))
    params, covs = curve_fit(lambda x, c, s: c + s * x, 1 / sizes, vals, bounds=([0, 0], [np.inf, np.inf]))
    return float(params[0]), float(np.sqrt(np.diag(covs)[0]))


def mmd2_poly4(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2, kernel (x.y / d + 1)^4."""
    g = 1.0 / x.shape[1]
    kxx, kyy, kxy = ((x @ x.T) * g + 1) ** 4, ((y @ y.T) * g + 1) ** 4, ((x @ y.T) * g + 1) ** 4
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kpd(real, gen, num_batches=10, batch_size=10_000, seed=42) -> tuple:
    X, Y = normalise(np.asarray(real, np.float64), np.asarray(gen, np.float64))
    vals = []
    for i in range(num_batches):
        rng = np.random.default_rng(seed + i * 1000)
        vals.append(mmd2_poly4(X[rng.choice(len(X), size=batch_size)], Y[rng.choice(len(Y), size=batch_size)]))
    lo, hi = np.percentile(vals, [16.275, 83.725])
    return float(np.median(vals)), float((hi - lo) / 2)


# -- separation power -----------------------------------------------------------------
def separation_power(x_ref: np.ndarray, x_gen: np.ndarray, edges: np.ndarray) -> float:
    h1, _ = np.histogram(x_ref, edges)
    h2, _ = np.histogram(x_gen, edges)
    if h1.sum() == 0 or h2.sum() == 0:
        return 1.0
    h1, h2 = h1 / h1.sum(), h2 / h2.sum()
    return float(0.5 * np.sum((h1 - h2) ** 2 / (h1 + h2 + 1e-16)))


def histograms(real: ShowerData, gen: ShowerData) -> dict:
    """name -> (real values, generated values, bin edges): the histograms the challenge compares."""
    geom = real.geometry
    thr = float(geom.threshold)
    fr, fg = features(cut(real)), features(cut(gen))
    ds23 = is_regular(geom)
    out = {"E_tot/E_inc": (fr["E_total"] / incident(real), fg["E_total"] / incident(gen), np.linspace(0.5, 1.5, 101))}
    for b in geom.binning:
        i = b["layer"]
        top = float(fr[f"E_layer_{i}"].max())
        if top > thr > 0:
            out[f"E_layer_{i}"] = (fr[f"E_layer_{i}"], fg[f"E_layer_{i}"], np.logspace(np.log10(thr), np.log10(top), 40))
    for b in [b for b in geom.binning if b["n_alpha"] > 1]:
        i = b["layer"]
        lim_c = (-30.0, 30.0) if ds23 else (-500.0, 500.0) if i in (12, 13) else (-100.0, 100.0)
        lim_w = (0.0, 30.0) if ds23 else (0.0, 400.0) if i in (12, 13) else (0.0, 100.0)
        for q, lim in (("cog_x", lim_c), ("cog_y", lim_c), ("width_x", lim_w), ("width_y", lim_w)):
            out[f"{q}_layer_{i}"] = (fr[f"{q}_layer_{i}"], fg[f"{q}_layer_{i}"], np.linspace(*lim, 101))
    for b in geom.binning:
        i = b["layer"]
        lim_r = (0.0, 42.0) if ds23 else (0.0, 1500.0) if i in (12, 13, 14) else (0.0, 500.0)
        lim_rw = (0.0, 20.0) if ds23 else lim_r
        out[f"cog_r_layer_{i}"] = (fr[f"cog_r_layer_{i}"], fg[f"cog_r_layer_{i}"], np.linspace(*lim_r, 101))
        out[f"width_r_layer_{i}"] = (fr[f"width_r_layer_{i}"], fg[f"width_r_layer_{i}"], np.linspace(*lim_rw, 101))
        out[f"sparsity_layer_{i}"] = (fr[f"sparsity_layer_{i}"], fg[f"sparsity_layer_{i}"], np.linspace(0, 1, 21))
    vr, vg = cut(real).array(), cut(gen).array()
    if float(vr.max()) > thr > 0:
        out["voxel"] = (vr.reshape(-1), vg.reshape(-1), np.logspace(np.log10(thr), np.log10(float(vr.max())), 50))
    return out


# -- the classifier -----------------------------------------------------------------------
def dnn(n_in: int, hidden: int = 2048, n_hidden_layers: int = 2) -> torch.nn.Sequential:
    layers = [torch.nn.Linear(n_in, hidden), torch.nn.LeakyReLU(), torch.nn.Dropout(0.0)]
    for _ in range(n_hidden_layers):
        layers += [torch.nn.Linear(hidden, hidden), torch.nn.LeakyReLU(), torch.nn.Dropout(0.0)]
    return torch.nn.Sequential(*layers, torch.nn.Linear(hidden, 1))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC with ties counted half (= sklearn's roc_auc_score)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def isotonic(p_fit: np.ndarray, y_fit: np.ndarray, p_apply: np.ndarray, lo=1e-6, hi=1 - 1e-6) -> np.ndarray:
    """sklearn's IsotonicRegression(out_of_bounds='clip', y_min=lo, y_max=hi).fit(p_fit, y_fit).predict(p_apply):
    ties in p averaged (weighted), a non-decreasing fit, linear interpolation, constant outside."""
    x, inv, counts = np.unique(p_fit, return_inverse=True, return_counts=True)
    y = np.bincount(inv, weights=y_fit.astype(np.float64)) / counts
    fit = np.clip(isotonic_regression(y, weights=counts.astype(np.float64)).x, lo, hi)
    if len(x) == 1:
        return np.full(len(p_apply), fit[0])
    return np.interp(p_apply, x, fit)


def split_sizes(n: int) -> tuple:
    return CHALLENGE_SPLITS.get(n) or (int(0.6 * n), int(0.2 * n), n - int(0.6 * n) - int(0.2 * n))


def classifier_test(x_real: np.ndarray, x_gen: np.ndarray, seed: int, epochs: int = 50, hidden: int = 2048,
                    batch: int = 1000, lr: float = 2e-4, device: str = "cpu") -> dict:
    """The challenge's classifier two-sample test, seeded: AUC and JSD on the validation split."""
    rng = np.random.default_rng(seed)
    n = min(len(x_real), len(x_gen))
    xr = x_real[np.sort(rng.permutation(len(x_real))[:n])] if len(x_real) > n else x_real
    xg = x_gen[np.sort(rng.permutation(len(x_gen))[:n])] if len(x_gen) > n else x_gen
    a, b, _ = split_sizes(n)
    parts = []
    for x, label in ((xg, 0.0), (xr, 1.0)):  # the challenge's labels: generated 0, reference 1
        x = x[rng.permutation(len(x))]
        parts.append([(x[:a], label), (x[a:a + b], label), (x[a + b:], label)])

    def merged(k):
        x = np.concatenate([parts[0][k][0], parts[1][k][0]]).astype(np.float32)
        y = np.concatenate([np.full(len(parts[0][k][0]), 0.0), np.full(len(parts[1][k][0]), 1.0)]).astype(np.float32)
        p = rng.permutation(len(x))
        return torch.as_tensor(x[p], device=device), torch.as_tensor(y[p], device=device)

    (xt, yt), (xs, ys), (xv, yv) = merged(0), merged(1), merged(2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = dnn(xt.shape[1], hidden).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    bce = torch.nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    best, best_epoch, best_state = -np.inf, 0, None

    def predict(x):
        net.eval()
        with torch.no_grad():
            return torch.cat([net(x[i:i + batch]).reshape(-1) for i in range(0, len(x), batch)])

    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(xt), generator=gen).to(device)
        for i in range(0, len(xt), batch):
            idx = order[i:i + batch]
            loss = bce(net(xt[idx]), yt[idx, None])
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = float(((torch.sigmoid(predict(xs)) > 0.5).float() == ys).float().mean())
        if acc > best:
            best, best_epoch = acc, epoch + 1
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if acc == 1.0:
            break
    net.load_state_dict(best_state)
    p_test = torch.sigmoid(predict(xs)).double().cpu().numpy()
    p_val = torch.sigmoid(predict(xv)).double().cpu().numpy()
    y_test, y_val = ys.double().cpu().numpy(), yv.double().cpu().numpy()
    p_cal = isotonic(p_test, y_test, p_val)
    bce_cal = float(-np.mean(y_val * np.maximum(np.log(p_cal), -100) + (1 - y_val) * np.maximum(np.log(1 - p_cal), -100)))
    result = {"auc": auc(p_cal, y_val), "jsd": float((np.log(2) - bce_cal) / np.log(2)),
              "auc_uncalibrated": auc(p_val, y_val), "best_epoch": best_epoch, "best_test_accuracy": best,
              "epochs": epochs, "hidden": hidden, "n_train": int(len(xt)), "n_test": int(len(xs)),
              "n_validation": int(len(xv))}
    boot = np.random.default_rng(seed + 1)
    vals = [auc(p_cal[i], y_val[i]) for i in (boot.integers(0, len(y_val), len(y_val)) for _ in range(20))]
    result["auc_bootstrap_std"] = float(np.std(vals, ddof=1))
    return result
