"""The 3DGAN paper's headline physics, as acceptance checks for any model on the lcd board.

Sampling fraction (sum of cell energies / E_p) within 5 % of real in each of 10 E_p bins from
2 to 500 GeV and in each of the paper's angle bins (62, 90, 118 +- 4 deg); the mean measured
angle error |angle - theta| within 3 deg of real's; the mean number of hits above 0.2 MeV within
20 % of real in each E_p bin.
"""
from __future__ import annotations

import numpy as np
import torch

from calobench import Check
from calobench.checks import absolute, relative

from .plots import THETA_BINS_DEG, THETA_HALF_WIDTH_DEG

E_EDGES = np.linspace(2.0, 500.0, 11)
HIT_THRESHOLD_GEV = 2e-4  # the paper's 0.2 MeV
MIN_SHOWERS = 10


def summary(data) -> dict:
    """Per shower: total energy, hits above 0.2 MeV, measured angle; and the conditions."""
    from .physics import measured_angle

    s, hits, angle = [], [], []
    for b in data.chunks(256):
        a = b.array().astype(np.float64)
        s.append(a.sum((1, 2, 3)))
        hits.append((a > HIT_THRESHOLD_GEV).sum((1, 2, 3)))
        angle.append(measured_angle(torch.as_tensor(a)).numpy())
    return {"sum": np.concatenate(s), "hits": np.concatenate(hits).astype(np.float64),
            "angle": np.concatenate(angle), "energy": np.asarray(data.conditions["energy"], np.float64),
            "theta": np.asarray(data.conditions["theta"], np.float64)}


class LCDPaperChecks(Check):
    name = "lcd_paper"
    description = "sampling fraction within 5 % per E_p and angle bin, angle MAE within 3 deg, hits within 20 %"
    datasets = ("lcd",)

    def evaluate(self, ctx):
        r, g = summary(ctx.real), summary(ctx.generated)
        out = []
        for k in range(len(E_EDGES) - 1):
            lo, hi = E_EDGES[k], E_EDGES[k + 1]
            sr = (r["energy"] >= lo) & (r["energy"] < hi)
            sg = (g["energy"] >= lo) & (g["energy"] < hi)
            if sr.sum() < MIN_SHOWERS or sg.sum() < MIN_SHOWERS:
                continue
            n = {"n_real": int(sr.sum()), "n_generated": int(sg.sum())}
            tag = f"{lo:.0f}-{hi:.0f}GeV"
            out.append(relative(f"sampling_fraction_{tag}", (r["sum"][sr] / r["energy"][sr]).mean(),
                                (g["sum"][sg] / g["energy"][sg]).mean(), 0.05, **n))
            out.append(relative(f"hits_{tag}", r["hits"][sr].mean(), g["hits"][sg].mean(), 0.20, **n))
        for t in THETA_BINS_DEG:
            sr = np.abs(np.degrees(r["theta"]) - t) < THETA_HALF_WIDTH_DEG
            sg = np.abs(np.degrees(g["theta"]) - t) < THETA_HALF_WIDTH_DEG
            if sr.sum() < MIN_SHOWERS or sg.sum() < MIN_SHOWERS:
                continue
            out.append(relative(f"sampling_fraction_theta{t:.0f}", (r["sum"][sr] / r["energy"][sr]).mean(),
                                (g["sum"][sg] / g["energy"][sg]).mean(), 0.05,
                                n_real=int(sr.sum()), n_generated=int(sg.sum())))
        mae_r = np.degrees(np.nanmean(np.abs(r["angle"] - r["theta"])))
        mae_g = np.degrees(np.nanmean(np.abs(g["angle"] - g["theta"])))
        out.append(absolute("angle_mae", mae_r, mae_g, 3.0, "deg"))
        return out
