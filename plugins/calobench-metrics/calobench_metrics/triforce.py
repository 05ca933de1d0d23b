"""Triforce-like network (3DGAN) / constrainer consistency (the WGAN papers).

A regressor trained on the dataset's *real training split only* reconstructs every
condition (energy, impact position, angle...) from a shower: input the shared
observables plus the pooled log-cells. It is trained once per dataset version and seed
and cached under the calobench cache. On real test and on generated showers we compare,
per condition bin, the relative bias and resolution of the reconstructed energy (absolute
bias/resolution for the other conditions). The value is the mean over bins of
|bias_gen - bias_real| + |resolution_gen - resolution_real| of the primary condition
(0 = the generator is as reconstructable as real showers). No dataset here has particle
classes, so the classification head of the 3DGAN paper's Triforce is not built.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from calobench import CalobenchError, Metric, MetricResult, cache_dir
from calobench.training import cached_tensors

from .common import half_spread, condition_bins, feature_table, primary_condition
from .nets import Standardise, low_level, mlp, seeded_init, train

MAX_TRAIN = 30_000
QUICK_TRAIN = 3_000
VERSION = 1


def inputs(data) -> np.ndarray:
    _, F = feature_table(data)
    return np.concatenate([np.log1p(np.abs(F)) * np.sign(F), np.log1p(low_level(data, 1024))], 1).astype(np.float32)


class Regressor:
    def __init__(self, n_in, names, ranges, seed):
        self.names, self.ranges = names, ranges
        with seeded_init(seed):
            self.net = mlp(n_in, len(names), hidden=128)
        self.scale = None

    def targets(self, data):
        return np.stack([(data.conditions[c] - lo) / (hi - lo if hi > lo else 1.0)
                         for c, (lo, hi) in zip(self.names, self.ranges)], 1).astype(np.float32)

    def predict(self, data) -> dict:
        with torch.no_grad():
            y = self.net(torch.as_tensor(self.scale(inputs(data)))).numpy()
        return {c: y[:, j] * (hi - lo if hi > lo else 1.0) + lo for j, (c, (lo, hi)) in enumerate(zip(self.names, self.ranges))}


def trained_regressor(dataset, seed: int, quick: bool = False) -> Regressor:
    """The regressor trained on (up to MAX_TRAIN of) the dataset's train split, cached on disk;
    ``quick`` (smoke runs): QUICK_TRAIN showers and 10 epochs, cached apart."""
    names = list(dataset.conditions)
    if not names:
        raise CalobenchError(f"dataset '{dataset.name}' has no conditions to reconstruct")
    ranges = [tuple(dataset.conditions[c]) for c in names]
    path = Path(cache_dir()) / "metrics" / f"triforce-v{VERSION}-{dataset.key or dataset.name}-seed{seed}{'-quick' if quick else ''}.safetensors"

    def train_once() -> dict:
        train_data = dataset.load("train")
        n = min(len(train_data), QUICK_TRAIN if quick else MAX_TRAIN)
        tr = train_data.head(n)
        x = inputs(tr)
        reg = Regressor(x.shape[1], names, ranges, seed)
        y = reg.targets(tr)
        if "validation" in dataset.splits:
            va = dataset.load("validation").head(1000 if quick else 5000)
            xv, yv = inputs(va), reg.targets(va)
        else:
            k = int(0.85 * n)
            x, xv, y, yv = x[:k], x[k:], y[:k], y[k:]
        reg.scale = Standardise(x)
        train(reg.net, reg.scale(x), y, reg.scale(xv), yv, torch.nn.MSELoss(), seed, epochs=10 if quick else 60, patience=6)
        return {**reg.net.state_dict(), "scale.mean": torch.as_tensor(reg.scale.mean),
                "scale.std": torch.as_tensor(reg.scale.std)}

    st = dict(cached_tensors(path, train_once))
    reg = Regressor(st["scale.mean"].numel(), names, ranges, seed)
    reg.scale = Standardise(np.zeros((2, 1)))
    reg.scale.mean, reg.scale.std = st.pop("scale.mean").numpy(), st.pop("scale.std").numpy()
    reg.net.load_state_dict(st)
    return reg


def response(pred, label, relative: bool) -> tuple:
    d = (pred - label) / label if relative else pred - label
    return float(np.mean(d)), float(np.std(d))


class Triforce(Metric):
    name = "triforce"
    description = "regressor trained on real: |bias/resolution difference| gen vs real"
    min_showers = 50
    uncertainty_version = 2  # from disjoint halves (common.half_spread)

    def applies_to(self, dataset):
        if not dataset.conditions:
            return "dataset has no conditions to reconstruct"
        return None

    def compute(self, real, generated, ctx):
        reg = trained_regressor(ctx.dataset, ctx.seed, ctx.quick)
        pr, pg = reg.predict(real), reg.predict(generated)
        main = primary_condition(real)
        bins = condition_bins(real, generated)

        def value(ir, ig, detail=None):
            diffs = []
            for label, br, bg in bins:
                sr, sg = ir[np.isin(ir, br)], ig[np.isin(ig, bg)]
                if len(sr) < 5 or len(sg) < 5:
                    continue
                rows = {}
                for c in reg.names:
                    rel = c == "energy"
                    br_, rr_ = response(pr[c][sr], real.conditions[c][sr], rel)
                    bg_, rg_ = response(pg[c][sg], generated.conditions[c][sg], rel)
                    rows[c] = {"bias_real": br_, "res_real": rr_, "bias_gen": bg_, "res_gen": rg_}
                    if c == main:
                        diffs.append(abs(bg_ - br_) + abs(rg_ - rr_))
                if detail is not None:
                    detail[label] = rows
            return float(np.mean(diffs)) if diffs else np.nan

        detail = {}
        v = value(np.arange(len(real)), np.arange(len(generated)), detail)
        details = {"per_condition_bin": detail, "conditions": reg.names}
        unc = half_spread(value, len(real), len(generated), ctx.rng(9), v, details=details)
        return MetricResult(v, unc, details)
