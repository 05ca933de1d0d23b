"""Plots a physicist expects beside each run record (PNG, written atomically).

Observable histograms real vs generated with a ratio panel, the cell-energy spectrum,
mean shower images per layer, the difference of the observables' correlation matrices,
and the training losses. Plugins add their own through the ``make_plots`` hook.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import atomic_path
from .observables import cell_spectrum, features, mean_image

KEY_OBSERVABLES = ("E_total", "E_ratio", "depth", "depth_width", "width_x", "width_y", "n_hits", "sparsity")


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path) -> str:
    plt = _mpl()
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


def run_plots(plugins, ds, real, generated, outdir, model, history, extra=None) -> list:
    plt = _mpl()
    outdir = Path(outdir) / "plots"
    fr, fg = features(real), features(generated)
    written = []
    names = [k for k in KEY_OBSERVABLES if k in fr]
    fig, axes = plt.subplots(2, len(names), figsize=(3 * len(names), 4), gridspec_kw={"height_ratios": [3, 1]},
                             squeeze=False)
    for j, k in enumerate(names):
        hist_ratio(axes[0, j], axes[1, j], fr[k], fg[k], k)
    written.append(save(fig, outdir / "observables.png"))
    layer_keys = [k for k in fr if k.startswith("E_layer_") or k.startswith("E_group_")]
    if layer_keys:
        fig, axes = plt.subplots(2, len(layer_keys), figsize=(2.5 * len(layer_keys), 4),
                                 gridspec_kw={"height_ratios": [3, 1]}, squeeze=False)
        for j, k in enumerate(layer_keys):
            hist_ratio(axes[0, j], axes[1, j], fr[k], fg[k], k)
        written.append(save(fig, outdir / "layer_energies.png"))
    sr, sg = cell_spectrum(real), cell_spectrum(generated)
    if len(sr) and len(sg):
        fig, axes = plt.subplots(2, 1, figsize=(5, 4), gridspec_kw={"height_ratios": [3, 1]})
        hist_ratio(axes[0], axes[1], sr, sg, f"cell energy [{real.geometry.energy_unit}]", log=True)
        axes[0].set_yscale("log")
        written.append(save(fig, outdir / "cell_spectrum.png"))
    written.append(_mean_images(plt, real, generated, outdir / "mean_images.png"))
    written.append(_correlations(fr, fg, outdir / "correlations.png"))
    if history:
        keys = [k for k in history[0] if k != "step"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        steps = [h["step"] for h in history]
        for k in keys:
            ax.plot(steps, [h.get(k, np.nan) for h in history], label=k, lw=0.8)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        written.append(save(fig, outdir / "losses.png"))
    for paths in plugins.pm.hook.make_plots(dataset=ds.name, real=real, generated=generated, outdir=outdir,
                                            model=model, extra=extra or {}):
        written.extend(str(p) for p in paths or [])
    return written


def _mean_images(plt, real, generated, path):
    g = real.geometry
    mr, mg = mean_image(real), mean_image(generated)
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
    plt = _mpl()
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for ax, m, t in zip(axes, (cr, cg, cg - cr), ("real", "generated", "generated - real")):
        im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(t)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
    fig.colorbar(im, ax=axes, shrink=0.6)
    return save(fig, path)
