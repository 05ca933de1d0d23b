"""The cells outside a ``crop``: drawn independently per cell, conditioned on binned conditions.

With ``crop`` the flow generates the central window only. Outside it a calorimeter shower's
cells are the sparse, soft periphery (on lcd 10 % of the hits and 0.5 % of the energy): left
empty, every generated shower would be told apart by its empty border alone. This module
fills them with the simplest model that has the right marginals: per bin of the conditions
(``bins`` quantile bins of each condition, their product), each outside cell is hit with its
training frequency in that bin, and a hit's value is drawn from the bin's empirical
distribution of outside hits (a quantile table, interpolated in log value). It has no
correlations between outside cells or with the window: what the flow learns, it does not.
Buffers only (saved with the weights); fit on the training showers.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

N_QUANTILES = 65


class Periphery(nn.Module):
    def __init__(self, outside: np.ndarray, conditions: dict, bins: int = 5):
        super().__init__()
        self.names = sorted(conditions)
        self.bins = int(bins)
        n_bins = self.bins ** len(self.names)
        self.register_buffer("outside", torch.as_tensor(np.asarray(outside, np.int64)))  # flat cell indices
        self.register_buffer("edges", torch.zeros(len(self.names), max(self.bins - 1, 0), dtype=torch.float64))
        self.register_buffer("p", torch.zeros(n_bins, len(outside)))
        self.register_buffer("log_q", torch.zeros(n_bins, N_QUANTILES))

    def bin_of(self, conditions: dict) -> np.ndarray:
        b = None
        for i, k in enumerate(self.names):
            v = np.asarray(conditions[k], np.float64)
            j = np.searchsorted(self.edges[i].numpy(), v, side="right")
            b = j if b is None else b * self.bins + j
        return np.zeros(len(next(iter(conditions.values()))), np.int64) if b is None else b.astype(np.int64)

    def fit(self, chunks, conditions: dict) -> None:
        """``chunks``: an iterable of [n, cells...] arrays of the training showers, in the order of
        ``conditions``."""
        for i, k in enumerate(self.names):
            v = np.asarray(conditions[k], np.float64)
            self.edges[i] = torch.as_tensor(np.quantile(v, np.linspace(0, 1, self.bins + 1)[1:-1]))
        b_all = self.bin_of(conditions)
        out = self.outside.numpy()
        hits = np.zeros(self.p.shape, np.float64)
        count = np.bincount(b_all, minlength=len(self.p)).astype(np.float64)
        values = [[] for _ in range(len(self.p))]
        start = 0
        for x in chunks:
            x = np.asarray(x).reshape(len(x), -1)[:, out]
            b = b_all[start: start + len(x)]
            start += len(x)
            onehot = np.zeros((len(x), len(self.p)), np.float32)
            onehot[np.arange(len(x)), b] = 1
            hits += onehot.T @ (x > 0).astype(np.float32)  # hit counts per bin and cell
            for k in np.unique(b):
                v = x[b == k]
                values[k].append(v[v > 0])
        self.p.copy_(torch.as_tensor(hits / np.maximum(count, 1)[:, None]))
        u = np.linspace(0, 1, N_QUANTILES)
        for k, v in enumerate(values):
            v = np.concatenate(v) if v else np.zeros(0)
            self.log_q[k] = torch.as_tensor(np.quantile(np.log(v), u) if len(v) else np.full(N_QUANTILES, -np.inf))

    def sample(self, conditions: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n, outside cells] float32: zeros and independently drawn hits."""
        b = torch.as_tensor(self.bin_of(conditions))
        p, log_q = self.p.cpu()[b], self.log_q.cpu()[b]
        hit = torch.rand(p.shape, generator=generator) < p
        u = torch.rand(p.shape, generator=generator) * (N_QUANTILES - 1)
        lo = u.floor().long().clamp(max=N_QUANTILES - 2)
        w = u - lo
        q = torch.gather(log_q, 1, lo) * (1 - w) + torch.gather(log_q, 1, lo + 1) * w
        return torch.where(hit, torch.exp(q), torch.zeros_like(q)).float()
