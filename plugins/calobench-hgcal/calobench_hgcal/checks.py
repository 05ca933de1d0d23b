"""The HGCAL WGAN paper's headline physics, as acceptance checks for any model on the hgcal board.

Per beam energy (the training energies of the test split and the 70 GeV interpolation hold-out):
the mean response (total visible energy) within 3 % of real, the relative resolution
(sigma/mean of the total energy) within 30 % of real, the mean number of hits within 15 % of
real (the paper's own generator showed a deficit of that size); over the whole test split
W1(E_total) / std_real(E_total) <= 0.3.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance

from calobench import Check
from calobench.checks import at_most, relative
from calobench.observables import features

from .simulator import TRAIN_ENERGIES

HOLDOUT = ("interp70", 70.0)
TOLERANCE = {"response": 0.03, "resolution": 0.30, "hits": 0.15}
MIN_SHOWERS = 20


def per_energy(ctx):
    """(energy, tag, E_total real, E_total generated, hits real, hits generated) per beam energy."""
    pairs = [(E, "", ctx.real, ctx.generated) for E in TRAIN_ENERGIES]
    if HOLDOUT[0] in ctx.extra:
        r, g = ctx.extra[HOLDOUT[0]]
        pairs.append((HOLDOUT[1], " (hold-out)", r, g))
    out = []
    for E, tag, r, g in pairs:
        fr, fg = features(r), features(g)
        sr = np.abs(r.conditions["energy"] - E) < 0.05 * E
        sg = np.abs(g.conditions["energy"] - E) < 0.05 * E
        if sr.sum() >= MIN_SHOWERS and sg.sum() >= MIN_SHOWERS:
            out.append((E, tag, fr["E_total"][sr], fg["E_total"][sg], fr["n_hits"][sr], fg["n_hits"][sg]))
    return sorted(out, key=lambda x: x[0])


class HGCALPaperChecks(Check):
    name = "hgcal_paper"
    description = "response within 3 %, resolution within 30 %, hits within 15 % per energy; W1(E) <= 0.3 std"
    datasets = ("hgcal",)

    def evaluate(self, ctx):
        out = []
        for E, tag, er, eg, hr, hg in per_energy(ctx):
            n = {"n_real": int(len(er)), "n_generated": int(len(eg)), "energy_gev": E}
            out.append(relative(f"response_{E:g}GeV", er.mean(), eg.mean(), TOLERANCE["response"], **n))
            out.append(relative(f"resolution_{E:g}GeV", er.std() / er.mean(), eg.std() / max(eg.mean(), 1e-12),
                                TOLERANCE["resolution"], **n))
            out.append(relative(f"hits_{E:g}GeV", hr.mean(), hg.mean(), TOLERANCE["hits"], **n))
        er, eg = features(ctx.real)["E_total"], features(ctx.generated)["E_total"]
        out.append(at_most("w1_E_total", wasserstein_distance(er, eg) / er.std(), 0.3))
        return out
