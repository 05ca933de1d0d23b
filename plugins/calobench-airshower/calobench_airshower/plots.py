"""Air-shower run plots: example patterns per energy; paired-event traces (seed's Fig. 5)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from calobench.plots import _mpl, save

from .simulator import DT_NS


def patterns(real, generated, outdir) -> str:
    plt = _mpl()
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
    plt = _mpl()
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
