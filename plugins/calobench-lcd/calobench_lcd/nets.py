"""The 3DGAN networks (Khattak et al. 2021), written as the paper's layer tables.

Layout: torch ``[N, C, X, Y, Z]`` with X = Y = 51 cells and Z = 25 layers. ``pad`` is the
zero padding (x, y, z) on each side before a 'valid' convolution, as Keras' ZeroPadding3D.
"""
from __future__ import annotations

import torch
from torch import nn

from calobench.training import ReLULeakyGrad

import math

LATENT = 256  # 254 Gaussian numbers + E_p + theta
DENSE_GRID = (8, 9, 9, 8)  # channels, x, y, z after the dense layer (5184 units) for 51 x 51 x 25
UPSAMPLE = 6
SHRINK = (3, 3, 23)  # cells the convolution stack below removes per axis (54 -> 51, 48 -> 25)

#            out ch, kernel (x, y, z), pad before, batch norm
GENERATOR = [
    (8, (6, 6, 8), (0, 0, 0), True),
    (6, (4, 4, 6), (2, 2, 1), True),
    (6, (4, 4, 6), (2, 2, 1), True),
    (6, (4, 4, 6), (2, 2, 1), True),
    (6, (3, 3, 5), (1, 1, 0), True),
    (6, (3, 3, 3), (1, 1, 0), False),
    (1, (2, 2, 2), (0, 0, 0), False),
]  # ReLU after every layer; output 51 x 51 x 25

#            out ch, kernel, pad before ('same' for the first), batch norm
DISCRIMINATOR = [
    (16, (5, 6, 6), "same", False),
    (8, (5, 6, 6), (0, 0, 1), True),
    (8, (5, 6, 6), (0, 0, 1), True),
    (8, (5, 6, 6), (0, 0, 0), True),
]  # LeakyReLU + dropout 0.2 after each; then one 2x2x2 average pool; features 8 x 19 x 18 x 7
BN_EPS = 1e-6


def _pad(p):
    x, y, z = p
    return nn.ConstantPad3d((z, z, y, y, x, x), 0.0)  # torch pads the last axis first


def _ch(c: int, width: float) -> int:
    return c if c == 1 else max(1, round(c * width))


class Generator(nn.Module):
    def __init__(self, width: float = 1.0, shape: tuple = (51, 51, 25), leak: float = 0.0):
        """``leak`` > 0: the output ReLU passes a leaky ReLU's gradient (that slope below zero) back, its
        output unchanged (``calobench.training.relu_leaky_grad``)."""
        super().__init__()
        c0 = _ch(DENSE_GRID[0], width)
        # the paper's grid for 51 x 51 x 25; for another (smaller) shape the smallest grid whose
        # output covers it, centre-cropped at the end (25 x 25 x 25: grid 5 x 5 x 8, output 27 x 27 x 25)
        self.shape = tuple(shape)
        self.grid = (c0,) + tuple(math.ceil((n + k) / UPSAMPLE) for n, k in zip(self.shape, SHRINK))
        self.dense = nn.Linear(LATENT, math.prod(self.grid))
        layers: list = [nn.Upsample(scale_factor=UPSAMPLE, mode="nearest")]
        cin = c0
        for i, (cout, k, pad, bn) in enumerate(GENERATOR):
            cout = _ch(cout, width)
            if any(pad):
                layers.append(_pad(pad))
            conv = nn.Conv3d(cin, cout, k)
            nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu") if cout > 1 else nn.init.xavier_normal_(conv.weight)
            layers += [conv, ReLULeakyGrad(leak) if i == len(GENERATOR) - 1 else nn.ReLU()]
            if bn:
                layers.append(nn.BatchNorm3d(cout, eps=BN_EPS))
            cin = cout
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` [N, 256] (E_p/100, theta, noise) -> image in the network's scale [N, *shape]."""
        h = self.dense(z).reshape(len(z), *self.grid)
        out = self.body(h)[:, 0]
        lo = [(o - n) // 2 for o, n in zip(out.shape[1:], self.shape)]
        return out[:, lo[0]:lo[0] + self.shape[0], lo[1]:lo[1] + self.shape[1], lo[2]:lo[2] + self.shape[2]]


class Discriminator(nn.Module):
    """Features -> real/fake probability and the E_p regression; the physics heads are not here
    (they are computed from the image, not learned)."""

    def __init__(self, width: float = 1.0, dropout: float = 0.2, shape: tuple = (51, 51, 25)):
        super().__init__()
        layers: list = []
        cin = 1
        for cout, k, pad, bn in DISCRIMINATOR:
            cout = _ch(cout, width)
            if pad == "same":  # Keras/TF 'same': the extra cell of an even kernel goes after
                lo = [(n - 1) // 2 for n in k]
                hi = [n - 1 - m for n, m in zip(k, lo)]
                layers.append(nn.ConstantPad3d((lo[2], hi[2], lo[1], hi[1], lo[0], hi[0]), 0.0))
            elif any(pad):
                layers.append(_pad(pad))
            conv = nn.Conv3d(cin, cout, k)
            layers += [conv, nn.LeakyReLU(0.3)]  # Keras' LeakyReLU default slope
            if bn:
                layers.append(nn.BatchNorm3d(cout, eps=BN_EPS))
            layers.append(nn.Dropout(dropout))
            cin = cout
        layers += [nn.AvgPool3d(2), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n_feat = self.features(torch.zeros(1, 1, *shape)).shape[1]  # 8 x 19 x 18 x 7 for 51 x 51 x 25
        self.fake = nn.Linear(n_feat, 1)
        self.aux = nn.Linear(n_feat, 1)

    def forward(self, x: torch.Tensor) -> tuple:
        """``x`` [N, 51, 51, 25] in the network's scale -> (logit real/fake [N], E_p/100 [N])."""
        h = self.features(x[:, None])
        return self.fake(h)[:, 0], self.aux(h)[:, 0]
