"""The 2018 paper's two claims, as acceptance checks for any model on the air-shower boards.

* Pattern WGAN (``airshower_pattern``): the generator follows the energy label. An AixNet trained
  on real patterns (the ``label_consistency`` metric's) reconstructs the energy of generated
  patterns with a correlation >= 0.9 to the requested energy and a mean relative bias within
  0.10 of its bias on real patterns; and W1(total signal) / std_real(total signal) <= 0.3.
* Refiner (``airshower``, refine task): AixNet trained on refined simulation closes >= 70 % of
  the gap between training on raw simulation and training on data, (RMS_sim - RMS_refined) /
  (RMS_sim - RMS_data) of the relative energy error on the data test half, overall and in every
  energy bin; the uncertainty is a bootstrap over the test showers (the three regressors fixed).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance

from calobench import Check, CheckResult
from calobench.checks import absolute, at_most

from .metrics import E_BINS

CLOSURE = 0.7


class PatternWGANChecks(Check):
    name = "airshower_wgan_paper"
    description = "generated patterns follow the energy label (AixNet correlation >= 0.9, bias within 0.1); W1 <= 0.3"
    datasets = ("airshower_pattern",)
    tasks = ("generate",)
    needs = ("label_consistency",)

    def evaluate(self, ctx):
        d = ctx.metrics["label_consistency"].details
        corr = float(d["correlation_generated"])
        tr = ctx.real.array().reshape(len(ctx.real), -1).sum(1)
        tg = ctx.generated.array().reshape(len(ctx.generated), -1).sum(1)
        return [CheckResult("energy_correlation", corr, ">= 0.9", corr >= 0.9, {"real": float(d["correlation_real"])}),
                absolute("energy_bias", d["real"]["bias"], d["generated"]["bias"], 0.10),
                at_most("w1_total_signal", wasserstein_distance(tr, tg) / tr.std(), 0.3)]


def _rms(pred, true):
    return float(np.sqrt((((pred - true) / true) ** 2).mean()))


def closure(p: dict, sel) -> float:
    a, b, c = (_rms(p[k][sel], p["true"][sel]) for k in ("sim", "refined", "data"))
    return (a - b) / (a - c) if a != c else float("nan")


class RefinerChecks(Check):
    name = "airshower_refiner_paper"
    description = "AixNet trained on refined simulation closes >= 70 % of the sim-to-data gap, overall and per energy bin"
    datasets = ("airshower",)
    tasks = ("refine",)
    needs = ("refinement_utility",)

    def evaluate(self, ctx):
        p = ctx.metrics["refinement_utility"].artifacts["predictions"]
        true = p["true"]
        rng = np.random.default_rng(31)
        bins = [("all", np.ones(len(true), bool))]
        bins += [(f"{E_BINS[b]}-{E_BINS[b + 1]}EeV", (true >= E_BINS[b]) & (true < E_BINS[b + 1]))
                 for b in range(len(E_BINS) - 1)]
        out = []
        for label, sel in bins:
            if sel.sum() < 20:
                continue
            v = closure(p, sel)
            idx = np.flatnonzero(sel)
            boots = [closure(p, rng.choice(idx, len(idx))) for _ in range(100)]
            rms = {f"rms_{k}": _rms(p[k][sel], true[sel]) for k in ("sim", "refined", "data")}
            out.append(CheckResult(f"gap_closed_{label}", v, f">= {CLOSURE:g}", v >= CLOSURE,
                                   {"uncertainty": float(np.nanstd(boots, ddof=1)), "n": int(sel.sum()), **rms}))
        return out
