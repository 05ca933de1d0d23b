"""Run plots for the LCD ECAL, as in the 3DGAN paper: sampling fraction vs E_p in theta bins,
shower shapes along x/y/z (linear and log), cell-energy spectrum and sparsity vs threshold,
measured vs input angle, correlation-matrix difference, 2-D projections of example showers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from calobench import Plot
from calobench.plots import correlation_plot, pyplot, save

from .physics import measured_angle

THETA_BINS_DEG = (62.0, 90.0, 118.0)
THETA_HALF_WIDTH_DEG = 4.0
SPECTRUM_EDGES = np.geomspace(1e-6, 10.0, 71)
THRESHOLDS = np.geomspace(1e-6, 1.0, 31)


def summarise(data) -> dict:
    """One pass over the showers: sums, profiles, angles, layer energies, spectrum and sparsity."""
    out = {"sum": [], "angle": [], "layers": [], "x": 0.0, "y": 0.0, "z": 0.0,
           "spectrum": np.zeros(len(SPECTRUM_EDGES) - 1), "above": np.zeros(len(THRESHOLDS)), "cells": 0}
    for b in data.chunks(256):
        a = b.array().astype(np.float64)
        out["sum"].append(a.sum((1, 2, 3)))
        out["angle"].append(measured_angle(torch.as_tensor(a)).numpy())
        out["layers"].append(a.sum((1, 2)))
        out["x"] = out["x"] + a.sum((0, 2, 3))
        out["y"] = out["y"] + a.sum((0, 1, 3))
        out["z"] = out["z"] + a.sum((0, 1, 2))
        hit = a[a > 0]
        out["spectrum"] += np.histogram(hit, SPECTRUM_EDGES)[0]
        out["above"] += (hit[None, :] > THRESHOLDS[:, None]).sum(1) if len(hit) else 0
        out["cells"] += a.size
    for k in ("sum", "angle", "layers"):
        out[k] = np.concatenate(out[k])
    for k in ("x", "y", "z"):
        out[k] = out[k] / max(len(data), 1)
    out["energy"] = data.conditions["energy"]
    out["theta"] = data.conditions["theta"]
    return out


def sampling_fraction_curve(s: dict, sel, edges) -> tuple:
    sf = s["sum"][sel] / s["energy"][sel]
    b = np.digitize(s["energy"][sel], edges) - 1
    mean = np.array([sf[b == k].mean() if (b == k).sum() >= 3 else np.nan for k in range(len(edges) - 1)])
    err = np.array([sf[b == k].std() / np.sqrt((b == k).sum()) if (b == k).sum() >= 3 else np.nan
                    for k in range(len(edges) - 1)])
    return mean, err


def lcd_plots(real, generated, outdir) -> list:
    plt = pyplot()
    outdir = Path(outdir)
    r, g = summarise(real), summarise(generated)
    paths = []
    # 1. sampling fraction vs E_p per theta bin
    edges = np.linspace(2, 500, 11)
    centres = (edges[1:] + edges[:-1]) / 2
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, t in zip(axes, THETA_BINS_DEG):
        for s, name, col in ((r, "real", "k"), (g, "generated", "tab:red")):
            sel = np.abs(np.degrees(s["theta"]) - t) < THETA_HALF_WIDTH_DEG
            m, e = sampling_fraction_curve(s, sel, edges)
            ax.errorbar(centres, m, e, label=name, color=col, marker="o", ms=3, lw=1)
        ax.set_title(f"theta = {t:.0f} +- {THETA_HALF_WIDTH_DEG:.0f} deg")
        ax.set_xlabel("E_p [GeV]")
    axes[0].set_ylabel("sampling fraction (sum / E_p)")
    axes[0].legend()
    paths.append(save(fig, outdir / "lcd_sampling_fraction.png"))
    # 2. shower shapes
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    for j, (k, label) in enumerate((("x", "x cell"), ("y", "y cell"), ("z", "layer"))):
        for row, log in enumerate((False, True)):
            ax = axes[row, j]
            ax.step(np.arange(len(r[k])), r[k], where="mid", color="k", label="real")
            ax.step(np.arange(len(g[k])), g[k], where="mid", color="tab:red", label="generated")
            ax.set_xlabel(label)
            ax.set_ylabel("mean energy [GeV]")
            if log:
                ax.set_yscale("log")
    axes[0, 0].legend()
    paths.append(save(fig, outdir / "lcd_shower_shapes.png"))
    # 3. cell spectrum and sparsity
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for s, name, col in ((r, "real", "k"), (g, "generated", "tab:red")):
        axes[0].stairs(s["spectrum"] / max(s["cells"], 1), SPECTRUM_EDGES, color=col, label=name)
        axes[1].plot(THRESHOLDS, s["above"] / max(s["cells"], 1), color=col, label=name)
    axes[0].set(xscale="log", yscale="log", xlabel="cell energy [GeV]", ylabel="cells per cell")
    axes[1].set(xscale="log", yscale="log", xlabel="threshold [GeV]", ylabel="fraction of cells above")
    axes[0].legend()
    paths.append(save(fig, outdir / "lcd_cell_spectrum_sparsity.png"))
    # 4. measured vs input angle
    fig, ax = plt.subplots(figsize=(6, 5))
    tb = np.linspace(np.radians(60), np.radians(120), 13)
    for s, name, col in ((r, "real", "k"), (g, "generated", "tab:red")):
        idx = np.digitize(s["theta"], tb) - 1
        prof = [np.nanmean(s["angle"][idx == k]) if (idx == k).any() else np.nan for k in range(len(tb) - 1)]
        ax.plot(np.degrees((tb[1:] + tb[:-1]) / 2), np.degrees(prof), marker="o", color=col, label=name)
    ax.plot([60, 120], [60, 120], color="grey", lw=0.5)
    ax.set(xlabel="input theta [deg]", ylabel="measured angle [deg]")
    ax.legend()
    paths.append(save(fig, outdir / "lcd_measured_angle.png"))
    # 5. correlation matrices of (E_p, sum, angle, layer energies)
    def corr(s):
        x = np.column_stack([s["energy"], s["sum"], np.nan_to_num(s["angle"]), s["layers"]]).T
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nan_to_num(np.corrcoef(x))
    labels = ["E_p", "sum", "angle"] + [f"L{i}" for i in range(r["layers"].shape[1])]
    paths.append(correlation_plot(corr(r), corr(g), labels, outdir / "lcd_correlations.png"))
    # 6. 2-D projections of example showers (nearest E_p and theta)
    fig, axes = plt.subplots(4, 3, figsize=(10, 12))
    targets = ((50.0, np.radians(70)), (200.0, np.radians(90)), (400.0, np.radians(110)))
    for j, (E, th) in enumerate(targets):
        for row, (data, name) in enumerate(((real, "real"), (generated, "gen"))):
            c = data.conditions
            i = int(np.argmin(np.abs(c["energy"] - E) / 100 + np.abs(c["theta"] - th)))
            a = data.take([i]).array()[0]
            axes[2 * row, j].imshow(np.log10(a.sum(0) + 1e-6).T, origin="lower", aspect="auto", vmin=-5)
            axes[2 * row, j].set_title(f"{name}: E={c['energy'][i]:.0f} GeV, theta={np.degrees(c['theta'][i]):.0f}: y-layer",
                                       fontsize=7)
            axes[2 * row + 1, j].imshow(np.log10(a.sum(2) + 1e-6).T, origin="lower", vmin=-5)
            axes[2 * row + 1, j].set_title(f"{name}: x-y (log10 GeV)", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    paths.append(save(fig, outdir / "lcd_projections.png"))
    return paths


class LCDPlots(Plot):
    """The 3DGAN paper's validation figures, from one pass over each sample."""

    name = "lcd_physics"
    description = "3DGAN paper figures: sampling fraction, shapes, spectrum, angle, correlations, projections"
    datasets = ("lcd",)
    tasks = ("generate",)

    def make(self, ctx):
        return lcd_plots(ctx.real, ctx.generated, ctx.outdir)
