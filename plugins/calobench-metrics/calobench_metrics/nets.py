"""A small fully connected network and its seeded training loop with early stopping."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from calobench.observables import as_xyl
from calobench.training import fit_early_stopping

MAX_CELLS = 4096


def mlp(n_in: int, n_out: int, hidden: int = 256) -> nn.Sequential:
    """Two hidden layers with LeakyReLU (shaped like the CaloChallenge classifier, smaller: the
    challenge's own network is cc_auc_low in calobench-calochallenge)."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                         nn.Linear(hidden, n_out))


def _binned_low_level(data, max_cells: int) -> np.ndarray:
    """Cylindrical geometries: voxels flat; above ``max_cells``, neighbouring angular bins of every
    layer summed in pairs (an odd count: all of them) until the shower fits."""
    layers = [(b["n_alpha"], len(b["r_edges"]) - 1) for b in data.geometry.binning]
    out = []
    for blk in data.chunks():
        a = blk.array().reshape(len(blk), -1)
        parts, start = [], 0
        for n_a, n_r in layers:
            parts.append(a[:, start:start + n_a * n_r].reshape(len(a), n_a, n_r))
            start += n_a * n_r
        while sum(p.shape[1] * p.shape[2] for p in parts) > max_cells and any(p.shape[1] > 1 for p in parts):
            parts = [p if p.shape[1] == 1 else p.reshape(len(p), p.shape[1] // 2, 2, -1).sum(2)
                     if p.shape[1] % 2 == 0 else p.sum(1, keepdims=True) for p in parts]
        out.append(np.concatenate([p.reshape(len(p), -1) for p in parts], 1).astype(np.float32))
    return np.concatenate(out)


def low_level(data, max_cells: int = MAX_CELLS) -> np.ndarray:
    """Cells as a flat vector, transverse axes average-pooled by 2 until at most ``max_cells``
    (cylindrical geometries: angular bins summed in pairs)."""
    if data.geometry.binning is not None:
        return _binned_low_level(data, max_cells)
    out = []
    for b in data.chunks():
        a = as_xyl(b.array(), data.geometry)
        while a.shape[1] * a.shape[2] * a.shape[3] > max_cells and min(a.shape[1], a.shape[2]) > 1:
            X, Y = a.shape[1] // 2 * 2, a.shape[2] // 2 * 2
            a = a[:, :X, :Y].reshape(len(a), X // 2, 2, Y // 2, 2, a.shape[3]).sum((2, 4))
        out.append(a.reshape(len(a), -1).astype(np.float32))
    return np.concatenate(out)


class Standardise:
    """Zero mean, unit spread per column (constant columns keep scale 1); clipped at +-20 sigma so a
    wild generated shower cannot blow a network up."""

    def __init__(self, x: np.ndarray):
        self.mean = x.mean(0)
        std = x.std(0)
        self.std = np.where(std > 1e-8 * (np.abs(self.mean) + 1e-8), std, 1.0)

    def __call__(self, x):
        return np.clip((x - self.mean) / self.std, -20, 20).astype(np.float32)


def train(net: nn.Module, x_tr, y_tr, x_va, y_va, loss_fn, seed: int, epochs: int = 40, batch: int = 256,
          lr: float = 1e-3, patience: int = 4) -> nn.Module:
    """Adam, early stopping on the held-out loss, best weights restored. Seeded, no global RNG side effect."""
    return fit_early_stopping(net, x_tr, y_tr, x_va, y_va, loss_fn, seed, epochs=epochs, batch=batch, lr=lr,
                              patience=patience, min_delta=1e-5)


def seeded_init(seed: int):
    """Context: build networks with a seeded init without touching the caller's RNG stream."""
    ctx = torch.random.fork_rng(devices=[])
    class _C:
        def __enter__(self):
            ctx.__enter__()
            torch.manual_seed(seed)

        def __exit__(self, *a):
            return ctx.__exit__(*a)

    return _C()
