"""Plots a physicist expects beside each run record (PNG, written atomically).

A plot is a registered object, like a metric: a subclass of :class:`Plot` that says which
datasets it applies to (``datasets``, by name; empty means any) and which metric results it
reads (``needs``), and writes its figures from a :class:`PlotContext`. The core registers its
own (observable histograms with ratio panels, layer energies, the cell-energy spectrum, mean
shower images, correlation matrices, training losses) through the same ``register_plots``
hook as any plugin. :func:`pyplot`, :func:`save`, :func:`hist_ratio` and
:func:`correlation_plot` are the public helpers plugins draw with.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import atomic_path
from .observables import cell_spectrum, features, mean_image

MAX_PANELS = 12
KEY_OBSERVABLES = ("E_total", "E_ratio", "depth", "depth_width", "width_x", "width_y", "n_hits", "sparsity")


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path) -> str:
    plt = pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def hist_ratio(ax_h, ax_r, real, gen, label, bins=40, log=False):
    """Real vs generated histogram with a gen/real ratio panel underneath."""
    lo, hi = np.percentile(np.concatenate([real, gen]), [0.5, 99.5])
    if log:
        lo = max(lo, 1e-6)
        edges = np.geomspace(lo, max(hi, lo * 10), bins + 1)
    else:
        edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    hr, _ = np.histogram(real, edges, density=True)
    hg, _ = np.histogram(gen, edges, density=True)
    ax_h.stairs(hr, edges, label="real", color="k")
    ax_h.stairs(hg, edges, label="generated", color="tab:red")
    ax_h.set_ylabel("density")
    ax_h.legend(fontsize=7)
    ratio = np.divide(hg, hr, out=np.full_like(hg, np.nan), where=hr > 0)
    ax_r.stairs(ratio, edges, color="tab:red")
    ax_r.axhline(1, color="k", lw=0.5)
    ax_r.set_ylim(0, 2)
    for ax in (ax_h, ax_r):
        ax.set_xlim(edges[0], edges[-1])
    ax_r.set_ylabel("gen/real")
    ax_r.set_xlabel(label)
    if log:
        ax_h.set_xscale("log")
        ax_r.set_xscale("log")


@dataclass
class PlotContext:
    """What a plot may draw from: the dataset, both samples, the run's folder for figures, the
    trained model, the training history, the extra evaluation splits (name -> (real,
    generated)) and the results of this run's metrics (name -> MetricResult, with the
    in-memory ``artifacts`` a metric left for plots)."""

    dataset: object  # DatasetInfo
    real: object  # ShowerData
    generated: object  # ShowerData
    outdir: Path
    model: object = None
    history: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


class Plot:
    """Subclass, set ``name`` (and ``datasets``/``tasks``/``needs``), implement ``make``.

    ``datasets``: the dataset names the plot applies to (empty: any); ``tasks``: the model
    tasks; ``needs``: metric names whose results ``make`` reads from ``ctx.metrics``: the plot
    is skipped with a note when one did not run. ``make(ctx)`` returns the paths it wrote
    (use :func:`save`, which writes atomically). ``applies_to`` may be overridden; it returns
    None or the reason the plot does not apply.
    """

    name: str = ""
    description: str = ""
    datasets: tuple = ()
    tasks: tuple = ("generate", "refine")
    needs: tuple = ()

    def applies_to(self, dataset, task: str = "generate") -> str | None:
        if self.datasets and dataset.name not in self.datasets:
            return f"only for {', '.join(self.datasets)}"
        if task not in self.tasks:
            return f"only for {', '.join(self.tasks)} tasks"
        return None

    def make(self, ctx: PlotContext) -> list:
        raise NotImplementedError


def run_plots(plots, ctx: PlotContext, task: str, step=None, warn=None) -> list:
    """Every applicable plot on ``ctx``; ``step(name)`` is the context manager that turns a
    plot's failure into a CalobenchError (reported through ``warn``, the other plots go on)."""
    from .errors import CalobenchError

    written = []
    for plot in plots:
        if plot.applies_to(ctx.dataset, task) is not None:
            continue
        missing = [m for m in plot.needs if m not in ctx.metrics]
        if missing:
            if warn:
                warn(f"plot '{plot.name}' skipped: metric(s) {', '.join(missing)} did not run")
            continue
        try:
            if step is None:
                paths = plot.make(ctx)
            else:
                with step(f"plot '{plot.name}'"):
                    paths = plot.make(ctx)
        except CalobenchError as exc:
            if warn:
                warn(str(exc))
            continue
        written.extend(str(p) for p in paths or [])
    return written


# -- the core's own plots -------------------------------------------------------
class ObservablePlot(Plot):
    name = "observables"
    description = "key observables, real vs generated, with a ratio panel"

    def make(self, ctx):
        plt = pyplot()
        fr, fg = features(ctx.real), features(ctx.generated)
        names = [k for k in KEY_OBSERVABLES if k in fr]
        fig, axes = plt.subplots(2, len(names), figsize=(3 * len(names), 4), gridspec_kw={"height_ratios": [3, 1]},
                                 squeeze=False)
        for j, k in enumerate(names):
            hist_ratio(axes[0, j], axes[1, j], fr[k], fg[k], k)
        return [save(fig, ctx.outdir / "observables.png")]


class LayerEnergyPlot(Plot):
    name = "layer_energies"
    description = "energy per layer (or layer group), real vs generated"

    def make(self, ctx):
        fr, fg = features(ctx.real), features(ctx.generated)
        keys = [k for k in fr if k.startswith("E_layer_") or k.startswith("E_group_")]
        if not keys:
            return []
        if len(keys) > MAX_PANELS:  # e.g. 45 layers: evenly spaced ones (the profile plot shows them all)
            keys = [keys[i] for i in np.unique(np.linspace(0, len(keys) - 1, MAX_PANELS).astype(int))]
        plt = pyplot()
        fig, axes = plt.subplots(2, len(keys), figsize=(2.5 * len(keys), 4), gridspec_kw={"height_ratios": [3, 1]},
                                 squeeze=False)
        for j, k in enumerate(keys):
            hist_ratio(axes[0, j], axes[1, j], fr[k], fg[k], k)
        return [save(fig, ctx.outdir / "layer_energies.png")]


class CellSpectrumPlot(Plot):
    name = "cell_spectrum"
    description = "spectrum of non-zero cell energies (log-log)"

    def make(self, ctx):
        sr, sg = cell_spectrum(ctx.real), cell_spectrum(ctx.generated)
        if not (len(sr) and len(sg)):
            return []
        plt = pyplot()
        fig, axes = plt.subplots(2, 1, figsize=(5, 4), gridspec_kw={"height_ratios": [3, 1]})
        hist_ratio(axes[0], axes[1], sr, sg, f"cell energy [{ctx.real.geometry.energy_unit}]", log=True)
        axes[0].set_yscale("log")
        return [save(fig, ctx.outdir / "cell_spectrum.png")]


class MeanImagePlot(Plot):
    name = "mean_images"
    description = "mean shower image per layer, real and generated"

    def make(self, ctx):
        return [_mean_images(pyplot(), ctx.real, ctx.generated, ctx.outdir / "mean_images.png")]


class CorrelationPlot(Plot):
    name = "correlations"
    description = "correlation matrices of the observables: real, generated, difference"

    def make(self, ctx):
        return [_correlations(features(ctx.real), features(ctx.generated), ctx.outdir / "correlations.png")]


class ProfilePlot(Plot):
    name = "profiles"
    description = "mean longitudinal (per layer) and transverse (radial, or x) energy profiles with ratios"

    def make(self, ctx):
        g = ctx.real.geometry
        if g.n_layers < 2 and g.binning is None:
            return []
        plt = pyplot()
        fig, axes = plt.subplots(2, 2, figsize=(10, 5), gridspec_kw={"height_ratios": [3, 1]})
        pr, pg = _profiles(ctx.real), _profiles(ctx.generated)
        for j, (key, label) in enumerate((("long", f"layer depth [{g.layer_unit}]"),
                                          ("trans", f"r [{g.length_unit}]" if g.binning else f"x [{g.length_unit}]"))):
            (x, yr), (_, yg) = pr[key], pg[key]
            axes[0, j].plot(x, yr, "k-", drawstyle="steps-mid", label="real")
            axes[0, j].plot(x, yg, "-", color="tab:red", drawstyle="steps-mid", label="generated")
            axes[0, j].set_yscale("log")
            axes[0, j].set_ylabel(f"mean energy [{g.energy_unit}]" + (" / mm" if key == "trans" and g.binning else ""))
            axes[0, j].legend(fontsize=7)
            axes[1, j].plot(x, np.divide(yg, yr, out=np.full_like(yg, np.nan), where=yr > 0), "-", color="tab:red",
                            drawstyle="steps-mid")
            axes[1, j].axhline(1, color="k", lw=0.5)
            axes[1, j].set_ylim(0, 2)
            axes[1, j].set_ylabel("gen/real")
            axes[1, j].set_xlabel(label)
        return [save(fig, ctx.outdir / "profiles.png")]


def _profiles(data) -> dict:
    """Mean energy per layer (at its depth) and per radial bin (binned: per mm of radius, summed over
    layers and angles) or per x column (grids)."""
    from .observables import as_xyl

    g = data.geometry
    if g.binning is not None:
        from .observables import binned_profile_index

        ri, _, r_mid, _ = binned_profile_index(g)
        total = mean_image(data).reshape(-1)
        long = np.bincount(g.layer_index(), weights=total, minlength=g.n_layers)
        edges = np.unique(np.concatenate([b["r_edges"] for b in g.binning]))
        trans = np.bincount(ri, weights=total, minlength=len(r_mid)) / np.diff(edges)
        return {"long": (g.layer_depths(), long), "trans": (r_mid, trans)}
    m = mean_image(data)
    a = as_xyl(m[None], g)[0]
    xs = (np.arange(a.shape[0]) + 0.5 - a.shape[0] / 2) * (g.cell_size[0] if g.cell_size else 1.0)
    depths = g.layer_depths() if len(g.layer_depths()) == a.shape[2] else np.arange(a.shape[2])
    return {"long": (depths, a.sum((0, 1))), "trans": (xs, a.sum((1, 2)))}


class LossPlot(Plot):
    name = "losses"
    description = "training losses logged by the trainer"

    def make(self, ctx):
        if not ctx.history:
            return []
        plt = pyplot()
        keys = [k for k in ctx.history[0] if k != "step"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        steps = [h["step"] for h in ctx.history]
        for k in keys:
            ax.plot(steps, [h.get(k, np.nan) for h in ctx.history], label=k, lw=0.8)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        return [save(fig, ctx.outdir / "losses.png")]


CORE_PLOTS = (ObservablePlot, LayerEnergyPlot, ProfilePlot, CellSpectrumPlot, MeanImagePlot, CorrelationPlot, LossPlot)


def _binned_mean_images(plt, g, mr, mg, path):
    """Mean energy per voxel in (alpha, r) for up to 7 evenly spaced layers, as polar maps (log colour)."""
    from matplotlib.colors import LogNorm

    starts = np.cumsum([0] + [b["n_voxels"] for b in g.binning])
    idx = np.unique(np.linspace(0, len(g.binning) - 1, min(len(g.binning), 7)).astype(int))
    fig, axes = plt.subplots(2, len(idx), figsize=(2.4 * len(idx), 5), subplot_kw={"projection": "polar"},
                             squeeze=False)
    for j, i in enumerate(idx):
        b = g.binning[i]
        n_r = len(b["r_edges"]) - 1
        theta = np.linspace(-np.pi, np.pi, b["n_alpha"] + 1) if b["n_alpha"] > 1 else np.linspace(-np.pi, np.pi, 33)
        for row, (m, who) in enumerate(((mr, "real"), (mg, "gen"))):
            grid = m[starts[i]:starts[i + 1]].reshape(b["n_alpha"], n_r)
            if b["n_alpha"] == 1:
                grid = np.repeat(grid, 32, axis=0)
            lo = max(float(mr[starts[i]:starts[i + 1]].max()) * 1e-4, 1e-12)
            ax = axes[row, j]
            ax.pcolormesh(theta, np.asarray(b["r_edges"]), grid.T + 1e-30, norm=LogNorm(vmin=lo, vmax=max(lo * 10, float(
                mr[starts[i]:starts[i + 1]].max()))))
            ax.set_title(f"{who}, layer {b['layer']}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    return save(fig, path)


def _mean_images(plt, real, generated, path):
    g = real.geometry
    mr, mg = mean_image(real), mean_image(generated)
    if g.binning is not None:
        return _binned_mean_images(plt, g, mr, mg, path)
    if g.layer_axis is not None and mr.ndim == 3:
        mr, mg = np.moveaxis(mr, g.layer_axis, -1), np.moveaxis(mg, g.layer_axis, -1)
        idx = np.unique(np.linspace(0, mr.shape[-1] - 1, min(mr.shape[-1], 7)).astype(int))
        imgs = [(mr[..., i], mg[..., i], f"layer {i}") for i in idx]
    else:
        mr2, mg2 = mr.reshape(mr.shape[0], -1), mg.reshape(mg.shape[0], -1)
        imgs = [(mr2, mg2, "all")]
    fig, axes = plt.subplots(2, len(imgs), figsize=(2.2 * len(imgs), 4.4), squeeze=False)
    for j, (a, b, title) in enumerate(imgs):
        vmax = max(a.max(), b.max(), 1e-12)
        axes[0, j].imshow(a.T, origin="lower", vmin=0, vmax=vmax)
        axes[1, j].imshow(b.T, origin="lower", vmin=0, vmax=vmax)
        axes[0, j].set_title(f"real, {title}", fontsize=8)
        axes[1, j].set_title(f"gen, {title}", fontsize=8)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    return save(fig, path)


def correlation_matrix(f: dict, keys) -> np.ndarray:
    x = np.stack([f[k] for k in keys])
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(x)
    return np.nan_to_num(c)


def _correlations(fr, fg, path):
    keys = [k for k in fr if not k.startswith(("width_x_", "width_y_", "max_cell_"))][:24]
    return correlation_plot(correlation_matrix(fr, keys), correlation_matrix(fg, keys), keys, path)


def correlation_plot(cr: np.ndarray, cg: np.ndarray, labels, path) -> str:
    """Real, generated and (generated - real) correlation matrices side by side."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for ax, m, t in zip(axes, (cr, cg, cg - cr), ("real", "generated", "generated - real")):
        im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(t)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
    fig.colorbar(im, ax=axes, shrink=0.6)
    return save(fig, path)
