"""HGCAL WGAN (Erdmann, Glombitza, Quast 2019): generator, critic, constrainers.

Generator (input: 10 latent U(-1, 1) + 3 labels: energy, impact x, impact y)
  7 towers, one per layer, each:
    dense 10 -> dense 192 -> reshape 16 x 3 x 4
    -> 3 strided transposed convs (k4 s2): 6 x 8 -> 12 x 16 -> 24 x 32
    -> conv 5 x 6 "valid": 20 x 27                     (as the paper's table reads)
  concatenate the towers (channels)
  -> conv (3,5) valid -> conv (3,5) valid -> conv (3,3) valid: 14 x 17
  -> locally connected 3 x 3 valid: 12 x 15 x 7 -> ReLU -> dead-cell mask
  The table, read literally, stops at 20 x 27; we keep every literal shape and let the
  three post-concatenation convs and the locally connected layer (all "valid") bring
  20 x 27 to 12 x 15, which is what the paper's text says they are for.
Critic: labels -> dense 64 -> dense 180 -> reshape 1 x 12 x 15, concatenated with the
  shower's 7 layers as channels; 5 convs with layer norm (two with stride 2); dense 10;
  dense 1. No batch norm (it would break the gradient penalty).
Constrainers: 3-D conv regressors with batch norm for energy and for impact (x, y),
  trained supervised on real showers during critic steps, frozen in generator steps.
``width`` scales every channel count: 1 in the ``paper`` preset, smaller on CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_LATENT, N_LABELS, N_LAYERS = 10, 3, 7


def act():
    return nn.LeakyReLU(0.2)


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


class Tower(nn.Module):
    def __init__(self, width: float):
        super().__init__()
        c = max(4, int(64 * width))
        self.dense = nn.Sequential(nn.Linear(N_LATENT + N_LABELS, 10), act(), nn.Linear(10, 192), act())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(16, c, 4, 2, 1), act(),       # 6 x 8
            nn.ConvTranspose2d(c, c, 4, 2, 1), act(),        # 12 x 16
            nn.ConvTranspose2d(c, c // 2, 4, 2, 1), act(),   # 24 x 32
            nn.Conv2d(c // 2, c // 4, (5, 6)), act(),        # 20 x 27
        )
        self.out_channels = c // 4

    def forward(self, zl):
        return self.up(self.dense(zl).reshape(-1, 16, 3, 4))


class Generator(nn.Module):
    def __init__(self, mask: torch.Tensor, width: float = 1.0):
        super().__init__()
        c = max(4, int(64 * width))
        self.towers = nn.ModuleList(Tower(width) for _ in range(N_LAYERS))
        ct = self.towers[0].out_channels * N_LAYERS
        self.body = nn.Sequential(
            nn.Conv2d(ct, c, (3, 5)), act(),          # 18 x 23
            nn.Conv2d(c, c // 2, (3, 5)), act(),      # 16 x 19
            nn.Conv2d(c // 2, c // 4, (3, 3)), act(), # 14 x 17
        )
        self.local = LocallyConnected2d(c // 4, N_LAYERS, (14, 17), 3)  # 12 x 15 x 7
        self.register_buffer("mask", mask.float().permute(2, 0, 1)[None])  # [1, 7, 12, 15]

    def forward(self, z, labels):
        zl = torch.cat([z, labels], 1)
        h = torch.cat([t(zl) for t in self.towers], 1)
        out = F.relu(self.local(self.body(h))) * self.mask
        return out.permute(0, 2, 3, 1)  # [B, 12, 15, 7]


class Critic(nn.Module):
    def __init__(self, width: float = 1.0):
        super().__init__()
        c = max(4, int(64 * width))
        self.labels = nn.Sequential(nn.Linear(N_LABELS, 64), act(), nn.Linear(64, 12 * 15), act())

        def block(i, o, stride, hw):
            return [nn.Conv2d(i, o, 3, stride, 1), nn.LayerNorm([o, *hw]), act()]

        self.convs = nn.Sequential(
            *block(N_LAYERS + 1, c, 1, (12, 15)), *block(c, c, 1, (12, 15)), *block(c, 2 * c, 2, (6, 8)),
            *block(2 * c, 2 * c, 1, (6, 8)), *block(2 * c, 2 * c, 2, (3, 4)),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * c * 12, 10), act(), nn.Linear(10, 1))

    def forward(self, x, labels):
        lab = self.labels(labels).reshape(-1, 1, 12, 15)
        return self.head(self.convs(torch.cat([x.permute(0, 3, 1, 2), lab], 1)))


class Constrainer(nn.Module):
    """3-D conv regressor with batch norm: shower [B, 12, 15, 7] -> n_out labels."""

    def __init__(self, n_out: int, width: float = 1.0):
        super().__init__()
        c = max(4, int(32 * width))

        def block(i, o):
            return [nn.Conv3d(i, o, 3, 1, 1), nn.BatchNorm3d(o), act()]

        self.net = nn.Sequential(
            *block(1, c), *block(c, c), nn.MaxPool3d((2, 2, 1)), *block(c, 2 * c),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2 * c, 64), act(), nn.Linear(64, n_out),
        )

    def forward(self, x):
        return self.net(x[:, None])
