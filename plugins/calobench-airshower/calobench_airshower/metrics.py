"""Air-shower metrics: the refiner's utility for energy reconstruction (the seed's headline)
and the WGAN's label consistency."""
from __future__ import annotations

import numpy as np
import torch

from calobench import Metric, MetricResult

from .aixnet import METRIC_TRAINING, QUICK_TRAINING, cached_regressor, make_aixnet, predict_energy, train_regressor

E_BINS = (1, 10, 30, 60, 100)


def response(pred: np.ndarray, true: np.ndarray) -> dict:
    """Bias (mean), resolution (std) and RMS of the relative error (E_rec - E) / E. The RMS is
    the metrics' value: a resolution alone would reward a regressor that shrinks every energy."""
    d = (pred - true) / true
    out = {"bias": float(d.mean()), "resolution": float(d.std()), "rms": float(np.sqrt((d**2).mean()))}
    which = np.digitize(true, E_BINS[1:-1])
    out["per_energy_bin"] = {f"{E_BINS[b]}-{E_BINS[b + 1]} EeV": {"bias": float(d[which == b].mean()),
                                                                  "resolution": float(d[which == b].std())}
                             for b in range(len(E_BINS) - 1) if (which == b).sum() >= 5}
    return out


def _bootstrap_rms(pred, true, rng, n=20) -> float:
    d = (pred - true) / true
    return float(np.std([np.sqrt((d[rng.integers(0, len(d), len(d))] ** 2).mean()) for _ in range(n)], ddof=1))


def applies(dataset) -> str | None:
    if dataset.geometry.shape != (9, 9, 80) or "energy" not in dataset.conditions:
        return "needs 9x9x80 air-shower traces with an energy label"
    return None


def utility(real, generated, ctx) -> tuple:
    """AixNet trained on (a) raw simulation, (b) the generated (refined) sample, (c) data;
    all evaluated on the same half of the real data test sample. Computed once per scored
    (real, generated) pair: the three metrics (a), (b), (c) share it through ``ctx.shared``.
    Returns (summary for the record, per-shower predictions for the plot)."""
    if "refinement_utility" not in ctx.shared:
        ctx.shared["refinement_utility"] = _utility(real, generated, ctx)
    return ctx.shared["refinement_utility"]


def _utility(real, generated, ctx) -> dict:
    n = len(generated) // 2
    q = ctx.quick
    test = real.take(np.arange(len(real) - min(n, len(real) // 2), len(real)))
    e = test.conditions["energy"]
    out, preds = {"n_train": n, "n_eval": len(test)}, {"true": e}
    rng = ctx.rng(21)
    nets = {"data": cached_regressor(f"{ctx.dataset.key or ctx.dataset.name}-n{n}", ctx.dataset.load("train").head(n),
                                     ctx.seed, q)}
    if ctx.source is not None:
        nets["sim"] = cached_regressor(f"{ctx.source.key or ctx.source.name}-n{n}", ctx.source.load("train").head(n),
                                       ctx.seed, q)
    half = generated.head(n)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        net = make_aixnet(half.geometry.shape)
    nets["refined"] = train_regressor(net, half.array(), half.conditions["energy"], ctx.seed,
                                     **(QUICK_TRAINING if q else METRIC_TRAINING))
    for k, net in nets.items():
        pred = predict_energy(net, test.array())
        out[k] = response(pred, e)
        out[k]["rms_unc"] = _bootstrap_rms(pred, e, rng)
        preds[k] = pred
    return out, preds


class RefinementUtility(Metric):
    """RMS relative energy error, on data, of AixNet trained on the refined simulation: (b)."""

    name = "refinement_utility"
    description = "AixNet trained on refined sim, RMS relative energy error on data (b)"
    min_showers = 200
    key = "refined"

    def applies_to(self, dataset):
        return applies(dataset)

    def compute(self, real, generated, ctx):
        u, predictions = utility(real, generated, ctx)
        if self.key not in u:
            from calobench import CalobenchError

            raise CalobenchError("needs the refine task's source dataset (raw simulation)")
        r = u[self.key]
        return MetricResult(r["rms"], r["rms_unc"], u, artifacts={"predictions": predictions})


class RefinementUtilitySim(RefinementUtility):
    """(a): AixNet trained on raw simulation, evaluated on data (independent of the refiner)."""

    name = "refinement_utility_sim"
    description = "AixNet trained on raw sim, RMS relative energy error on data (a)"
    key = "sim"


class RefinementUtilityData(RefinementUtility):
    """(c): AixNet trained on data, evaluated on data: the best case."""

    name = "refinement_utility_data"
    description = "AixNet trained on data, RMS relative energy error on data (c)"
    key = "data"


def label_regressor(dataset, seed: int, quick: bool = False):
    """The ``label_consistency`` AixNet of a pattern dataset: trained on its first 20 000 training patterns
    (4 000 when ``quick``), cached by the dataset's key and ``seed``."""
    patterns = dataset.load("train").head(4000 if quick else 20000)
    return cached_regressor(f"{dataset.key or dataset.name}-patterns", patterns, seed, quick)


class LabelConsistency(Metric):
    """An AixNet trained on real patterns reconstructs the energy of generated ones: mean over
    energy bins of |bias_gen - bias_real| + |resolution_gen - resolution_real|; the correlation
    of reconstructed and label energies in details."""

    name = "label_consistency"
    description = "AixNet energy response on generated vs real patterns"
    min_showers = 100

    def applies_to(self, dataset):
        if dataset.geometry.shape != (9, 9) or "energy" not in dataset.conditions:
            return "needs 9x9 air-shower patterns with an energy label"
        return None

    def compute(self, real, generated, ctx):
        net = label_regressor(ctx.dataset, ctx.seed, ctx.quick)
        pr, pg = predict_energy(net, real.array()), predict_energy(net, generated.array())
        er, eg = real.conditions["energy"], generated.conditions["energy"]
        rr, rg = response(pr, er), response(pg, eg)

        def value(ir, ig):
            vals = []
            for b in range(len(E_BINS) - 1):
                sr = ir[(er[ir] >= E_BINS[b]) & (er[ir] < E_BINS[b + 1])]
                sg = ig[(eg[ig] >= E_BINS[b]) & (eg[ig] < E_BINS[b + 1])]
                if len(sr) >= 5 and len(sg) >= 5:
                    dr, dg = (pr[sr] - er[sr]) / er[sr], (pg[sg] - eg[sg]) / eg[sg]
                    vals.append(abs(dg.mean() - dr.mean()) + abs(dg.std() - dr.std()))
            return float(np.mean(vals)) if vals else np.nan

        v = value(np.arange(len(er)), np.arange(len(eg)))
        rng = ctx.rng(22)
        boots = [value(rng.integers(0, len(er), len(er)), rng.integers(0, len(eg), len(eg))) for _ in range(20)]
        details = {"real": rr, "generated": rg, "correlation_real": float(np.corrcoef(pr, er)[0, 1]),
                   "correlation_generated": float(np.corrcoef(pg, eg)[0, 1])}
        return MetricResult(v, float(np.nanstd(boots, ddof=1)), details)
