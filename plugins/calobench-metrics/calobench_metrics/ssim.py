"""SSIM (scikit-image) between showers of the same condition bin (3DGAN).

Images are divided by the real sample's largest cell, so ``data_range`` L is relative to
it; the 3DGAN paper scanned L because calorimeter images have a tiny dynamic range where
most cells sit. The value is the mean SSIM(real, generated) at L = 1e-2 over random pairs
(higher is better); the floor is the same between two real samples. Details give, per
bin, real-real, real-generated and generated-generated means (a generator whose
generated-generated SSIM exceeds real-real lacks diversity) and the L scan.
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from calobench import Metric, MetricResult

from .common import condition_bins

L_MAIN = 1e-2
L_SCAN = (1.0, 1e-2, 1e-4)
PAIRS_PER_BIN = 40


def window(shape) -> int | None:
    """The largest odd window <= 7 that fits every axis (None if an axis is thinner than 3)."""
    w = min(7, *shape)
    w = w if w % 2 else w - 1
    return w if w >= 3 else None


def mean_ssim(A, B, ia, ib, L, win) -> tuple:
    vals = [structural_similarity(A[i], B[j], data_range=L, win_size=win) for i, j in zip(ia, ib)]
    return float(np.mean(vals)), float(np.std(vals) / np.sqrt(len(vals)))


class SSIM(Metric):
    name = "ssim"
    higher_is_better = True
    description = "mean SSIM(real, gen) per condition bin, L=1e-2 of max cell"
    min_showers = 10

    def applies_to(self, dataset):
        if window(dataset.geometry.shape) is None or len(dataset.geometry.shape) < 2:
            return f"SSIM needs 2-D/3-D showers with every axis >= 3 cells (shape {dataset.geometry.shape})"
        return None

    def compute(self, real, generated, ctx):
        rng = ctx.rng(3)
        win = window(real.geometry.shape)
        bins = condition_bins(real, generated)
        scale = max(float(max(b.array().max() for b in real.chunks())), 1e-30)
        per_bin, rg_all, unc2 = {}, [], []
        for label, ir, ig in bins:
            k = min(PAIRS_PER_BIN, len(ir), len(ig))
            if k < 2:
                continue
            ir2, ig2 = rng.choice(ir, (2, k)), rng.choice(ig, (2, k))
            Ra = [real.take(i).array() / scale for i in ir2]
            Ga = [generated.take(i).array() / scale for i in ig2]
            idx = np.arange(k)
            rr = mean_ssim(Ra[0], Ra[1], idx, idx, L_MAIN, win)
            rg = mean_ssim(Ra[0], Ga[0], idx, idx, L_MAIN, win)
            gg = mean_ssim(Ga[0], Ga[1], idx, idx, L_MAIN, win)
            scan = {str(L): mean_ssim(Ra[0], Ga[0], idx, idx, L, win)[0] for L in L_SCAN if L != L_MAIN}
            per_bin[label] = {"real_real": rr[0], "real_gen": rg[0], "gen_gen": gg[0], "real_gen_L_scan": scan}
            rg_all.append(rg[0])
            unc2.append(rg[1] ** 2)
        value = float(np.mean(rg_all))
        return MetricResult(value, float(np.sqrt(np.sum(unc2)) / len(unc2)),
                            {"per_condition_bin": per_bin, "data_range": L_MAIN, "win_size": win})
