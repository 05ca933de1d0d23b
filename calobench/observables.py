"""Physics observables shared by metrics and plots.

All take a :class:`ShowerData` (any geometry) and work in blocks, so lazily read datasets
never need to fit in memory. Positions are cell centres, ``(i + 0.5 - n/2) * cell_size``;
depths are ``geometry.layer_depths()`` (e.g. X0). With more than ``MAX_LAYERS`` layers
(time traces) the per-layer observables are computed on ``LAYER_GROUPS`` contiguous groups.
"""
from __future__ import annotations

import numpy as np

from .data import ShowerData

MAX_LAYERS = 30
LAYER_GROUPS = 10


def as_xyl(block: np.ndarray, geometry) -> np.ndarray:
    """[n, *shape] -> [n, X, Y, L] float64: two transverse axes then the layer axis (a flat or
    layerless geometry gets singleton axes; extra transverse axes are folded into Y)."""
    a = block.astype(np.float64, copy=False)
    if geometry.layer_axis is not None and a.ndim > 2:
        a = np.moveaxis(a, 1 + geometry.layer_axis, -1)
    else:
        a = a[..., None]
    while a.ndim < 4:
        a = a[:, :, None, ...] if a.ndim == 3 else a[..., None]
    if a.ndim > 4:  # fold extra transverse axes into Y
        a = a.reshape(a.shape[0], a.shape[1], -1, a.shape[-1])
    return a


def _transverse_sizes(geometry):
    axes = [i for i in range(len(geometry.shape)) if i != geometry.layer_axis] or [0]
    cs = [geometry.cell_size[i] for i in axes] + [1.0, 1.0]
    return cs[0], cs[1]


def layer_groups(n_layers: int) -> np.ndarray:
    """Start indices of the layer groups used for per-layer observables."""
    if n_layers <= MAX_LAYERS:
        return np.arange(n_layers)
    return np.linspace(0, n_layers, LAYER_GROUPS, endpoint=False).astype(int)


def _safe_div(a, b):
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def block_features(block: np.ndarray, geometry, conditions: dict | None = None) -> dict:
    """Per-shower observables of one in-memory block ``[n, *shape]``."""
    if geometry.binning is not None:
        return binned_features(block, geometry, conditions)
    a = as_xyl(block, geometry)
    n, X, Y, L = a.shape
    csx, csy = _transverse_sizes(geometry)
    xs = (np.arange(X) + 0.5 - X / 2) * csx
    ys = (np.arange(Y) + 0.5 - Y / 2) * csy
    starts = layer_groups(L)
    layer_e_full = a.sum((1, 2))  # [n, L]
    E = layer_e_full.sum(1)
    z = geometry.layer_depths() if geometry.layer_axis is not None and len(geometry.layer_depths()) == L \
        else np.arange(L, dtype=np.float64)
    out = {"E_total": E}
    depth = _safe_div((layer_e_full * z).sum(1), E)
    out["depth"] = depth
    out["depth_width"] = np.sqrt(np.clip(_safe_div((layer_e_full * z**2).sum(1), E) - depth**2, 0, None))
    ex, ey = a.sum(2), a.sum(1)  # [n, X, L], [n, Y, L]
    for name, e_ax, pos in (("x", ex, xs), ("y", ey, ys)):
        tot = e_ax.sum(2)
        m = _safe_div((tot * pos).sum(1), E)
        out[f"cog_{name}"] = m
        out[f"width_{name}"] = np.sqrt(np.clip(_safe_div((tot * pos**2).sum(1), E) - m**2, 0, None))
    # per layer (or layer group)
    layer_e = np.add.reduceat(layer_e_full, starts, axis=1)
    exg, eyg = np.add.reduceat(ex, starts, axis=2), np.add.reduceat(ey, starts, axis=2)
    maxg = np.maximum.reduceat(a.max((1, 2)), starts, axis=1)
    tag = "layer" if L <= MAX_LAYERS else "group"
    for j in range(len(starts)):
        le = layer_e[:, j]
        out[f"E_{tag}_{j}"] = le
        out[f"max_cell_{tag}_{j}"] = maxg[:, j]
        for name, e_ax, pos in (("x", exg, xs), ("y", eyg, ys)):
            m = _safe_div((e_ax[:, :, j] * pos).sum(1), le)
            out[f"width_{name}_{tag}_{j}"] = np.sqrt(np.clip(_safe_div((e_ax[:, :, j] * pos**2).sum(1), le) - m**2, 0, None))
    hit = a > max(geometry.threshold, 0.0)
    out["n_hits"] = hit.sum((1, 2, 3)).astype(np.float64)
    active = X * Y * L if geometry.mask is None else int(geometry.mask.sum())
    out["sparsity"] = 1.0 - out["n_hits"] / max(active, 1)
    if conditions and "energy" in conditions:
        out["E_ratio"] = _safe_div(E, np.asarray(conditions["energy"], dtype=np.float64))
    return out


def _weighted_moments(e: np.ndarray, pos: np.ndarray, total: np.ndarray) -> tuple:
    """Energy-weighted mean and spread of ``pos`` ([V] or [n, V]) over the voxels of ``e`` [n, V]."""
    m = _safe_div((e * pos).sum(1), total)
    w = np.sqrt(np.clip(_safe_div((e * pos**2).sum(1), total) - m**2, 0, None))
    return m, w


def binned_features(block: np.ndarray, geometry, conditions: dict | None = None) -> dict:
    """Observables of a cylindrical (binned) geometry, as the CaloChallenge defines them: per layer
    the energy, the centre of energy and width in x = r cos(alpha) and y = r sin(alpha) (layers
    binned in alpha only), in r, the largest voxel and the sparsity (fraction of voxels without a
    hit); for the shower the total energy, depth, centre and width in x/y, hits and sparsity.
    Per-layer names carry the binning's own layer ids (e.g. ``E_layer_12``). A hit is a voxel at
    or above the readout threshold (the challenge zeroes voxels below it), or above 0 without one."""
    a = np.asarray(block, dtype=np.float64).reshape(len(block), -1)
    vc = geometry.voxel_centres()
    thr = max(float(geometry.threshold), 0.0)
    hit = (a >= thr) & (a > 0) if thr > 0 else a > 0
    E = a.sum(1)
    out = {"E_total": E}
    z = geometry.layer_depths()
    layer_e = np.stack([a[:, vc["layer"] == i].sum(1) for i in range(geometry.n_layers)], 1)
    out["depth"], out["depth_width"] = _weighted_moments(layer_e, z, E)
    for name in ("x", "y"):
        out[f"cog_{name}"], out[f"width_{name}"] = _weighted_moments(a, vc[name], E)
    for i, b in enumerate(geometry.binning):
        sel = vc["layer"] == i
        e, le, tag = a[:, sel], layer_e[:, i], b["layer"]
        out[f"E_layer_{tag}"] = le
        out[f"max_cell_layer_{tag}"] = e.max(1)
        if b["n_alpha"] > 1:
            for name in ("x", "y"):
                out[f"cog_{name}_layer_{tag}"], out[f"width_{name}_layer_{tag}"] = _weighted_moments(e, vc[name][sel], le)
        out[f"cog_r_layer_{tag}"], out[f"width_r_layer_{tag}"] = _weighted_moments(e, vc["r"][sel], le)
        out[f"sparsity_layer_{tag}"] = 1.0 - hit[:, sel].mean(1)
    out["n_hits"] = hit.sum(1).astype(np.float64)
    out["sparsity"] = 1.0 - out["n_hits"] / a.shape[1]
    if conditions and "energy" in conditions:
        out["E_ratio"] = _safe_div(E, np.asarray(conditions["energy"], dtype=np.float64))
    return out


def features(data: ShowerData) -> dict:
    """Per-shower observables for a whole dataset, computed block by block (cached on ``data``)."""
    if "features" not in data.cache:
        parts = [block_features(b.array(), data.geometry, b.conditions) for b in data.chunks()]
        data.cache["features"] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    return data.cache["features"]


def binned_profile_index(geometry) -> tuple:
    """Binned geometries: per voxel the index of its radial bin on the union of every layer's edges,
    and of its angular bin on the union of the alpha mid-points; with the two axes' centres."""
    vc = geometry.voxel_centres()
    edges = np.unique(np.concatenate([b["r_edges"] for b in geometry.binning]))
    ri = np.clip(np.searchsorted(edges, vc["r"]) - 1, 0, len(edges) - 2)
    alphas, ai = np.unique(np.round(vc["alpha"], 9), return_inverse=True)
    return ri, ai, (edges[:-1] + edges[1:]) / 2, alphas


def profiles(data: ShowerData) -> dict:
    """Per-shower energy profiles ``{axis: [N, bins]}`` (cached): along x, y and the layer axis ``z``
    for grids; for binned (cylindrical) geometries ``x`` is the radial profile (energy per radial bin,
    all layers), ``y`` the angular one (per alpha bin) and ``z`` the energy per layer."""
    if "profiles" not in data.cache:
        parts = {"x": [], "y": [], "z": []}
        g = data.geometry
        if g.binning is not None:
            ri, ai, _, _ = binned_profile_index(g)
            li = g.layer_index()
            onehot = {k: np.eye(int(idx.max()) + 1)[idx] for k, idx in (("x", ri), ("y", ai), ("z", li))}
        for b in data.chunks():
            if g.binning is not None:
                a = b.array().reshape(len(b), -1).astype(np.float64)
                for k in parts:
                    parts[k].append(a @ onehot[k])
                continue
            a = as_xyl(b.array(), g)
            parts["x"].append(a.sum((2, 3)))
            parts["y"].append(a.sum((1, 3)))
            parts["z"].append(a.sum((1, 2)))
        data.cache["profiles"] = {k: np.concatenate(v) for k, v in parts.items()}
    return data.cache["profiles"]


def cell_spectrum(data: ShowerData, max_cells: int = 200_000, seed: int = 0) -> np.ndarray:
    """Energies of hit cells (a seeded subsample of at most ``max_cells``)."""
    vals = []
    for b in data.chunks():
        a = b.array()
        vals.append(a[a > 0].astype(np.float64))
    v = np.concatenate(vals) if vals else np.zeros(0)
    if len(v) > max_cells:
        v = np.random.default_rng(seed).choice(v, max_cells, replace=False)
    return v


def mean_image(data: ShowerData) -> np.ndarray:
    total = np.zeros(data.geometry.shape, dtype=np.float64)
    for b in data.chunks():
        total += b.array().sum(0)
    return total / max(len(data), 1)
