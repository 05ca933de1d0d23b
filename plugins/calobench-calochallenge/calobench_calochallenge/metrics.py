"""The ``calochallenge`` protocol as calobench metrics (names ``cc_*``), for binned geometries.

``cc_auc_low`` / ``cc_auc_high``: the challenge's classifier on voxels and on high-level
features (details: JSD, best epoch, uncalibrated AUC); ``cc_fpd`` / ``cc_kpd``: jetnet's FPD
and KPD x 1e3 on the high-level features; ``cc_separation_power``: the mean separation power
over the challenge's histograms (details: each one). Smoke runs (``ctx.quick``) train the
classifier 3 epochs with 256 hidden units, and draw FPD's batches at 500-1 000 showers (5 per
size, 3 sizes) and KPD's at 500 (the challenge's KPD alone is ~2 TFLOP: 10 kernel matrices of
10 000 x 10 000, minutes on a 2-core CPU); every other setting is the challenge's, and only
smoke runs take these shortcuts (they never reach a board).
"""
from __future__ import annotations

import numpy as np

from calobench import Metric, MetricResult

from . import protocol

QUICK = {"epochs": 3, "hidden": 256}
QUICK_FPD = {"min_samples": 500, "max_samples": 1000, "num_batches": 5, "num_points": 3}
QUICK_KPD = {"batch_size": 500}


class _Challenge(Metric):
    protocol = "calochallenge"
    min_showers = 20

    def applies_to(self, dataset):
        if dataset.geometry.binning is None:
            return "the CaloChallenge protocol needs a CaloChallenge (binned, cylindrical) geometry"
        if "energy" not in dataset.conditions:
            return "the CaloChallenge protocol needs the incident energy as condition 'energy'"
        return None


class _Classifier(_Challenge):
    min_showers = 50
    level = "low"

    def compute(self, real, generated, ctx):
        if self.level == "low":
            xr, xg = protocol.low_level(real), protocol.low_level(generated)
        else:
            xr, xg = protocol.high_level(real)[1], protocol.high_level(generated)[1]
        kw = QUICK if ctx.quick else {}
        r = protocol.classifier_test(xr, xg, seed=ctx.seed * 1000 + (21 if self.level == "low" else 22),
                                     device=ctx.device, **kw)
        return MetricResult(r["auc"], r["auc_bootstrap_std"], {**r, "protocol": "calochallenge"})


class AUCLow(_Classifier):
    name = "cc_auc_low"
    description = "CaloChallenge classifier AUC on voxels / E_inc (cls-low; 0.5 = indistinguishable)"
    level = "low"


class AUCHigh(_Classifier):
    name = "cc_auc_high"
    description = "CaloChallenge classifier AUC on high-level features (cls-high)"
    level = "high"


class _Distance(_Challenge):
    """A jetnet distance (``protocol.fpd`` / ``protocol.kpd``) on the challenge's high-level features, x 1e3."""

    quick: dict = {}

    def distance(self, real, gen, **kw):
        raise NotImplementedError

    def compute(self, real, generated, ctx):
        kw = self.quick if ctx.quick else {}
        names, R = protocol.high_level(real)
        v, u = self.distance(R, protocol.high_level(generated)[1], **kw)
        return MetricResult(v * 1e3, u * 1e3, {"protocol": "calochallenge", "seed": 42, **kw,
                                               "n_features": len(names)})


class FPD(_Distance):
    name = "cc_fpd"
    description = "CaloChallenge FPD x1e3 (jetnet fpd, min_samples 10000) on high-level features"
    quick = QUICK_FPD
    distance = staticmethod(protocol.fpd)


class KPD(_Distance):
    name = "cc_kpd"
    description = "CaloChallenge KPD x1e3 (jetnet kpd, batch 10000, degree 4) on high-level features"
    quick = QUICK_KPD
    distance = staticmethod(protocol.kpd)


class SeparationPower(_Challenge):
    name = "cc_separation_power"
    description = "CaloChallenge separation power, mean over its histograms (E_tot/E_inc, layers, shapes, voxels)"

    def compute(self, real, generated, ctx):
        hists = protocol.histograms(real, generated)
        per = {k: protocol.separation_power(a, b, e) for k, (a, b, e) in hists.items()}
        # uncertainty: spread over 10 bootstrap resamples of both samples' showers (voxels excluded: per shower)
        rng = ctx.rng(31)
        vals = []
        for _ in range(10):
            ir, ig = rng.integers(0, len(real), len(real)), rng.integers(0, len(generated), len(generated))
            vals.append(np.mean([protocol.separation_power(a[ir], b[ig], e) if k != "voxel" else per[k]
                                 for k, (a, b, e) in hists.items()]))
        return MetricResult(float(np.mean(list(per.values()))), float(np.std(vals, ddof=1)),
                            {"protocol": "calochallenge", "per_histogram": per, "E_tot/E_inc": per["E_tot/E_inc"]})


METRICS = (AUCLow, AUCHigh, FPD, KPD, SeparationPower)
