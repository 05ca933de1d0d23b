"""Networks of Erdmann, Geiger, Glombitza, Schmidt (2018): pattern WGAN, trace refiner, AixNet.

Signals span many decades (VEM), so every network works on u = log10(1 + S) / SCALE.
Traces [B, 9, 9, 80] are processed per station along time with 1-D convolutions over
[B * 81, C, 80] (the paper's 1 x 1 x 7 3-D convolutions, computed as what they are).
"""
from __future__ import annotations

import torch
from torch import nn

SCALE = 5.0


def to_net(x: torch.Tensor) -> torch.Tensor:
    return torch.log10(1 + x.clamp_min(0)) / SCALE


def from_net(u: torch.Tensor) -> torch.Tensor:
    return (10 ** (u.clamp_min(0) * SCALE) - 1).clamp_min(0)


def lrelu():
    return nn.LeakyReLU(0.2)


# -- pattern WGAN (Tables 1-2) ---------------------------------------------------------
class PatternGenerator(nn.Module):
    """latent 80 (+ energy) -> dense 3x3x128 -> BN -> transposed conv (k3, s3) 9x9 -> BN -> 2 convs -> ReLU."""

    def __init__(self, n_latent: int = 80, width: float = 1.0):
        super().__init__()
        c = max(8, int(128 * width))
        self.c = c
        self.dense = nn.Sequential(nn.Linear(n_latent + 1, 3 * 3 * c), nn.BatchNorm1d(3 * 3 * c), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 3, 3), nn.BatchNorm2d(c // 2), nn.ReLU(),
            nn.Conv2d(c // 2, c // 2, 3, 1, 1), nn.BatchNorm2d(c // 2), nn.ReLU(),
            nn.Conv2d(c // 2, 1, 3, 1, 1), nn.ReLU(),
        )

    def forward(self, z, energy):
        h = self.dense(torch.cat([z, energy[:, None]], 1)).reshape(-1, self.c, 3, 3)
        return self.up(h)[:, 0]  # [B, 9, 9] in log units


class PatternCritic(nn.Module):
    """Convolutions (3x3) with LeakyReLU, global max pooling, dropout, dense layers; no batch norm.
    ``table`` (Table 2): 64, 128, 128 and 256 maps, then dense 100 and dense 1: 543 049 parameters
    at ``width`` 1 (the table's 543 k). Without it (the compact critic of the CPU presets): 64,
    128, 128 maps and dense 1 (222 209). With ``conditioned``, the energy (log10(E / 10 EeV)) is a
    second input plane."""

    def __init__(self, width: float = 1.0, dropout: float = 0.35, conditioned: bool = False, table: bool = False):
        super().__init__()
        c = max(8, int(64 * width))
        self.conditioned = conditioned
        convs = [nn.Conv2d(1 + conditioned, c, 3, 1, 1), lrelu(), nn.Conv2d(c, 2 * c, 3, 1, 1), lrelu(),
                 nn.Conv2d(2 * c, 2 * c, 3, 1, 1), lrelu()]
        if table:
            convs += [nn.Conv2d(2 * c, 4 * c, 3, 1, 1), lrelu()]
            dense = max(8, int(100 * width))
            head = [nn.Linear(4 * c, dense), lrelu(), nn.Linear(dense, 1)]
        else:
            head = [nn.Linear(2 * c, 1)]
        self.net = nn.Sequential(*convs, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout), *head)

    def forward(self, u, log_energy=None):
        x = u[:, None]
        if self.conditioned:
            x = torch.cat([x, log_energy.reshape(-1, 1, 1, 1).expand(-1, 1, *u.shape[1:])], 1)
        return self.net(x)


class PatternAixNet(nn.Module):
    """Energy regressor on 9x9 patterns (the WGAN's constrainer): log10 E."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = max(8, int(32 * width))
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 3, 1, 1), nn.ReLU(), nn.Conv2d(c, 2 * c, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(2 * c, 64), nn.ReLU(), nn.Linear(64, 1),
        )

    def forward(self, u):
        return self.net(u[:, None])[:, 0]


# -- trace networks ---------------------------------------------------------------------
def over_stations(net: nn.Module, flat: torch.Tensor) -> torch.Tensor:
    """``net`` applied to every station's trace of ``flat`` [N, 1, T]; the same as ``net(flat)``.

    An event lights a fifth to a third of the 81 stations; the others' traces are exactly 0 and give
    one and the same output, net(0). So the net runs on the lit traces and once on an empty one,
    broadcast to the dark stations. Where the input needs its gradient (the critic's gradient
    penalty), a dark station's output is net(0) + J x with J the Jacobian of the net at the empty
    trace (built with its graph): equal in value (x = 0), in the gradient on the input and in every
    derivative of those on the parameters, which is what a penalty on the input gradient trains. ``net``
    must treat every trace on its own (no batch statistics, as every trace network here)."""
    lit = flat.flatten(1).ne(0).any(1)
    n_lit = int(lit.sum())
    if n_lit == len(flat):
        return net(flat)
    empty = flat.new_zeros((1, *flat.shape[1:]))
    n_dark = len(flat) - n_lit
    if torch.is_grad_enabled() and flat.requires_grad:
        def value(x):
            out = net(x)
            return out.flatten(), out

        jac, out0 = torch.func.jacrev(value, has_aux=True)(empty)  # differentiable in the parameters
        dark = out0 + (flat[~lit].flatten(1) @ jac.reshape(out0.numel(), -1).T).reshape(n_dark, *out0.shape[1:])
    else:
        out0 = net(empty)
        dark = out0.expand(n_dark, *out0.shape[1:])
    out = out0.new_zeros((len(flat), *out0.shape[1:]))
    if n_lit:
        out = out.index_copy(0, lit.nonzero()[:, 0], net(flat[lit]))
    return out.index_copy(0, (~lit).nonzero()[:, 0], dark)


class StationTime(nn.Module):
    """Applies a 1-D time network to every station: [B, 9, 9, T] -> [B, C, 9, 9, T'] (``over_stations``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        B, X, Y, T = x.shape
        h = over_stations(self.net, x.reshape(B * X * Y, 1, T))
        return h.reshape(B, X, Y, h.shape[1], h.shape[2]).permute(0, 3, 1, 2, 4)


class ResidualBlock(nn.Module):
    def __init__(self, c: int, k: int = 7):
        super().__init__()
        self.a = nn.Conv1d(c, c, k, padding=k // 2)
        self.b = nn.Conv1d(c, c, k, padding=k // 2)

    def forward(self, h):
        return torch.relu(h + self.b(torch.relu(self.a(h))))


class Refiner(nn.Module):
    """Table 3, per station along time (the 1x1x7 3-D convolutions as 1-D ones): convolution
    1 -> 64 maps (kernel 7, ReLU), one 64-map convolution (kernel 7, ReLU), 3 residual blocks of
    two 64-map convolutions (kernel 7), a 1x1x1 convolution to one map; 201 729 parameters at
    ``width`` 1 (the table's 202 k: seven 64 -> 64 convolutions of kernel 7).

    ``skip`` (not in the table): output = input + the network's output, with the last
    convolution starting at zero, so an untrained refiner is the identity. ``bound`` (log units,
    optional, needs ``skip``) caps that residual at +-bound with a tanh: 0.2 is a factor 10 in
    signal. Without ``skip`` the output is the network's, clipped at 0 (signals are >= 0).

    ``gain`` (needs ``skip`` and ``bound``): the residual r is a gain on the signal instead,
    S_out = S x 10^(SCALE r), so every bin of a trace can be scaled by the same factor. Added to
    u = log10(1 + S) / SCALE, a negative r shifts small bins below zero first: a halving of the
    signal (r = -0.06) zeroes every bin under 1 VEM."""

    def __init__(self, width: float = 1.0, blocks: int = 3, bound: float | None = None, skip: bool = True,
                 gain: bool = False):
        super().__init__()
        if bound and not skip:
            raise ValueError("Refiner: bound caps the residual, it needs skip=True")
        if gain and not bound:
            raise ValueError("Refiner: a gain residual needs skip=True and a bound")
        c = max(8, int(64 * width))
        self.bound, self.skip, self.gain = bound, skip, gain
        self.net = nn.Sequential(nn.Conv1d(1, c, 7, padding=3), nn.ReLU(), nn.Conv1d(c, c, 7, padding=3), nn.ReLU(),
                                 *[ResidualBlock(c) for _ in range(blocks)], nn.Conv1d(c, 1, 1))
        if skip:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, u):  # u [B, 9, 9, 80] in log units
        B, X, Y, T = u.shape
        flat = u.reshape(B * X * Y, 1, T)
        out = over_stations(self.net, flat)
        if self.skip:
            if self.bound:
                out = self.bound * torch.tanh(out / self.bound)
            out = to_net(from_net(flat) * 10 ** (SCALE * out)) if self.gain else flat + out
        return out.clamp_min(0).reshape(B, X, Y, T)


def trigger_straight_through(u: torch.Tensor, threshold: float) -> torch.Tensor:
    """Net inputs ``u`` of patterns as the array's trigger reads them: a station under ``threshold``
    (net units) reads 0. The gradient passes the cut as if it were not there (straight through), so a
    station under the trigger still learns whether it should rise over it."""
    return u - (u * (u < threshold)).detach()


def readout(s: torch.Tensor, zero_suppression: float, saturation: float, trigger: float) -> torch.Tensor:
    """A surface array's readout of signals ``s`` [..., T] (VEM per bin): bins under
    ``zero_suppression`` read 0, bins saturate at ``saturation``, and a station whose integral is
    under ``trigger`` is not read out (all 0). Differentiable where a bin survives."""
    s = torch.where(s < zero_suppression, torch.zeros_like(s), s).clamp_max(saturation)
    return s * (s.sum(-1, keepdim=True) >= trigger)


class TraceAixNet(nn.Module):
    """AixNet-like: per-station time convolutions (stride 2) compress each trace, then 2-D
    convolutions over the array and a dense head. ``n_out`` 1: log10 E regressor; also the
    refiner's critic (no batch norm, as WGAN-GP requires). ``conditioned``: the energy
    (log10(E / 10 EeV)) joins the per-station features as one more plane over the array."""

    def __init__(self, width: float = 1.0, n_out: int = 1, conditioned: bool = False):
        super().__init__()
        c = max(8, int(32 * width))
        self.conditioned = conditioned
        self.time = StationTime(nn.Sequential(
            nn.Conv1d(1, c // 2, 7, 2, 3), lrelu(), nn.Conv1d(c // 2, c, 7, 2, 3), lrelu(),
            nn.Conv1d(c, c, 7, 2, 3), lrelu(), nn.AdaptiveAvgPool1d(1)))
        self.array = nn.Sequential(
            nn.Conv2d(c + conditioned, 2 * c, 3, 1, 1), lrelu(), nn.Conv2d(2 * c, 2 * c, 3, 1, 1), lrelu(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * c, 64), lrelu(), nn.Linear(64, n_out))

    def forward(self, u, log_energy=None):
        h = self.time(u)[..., 0]  # [B, C, 9, 9]
        if self.conditioned:
            h = torch.cat([h, log_energy.reshape(-1, 1, 1, 1).expand(-1, 1, *h.shape[2:])], 1)
        out = self.array(h)
        return out[:, 0] if out.shape[1] == 1 else out
