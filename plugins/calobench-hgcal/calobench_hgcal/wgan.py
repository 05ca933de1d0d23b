"""HGCAL WGAN (Erdmann, Glombitza, Quast 2019): generator, critic, constrainers.

Our reading of the paper's architecture tables (``width`` = 1; ``width`` scales every
channel count, smaller on CPU):

Generator (input: 10 latent U(-1, 1) + 3 labels: energy, impact x, impact y)
  7 towers, one per layer, each:
    dense 10 -> dense 192 -> reshape 16 x 3 x 4
    -> 3 strided transposed convs, kernel 3, stride 2 ("same"), 16 / 32 / 64 maps:
       6 x 8 -> 12 x 16 -> 24 x 32
  concatenate the towers (7 x 64 channels)
  -> conv 5 x 6 valid (64): 20 x 27               (as the paper's table reads)
  -> conv (3,5) valid (64) -> conv (3,5) valid (32) -> conv 3 x 3 valid (16): 14 x 17
  -> locally connected 3 x 3 valid: 12 x 15 x 7 -> output activation -> dead-cell mask
  The table, read literally, stops at 20 x 27; we keep every literal shape and let the
  three later convs and the locally connected layer (all "valid") bring 20 x 27 to
  12 x 15, which is what the paper's text says they are for.
  Output activation: ReLU (the paper); ``total``: a dense head (13 -> 64 -> 64 -> 1) draws the
  shower's total energy and the ReLU cells become its fractions (CaloFlow's split);
  ``softmax``: the same head, the fractions a softmax over the live cells (no cell is exactly
  zero before the readout threshold, so the tail below it keeps a gradient); with ``total_fit``
  likelihood the head is a Gaussian in log total given the labels, fitted to the real showers' totals by
  maximum likelihood instead of adversarially; or
  ``bounded``: u_max * tanh(relu(h) / u_max), a ReLU near zero (cells start empty, as with the
  paper's ReLU) that saturates at u_max, so no cell can exceed the hottest cell of the
  training data by more than a margin.
  ``leak`` > 0 (relu, total, bounded): the ReLU's output forward, a leaky ReLU's gradient (slope
  ``leak`` below zero) backward, so a cell the generator has switched off still learns whether
  it should carry energy.
Critic: labels -> dense 10 -> dense 180 -> reshape 1 x 12 x 15, concatenated with the
  shower's 7 layers as channels; 5 convs 3 x 3 with layer norm (two with stride 2);
  dense 10; dense 1. No batch norm (it would break the gradient penalty). With
  ``n_summaries`` > 0 the label branch also reads that many shower summaries (the
  ``default`` preset's layer and total energy sums).
Constrainers: 3-D conv regressors with batch norm for energy and for impact (x, y): six
  3 x 3 x 3 convs (two max pools over x, y), flattened, dense n_out; trained
  supervised on real showers, frozen in generator steps.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from calobench.training import relu_leaky_grad

N_LATENT, N_LABELS, N_LAYERS = 10, 3, 7


def act():
    return nn.LeakyReLU(0.2)


def ch(n: int, width: float) -> int:
    return max(4, int(n * width))


class LocallyConnected2d(nn.Module):
    """A conv whose weights are not shared: one kernel per output position ("valid" padding)."""

    def __init__(self, in_ch: int, out_ch: int, in_hw: tuple, k: int):
        super().__init__()
        self.k, self.out_ch = k, out_ch
        self.out_hw = (in_hw[0] - k + 1, in_hw[1] - k + 1)
        n_pos, fan_in = self.out_hw[0] * self.out_hw[1], in_ch * k * k
        self.weight = nn.Parameter(torch.randn(n_pos, fan_in, out_ch) / fan_in**0.5)
        self.bias = nn.Parameter(torch.zeros(out_ch, *self.out_hw))

    def forward(self, x):
        patches = F.unfold(x, self.k)  # [B, in*k*k, positions]
        out = torch.einsum("bfl,lfo->bol", patches, self.weight)
        return out.reshape(len(x), self.out_ch, *self.out_hw) + self.bias


def up(i: int, o: int) -> nn.ConvTranspose2d:
    """Transposed conv, kernel 3, stride 2, "same": doubles height and width."""
    return nn.ConvTranspose2d(i, o, 3, 2, padding=1, output_padding=1)


class Tower(nn.Module):
    def __init__(self, width: float):
        super().__init__()
        self.dense = nn.Sequential(nn.Linear(N_LATENT + N_LABELS, 10), act(), nn.Linear(10, 192), act())
        c16, c32, c64 = ch(16, width), ch(32, width), ch(64, width)
        self.up = nn.Sequential(
            up(16, c16), act(),    # 6 x 8
            up(c16, c32), act(),   # 12 x 16
            up(c32, c64), act(),   # 24 x 32
        )
        self.out_channels = c64

    def forward(self, zl):
        return self.up(self.dense(zl).reshape(-1, 16, 3, 4))


class Generator(nn.Module):
    def __init__(self, mask: torch.Tensor, width: float = 1.0, output: str = "relu", leak: float = 0.0,
                 total_fit: str = "adversarial"):
        super().__init__()
        self.leak = leak
        if total_fit not in ("adversarial", "likelihood"):
            raise ValueError(f"total_fit must be adversarial or likelihood, not {total_fit!r}")
        self.total_fit = total_fit
        if output not in ("relu", "bounded", "total", "softmax"):
            raise ValueError(f"output must be relu, bounded, total or softmax, not {output!r}")
        self.towers = nn.ModuleList(Tower(width) for _ in range(N_LAYERS))
        ct = self.towers[0].out_channels * N_LAYERS
        c64, c32, c16 = ch(64, width), ch(32, width), ch(16, width)
        self.body = nn.Sequential(
            nn.Conv2d(ct, c64, (5, 6)), act(),       # 20 x 27
            nn.Conv2d(c64, c64, (3, 5)), act(),      # 18 x 23
            nn.Conv2d(c64, c32, (3, 5)), act(),      # 16 x 19
            nn.Conv2d(c32, c16, (3, 3)), act(),      # 14 x 17
        )
        self.local = LocallyConnected2d(c16, N_LAYERS, (14, 17), 3)  # 12 x 15 x 7
        self.output = output
        self.register_buffer("mask", mask.float().permute(2, 0, 1)[None])  # [1, 7, 12, 15]
        self.register_buffer("u_max", torch.ones(1))  # the bounded output's ceiling (set from the data)
        if output in ("total", "softmax"):
            # the shower's total energy drawn first (as CaloFlow and CaloDREAM do), the cells as fractions of it
            if total_fit == "likelihood":  # labels -> mean and log spread of log(total / total_ref)
                self.total = nn.Sequential(nn.Linear(N_LABELS, 64), act(), nn.Linear(64, 64), act(), nn.Linear(64, 2))
            else:
                self.total = nn.Sequential(nn.Linear(N_LATENT + N_LABELS, 64), act(), nn.Linear(64, 64), act(),
                                           nn.Linear(64, 1))
            self.register_buffer("total_ref", torch.ones(1))  # mean training total (the cells' units)
            self.register_buffer("cell_unit", torch.ones(1))  # the log transform's unit (2 MIP)

    def forward(self, z, labels):
        zl = torch.cat([z, labels], 1)
        h = self.local(self.body(torch.cat([t(zl) for t in self.towers], 1)))
        if self.output == "softmax":  # fractions: a softmax over the live cells, none exactly zero
            frac = torch.softmax(h.masked_fill(self.mask == 0, -torch.inf).flatten(1), 1).reshape(h.shape)
        else:  # with leak: ReLU forward (dead cells read exactly zero), a leaky ReLU's gradient backward
            h = relu_leaky_grad(h, self.leak)
        if self.output == "bounded":
            h = self.u_max * torch.tanh(h / self.u_max)
        elif self.output in ("total", "softmax"):  # cells = total x fractions, on the log scale log1p(x / unit) / 4
            if self.output == "total":
                h = h * self.mask
                frac = h / (h.sum((1, 2, 3), keepdim=True) + 1e-6)
            total = self.total_ref * torch.exp(self.log_total(z, labels)).reshape(-1, 1, 1, 1)
            h = torch.log1p(total * frac / self.cell_unit) / 4
        return (h * self.mask).permute(0, 2, 3, 1)  # [B, 12, 15, 7]


    def log_total(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """log(total / total_ref) of each shower. adversarial: the head of (z, labels); likelihood: mu +
        sigma x eps with (mu, log sigma) from the labels and eps = sqrt(2) erfinv(z_0) (a standard normal
        number made of the first latent, so a shower is a function of (z, labels) as before); the total is
        detached: the head learns from ``total_nll`` alone, the adversarial loss shapes the fractions."""
        if self.total_fit == "adversarial":
            return self.total(torch.cat([z, labels], 1))[:, 0]
        mu, log_sigma = self.total(labels).unbind(1)
        eps = math.sqrt(2) * torch.erfinv(z[:, 0].clamp(-1 + 1e-6, 1 - 1e-6))
        return (mu + torch.exp(log_sigma) * eps).detach()

    def total_nll(self, labels: torch.Tensor, log_total: torch.Tensor) -> torch.Tensor:
        """Mean Gaussian negative log-likelihood (constant dropped) of real showers' log(total / total_ref)
        under the likelihood head."""
        mu, log_sigma = self.total(labels).unbind(1)
        return (log_sigma + 0.5 * ((log_total - mu) * torch.exp(-log_sigma)) ** 2).mean()


class Critic(nn.Module):
    def __init__(self, width: float = 1.0, n_summaries: int = 0, label_width: int = 10):
        super().__init__()
        c = ch(64, width)
        self.n_summaries = n_summaries
        self.labels = nn.Sequential(nn.Linear(N_LABELS + n_summaries, label_width), act(),
                                    nn.Linear(label_width, 12 * 15), act())

        def block(i, o, stride, hw):
            return [nn.Conv2d(i, o, 3, stride, 1), nn.LayerNorm([o, *hw]), act()]

        self.convs = nn.Sequential(
            *block(N_LAYERS + 1, c, 1, (12, 15)), *block(c, c, 1, (12, 15)), *block(c, 2 * c, 2, (6, 8)),
            *block(2 * c, 2 * c, 1, (6, 8)), *block(2 * c, 2 * c, 2, (3, 4)),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * c * 12, 10), act(), nn.Linear(10, 1))

    def forward(self, x, labels, summaries=None):
        if self.n_summaries:
            labels = torch.cat([labels, summaries], 1)
        lab = self.labels(labels).reshape(-1, 1, 12, 15)
        return self.head(self.convs(torch.cat([x.permute(0, 3, 1, 2), lab], 1)))


class Constrainer(nn.Module):
    """3-D conv regressor with batch norm: shower [B, 12, 15, 7] -> n_out labels.

    Six 3 x 3 x 3 convs in pairs (c, c, pool, 2c, 2c, pool, 4c, 4c) with max pooling over
    x, y only (12 x 15 -> 6 x 7 -> 3 x 3; the 7 layers stay), then flattened: the position
    of the energy in the image reaches the dense layers (a global average would drop it).
    """

    def __init__(self, n_out: int, width: float = 1.0):
        super().__init__()
        c = ch(16, width)

        def block(i, o):
            return [nn.Conv3d(i, o, 3, 1, 1), nn.BatchNorm3d(o), act()]

        self.net = nn.Sequential(
            *block(1, c), *block(c, c), nn.MaxPool3d((2, 2, 1)),
            *block(c, 2 * c), *block(2 * c, 2 * c), nn.MaxPool3d((2, 2, 1)),
            *block(2 * c, 4 * c), *block(4 * c, 4 * c),
            nn.Flatten(), nn.Linear(4 * c * 3 * 3 * N_LAYERS, n_out),
        )

    def forward(self, x):
        return self.net(x[:, None])
