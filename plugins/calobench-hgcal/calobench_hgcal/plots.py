"""Run plots for HGCAL: per-energy observables (70 GeV hold-out included), occupancy maps,
constrainer response, example showers, correlations."""
from __future__ import annotations


import numpy as np

from calobench.observables import features
from calobench import Plot, ShowerData
from calobench.plots import hist_ratio, pyplot, save

from .simulator import LAYER_X0

OBS = (("E_total", "total energy [MIP]"), ("depth", "shower depth [X0]"), ("n_hits", "hits > 2 MIP"),
       ("width_x", "transverse spread x [mm]"))


def energy_groups(data) -> list:
    e = data.conditions["energy"]
    return [(E, np.abs(e - E) < 0.05 * E) for E in np.unique(np.round(e, -1 if e.max() > 10 else 0))]


def nominal(data):
    e = data.conditions["energy"]
    out = []
    for E in (20, 32, 50, 70, 80, 90):
        sel = np.abs(e - E) < 0.05 * E
        if sel.sum() >= 20:
            out.append((E, sel))
    return out


def per_energy(plt, real, generated, path):
    fr, fg = features(real), features(generated)
    groups = [(E, s, s) for E, s in nominal(real)]
    fig, axes = plt.subplots(2 * len(OBS), len(groups), figsize=(3 * len(groups), 3 * len(OBS)),
                             gridspec_kw={"height_ratios": [3, 1] * len(OBS)}, squeeze=False)
    for j, (E, sr, sg) in enumerate(groups):
        for i, (k, label) in enumerate(OBS):
            hist_ratio(axes[2 * i, j], axes[2 * i + 1, j], fr[k][sr], fg[k][sg], label)
            axes[2 * i, j].set_title(f"{E} GeV", fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def occupancy(plt, real, generated, path):
    fig, axes = plt.subplots(2, 7, figsize=(16, 5))
    for row, (d, name) in enumerate(((real, "real"), (generated, "generated"))):
        occ = (d.array() > 0).mean(0)
        for l in range(7):
            axes[row, l].imshow(occ[:, :, l].T, origin="lower", vmin=0, vmax=1)
            axes[row, l].set_title(f"{name} L{l} ({LAYER_X0[l]} X0)", fontsize=7)
            axes[row, l].set_xticks([]), axes[row, l].set_yticks([])
    return save(fig, path)


def constrainers(plt, model, real, generated, path):
    rr, rg = model.reconstruct(real.array()), model.reconstruct(generated.array())
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, c in zip(axes, ("energy", "impact_x", "impact_y")):
        ax.scatter(real.conditions[c], rr[c], s=1, alpha=0.3, label="real", color="k")
        ax.scatter(generated.conditions[c], rg[c], s=1, alpha=0.3, label="generated", color="tab:red")
        lo, hi = np.percentile(real.conditions[c], [0, 100])
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.5)
        ax.set_xlabel(f"{c} label"), ax.set_ylabel(f"{c} reconstructed by the constrainer")
        ax.legend(fontsize=7, markerscale=8)
    return save(fig, path)


def examples(plt, real, generated, path, n=3):
    fig, axes = plt.subplots(2, n, figsize=(3 * n, 6))
    for row, (d, name) in enumerate(((real, "real"), (generated, "generated"))):
        for j in range(n):
            img = d.take([j]).array()[0].sum(-1)
            axes[row, j].imshow(np.log10(img.T + 1), origin="lower")
            axes[row, j].set_title(f"{name}, {d.conditions['energy'][j]:.0f} GeV", fontsize=8)
            axes[row, j].set_xticks([]), axes[row, j].set_yticks([])
    return save(fig, path)


def correlations(plt, real, generated, path):
    fr, fg = features(real), features(generated)
    keys = [f"E_layer_{l}" for l in range(7)]
    cr = np.corrcoef(np.stack([fr[k] for k in keys]))
    cg = np.corrcoef(np.stack([fg[k] for k in keys]))
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, m, t in zip(axes[:2], (cr, cg - cr), ("layer-sum correlation, real", "generated - real")):
        im = ax.imshow(m, vmin=-1 if "-" in t else 0, vmax=1, cmap="RdBu_r")
        ax.set_title(t, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.7)
    for ax, (k, label) in zip(axes[2:], (("depth", "depth [X0]"), ("n_hits", "hits"))):
        ax.scatter(fr["E_total"], fr[k], s=1, alpha=0.3, color="k", label="real")
        ax.scatter(fg["E_total"], fg[k], s=1, alpha=0.3, color="tab:red", label="generated")
        ax.set_xlabel("total energy [MIP]"), ax.set_ylabel(label)
        ax.legend(fontsize=7, markerscale=8)
    return save(fig, path)


def _with_holdout(ctx):
    """(real, generated) with the 70 GeV interpolation hold-out beside the training energies."""
    if "interp70" not in ctx.extra:
        return ctx.real, ctx.generated
    r70, g70 = ctx.extra["interp70"]

    def join(a, b):
        return ShowerData(np.concatenate([a.array(), b.array()]),
                          {k: np.concatenate([a.conditions[k], b.conditions[k]]) for k in a.conditions}, a.geometry)

    return join(ctx.real, r70), join(ctx.generated, g70)


class HGCALPlot(Plot):
    datasets = ("hgcal",)
    tasks = ("generate",)


class PerEnergyPlot(HGCALPlot):
    name = "hgcal_per_energy"
    description = "energy, depth, hits and spread per beam energy (70 GeV hold-out included)"

    def make(self, ctx):
        real, generated = _with_holdout(ctx)
        return [per_energy(pyplot(), real, generated, ctx.outdir / "hgcal_per_energy.png")]


class OccupancyPlot(HGCALPlot):
    name = "hgcal_occupancy"
    description = "cell occupancy maps per layer"

    def make(self, ctx):
        return [occupancy(pyplot(), ctx.real, ctx.generated, ctx.outdir / "hgcal_occupancy.png")]


class ExamplesPlot(HGCALPlot):
    name = "hgcal_examples"
    description = "example showers, real and generated"

    def make(self, ctx):
        return [examples(pyplot(), ctx.real, ctx.generated, ctx.outdir / "hgcal_examples.png")]


class CorrelationsPlot(HGCALPlot):
    name = "hgcal_correlations"
    description = "layer-sum correlations; depth and hits vs total energy"

    def make(self, ctx):
        return [correlations(pyplot(), ctx.real, ctx.generated, ctx.outdir / "hgcal_correlations.png")]


class ConstrainerPlot(HGCALPlot):
    name = "hgcal_constrainers"
    description = "the WGAN's constrainer reconstruction of energy and impact point, real vs generated"

    def make(self, ctx):
        if not hasattr(ctx.model, "reconstruct"):
            return []
        return [constrainers(pyplot(), ctx.model, ctx.real.head(3000), ctx.generated.head(3000),
                             ctx.outdir / "hgcal_constrainers.png")]


PLOTS = (PerEnergyPlot, OccupancyPlot, ExamplesPlot, CorrelationsPlot, ConstrainerPlot)
