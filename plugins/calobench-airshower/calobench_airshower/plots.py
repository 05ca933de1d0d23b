"""Air-shower run plots: example patterns per energy; paired-event traces (seed's Fig. 5);
reconstructed vs true energy for AixNet trained on (a) simulation, (b) refined, (c) data."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from calobench import Plot
from calobench.plots import pyplot, save

from .simulator import DT_NS


def patterns(real, generated, outdir) -> str:
    plt = pyplot()
    energies = (10, 30, 70, 100)
    fig, axes = plt.subplots(2, len(energies), figsize=(3.2 * len(energies), 6.4))
    for j, E in enumerate(energies):
        for row, (d, name) in enumerate(((real, "real"), (generated, "generated"))):
            i = int(np.argmin(np.abs(d.conditions["energy"] - E)))
            img = d.take([i]).array()[0]
            axes[row, j].imshow(np.log10(img.T + 1), origin="lower", vmin=0)
            axes[row, j].set_title(f"{name}, {d.conditions['energy'][i]:.0f} EeV", fontsize=8)
            axes[row, j].set_xticks([]), axes[row, j].set_yticks([])
    return save(fig, Path(outdir) / "airshower_patterns.png")


def paired_traces(data, sim, refined, outdir) -> str:
    """The largest-signal station and a neighbour of one paired event: data, simulation, refined."""
    plt = pyplot()
    event = int(np.argmin(np.abs(data.conditions["energy"] - 30)))
    d, s, r = (x.take([event]).array()[0] for x in (data, sim, refined))
    tot = d.sum(-1)
    i, j = np.unravel_index(np.argmax(tot), tot.shape)
    nb = (min(i + 1, 8), j)
    t = np.arange(d.shape[-1]) * DT_NS
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (a, b), title in zip(axes, ((i, j), nb), ("largest signal", "neighbour")):
        for trace, name, col in ((d, "data", "k"), (s, "simulation", "tab:blue"), (r, "refined", "tab:red")):
            ax.step(t, trace[a, b], where="post", label=name, color=col, lw=0.9)
        ax.set_xlabel("time [ns]"), ax.set_ylabel("signal [VEM]")
        ax.set_title(f"{title}: station ({a},{b}), E = {data.conditions['energy'][event]:.0f} EeV", fontsize=9)
        ax.legend(fontsize=8)
    return save(fig, Path(outdir) / "airshower_paired_traces.png")


LABELS = {"sim": "(a) trained on simulation", "refined": "(b) trained on refined", "data": "(c) trained on data"}


def energy_reconstruction(pred: dict, outdir) -> str:
    """E_rec vs E on the data test half, one panel per training sample, with the median and the
    16-84 % band of E_rec / E in bins of E (the refinement-utility metric's predictions)."""
    plt = pyplot()
    true = pred["true"]
    keys = [k for k in LABELS if k in pred]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 4), squeeze=False, sharey=True)
    edges = np.geomspace(1, 100, 9)
    mid = np.sqrt(edges[1:] * edges[:-1])
    which = np.digitize(true, edges[1:-1])
    hi = max(100.0, float(max(np.percentile(pred[k], 99.5) for k in keys)))
    for ax, k in zip(axes[0], keys):
        ax.scatter(true, pred[k], s=2, alpha=0.3, color="tab:blue", rasterized=True)
        q = np.array([np.percentile(pred[k][which == b], (16, 50, 84)) if (which == b).sum() >= 5 else [np.nan] * 3
                      for b in range(len(mid))])
        ax.fill_between(mid, q[:, 0], q[:, 2], color="tab:orange", alpha=0.3, label="16-84 %")
        ax.plot(mid, q[:, 1], color="tab:orange", label="median")
        ax.plot([1, 100], [1, 100], "k--", lw=0.8)
        ax.set_xscale("log"), ax.set_yscale("log"), ax.set_xlim(1, 100), ax.set_ylim(0.5, hi)
        ax.set_xlabel("true energy [EeV]"), ax.set_title(LABELS[k], fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
    axes[0, 0].set_ylabel("reconstructed energy [EeV]")
    return save(fig, Path(outdir) / "airshower_energy_reconstruction.png")


class PatternPlot(Plot):
    name = "airshower_patterns"
    description = "example signal patterns per energy, real and generated"
    datasets = ("airshower_pattern",)
    tasks = ("generate",)

    def make(self, ctx):
        return [patterns(ctx.real, ctx.generated, ctx.outdir)]


class PairedTracePlot(Plot):
    name = "airshower_paired_traces"
    description = "one paired event's traces: data, simulation, refined (the seed's Fig. 5)"
    datasets = ("airshower",)
    tasks = ("refine",)

    def make(self, ctx):
        return [paired_traces(ctx.real, ctx.model.dataset.load("test"), ctx.generated, ctx.outdir)]


class EnergyReconstructionPlot(Plot):
    name = "airshower_energy_reconstruction"
    description = "AixNet E_rec vs E for (a) simulation, (b) refined, (c) data training"
    datasets = ("airshower",)
    tasks = ("refine",)
    needs = ("refinement_utility",)

    def make(self, ctx):
        return [energy_reconstruction(ctx.metrics["refinement_utility"].artifacts["predictions"], ctx.outdir)]


PLOTS = (PatternPlot, PairedTracePlot, EnergyReconstructionPlot)
