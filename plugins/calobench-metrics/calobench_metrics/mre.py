"""Mean relative error over histogram bins (3DGAN): (1/N) sum |(R_i - G_i)/R_i| over the
bins of the mean shower shapes along x, y and z and of the sampling-fraction histogram
(E_sum / E_p, 30 bins over the real range), per condition bin, then averaged."""
from __future__ import annotations

import numpy as np

from calobench import Metric, MetricResult
from calobench.observables import features

from .common import floor_or_bootstrap, condition_bins, profiles


def relative_error(r: np.ndarray, g: np.ndarray) -> float:
    ok = r > 0
    return float(np.mean(np.abs((r[ok] - g[ok]) / r[ok]))) if ok.any() else np.nan


def shape_errors(pr, pg, sfr, sfg, edges) -> dict:
    out = {a: relative_error(pr[a].mean(0), pg[a].mean(0)) for a in ("x", "y", "z")}
    if sfr is not None:
        hr, _ = np.histogram(np.clip(sfr, edges[0], edges[-1]), edges)
        hg, _ = np.histogram(np.clip(sfg, edges[0], edges[-1]), edges)
        out["sampling_fraction"] = relative_error(hr / max(hr.sum(), 1), hg / max(hg.sum(), 1))
    return out


class MRE(Metric):
    name = "mre"
    description = "mean relative error of shower shapes and sampling fraction"
    min_showers = 20
    uncertainty_version = 2  # halves near the floor, else null-corrected bootstrap

    def compute(self, real, generated, ctx):
        pr, pg = profiles(real), profiles(generated)
        fr, fg = features(real), features(generated)
        sfr, sfg = fr.get("E_ratio"), fg.get("E_ratio")
        bins = condition_bins(real, generated)

        def value(ir, ig, detail=None, other=(pg, sfg, 2)):
            po, sfo, side = other  # the second sample: generated (bins' generated index) or real (the null)
            # the histogram range from the real showers in hand: part of what varies between samples
            edges = np.linspace(*np.percentile(sfr[ir], [0.5, 99.5]), 31) if sfr is not None else None
            errs = []
            for b in bins:
                label, br, bo = b[0], b[1], b[side]
                sel_r, sel_g = ir[np.isin(ir, br)], ig[np.isin(ig, bo)]
                if len(sel_r) < 5 or len(sel_g) < 5:
                    continue
                e = shape_errors({a: p[sel_r] for a, p in pr.items()}, {a: p[sel_g] for a, p in po.items()},
                                 None if sfr is None else sfr[sel_r], None if sfo is None else sfo[sel_g], edges)
                if detail is not None:
                    detail[label] = e
                errs.append(np.nanmean(list(e.values())))
            return float(np.mean(errs)) if errs else np.nan

        detail = {}
        v = value(np.arange(len(real)), np.arange(len(generated)), detail)
        details = {"per_condition_bin": detail}
        unc = floor_or_bootstrap(value, lambda i1, i2: value(i1, i2, other=(pr, sfr, 1)), len(real),
                                 len(generated), ctx.rng(5), v, details=details)
        return MetricResult(v, unc, details)
