"""``flow_matching``: conditional flow matching on any voxel dataset.

Training (Lipman et al. 2023; Liu et al. 2023, rectified flow): x0 ~ N(0, 1), x1 = the encoded
shower, x_t = (1 - t) x0 + t x1, and the network v(x_t, t, c) regresses x1 - x0. Time is drawn
logit-normal (Esser et al. 2024) by default. Two phases: a linear learning-rate warm-up, then a
cosine decay (one tracked LambdaLR over both); EMA weights sample. Sampling integrates dx/dt = v from t = 0 to 1 with the
midpoint (or Heun, or Euler) rule: ``ode_steps`` steps, 2 network evaluations each (1 for Euler).
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import calobench

from .periphery import Periphery
from .representation import ZERO_WIDTH, Representation


class FlowOptions(calobench.Options):
    width: PositiveInt = 512  # hidden width of the velocity MLP
    blocks: PositiveInt = 4  # residual blocks
    time_dim: PositiveInt = 64  # sinusoidal time embedding
    batch: PositiveInt = 256
    lr: PositiveFloat = 1e-3
    weight_decay: float = 0.0
    warmup_steps: NonNegativeInt = 500
    steps: PositiveInt = 20_000  # main phase (cosine decay to lr_final)
    lr_final: float = 1e-5
    ema: float = 0.999
    grad_clip: PositiveFloat = 1.0
    t_sampling: Literal["uniform", "logit_normal"] = "logit_normal"
    ode_steps: PositiveInt = 16
    solver: Literal["euler", "midpoint", "heun"] = "midpoint"
    n_train: PositiveInt | None = None  # training showers used (None: all)
    n_fit: PositiveInt = 20_000  # showers that set the representation's mean and spread
    energy: Literal["total", "layers"] = "total"  # energy features: E_tot + layer fractions, or layer energies
    zero_gap: float = 0.5  # gap between the zeros' region and the hits' in log(x / threshold)
    energy_weight: float | None = None  # None: plain MSE over all features; x: cells' mean + x * energy features' mean
    calibrate_hits: bool = False  # after training: set the decoding boundary so validation hit counts match
    n_calibrate: PositiveInt = 2000  # validation showers generated for that
    backbone: Literal["auto", "mlp", "layers"] = "auto"  # auto: an MLP up to MLP_MAX_FEATURES features, else layers
    heads: PositiveInt = 4  # attention heads of the layer transformer
    cell_head: NonNegativeInt = 0  # hidden width of the per-cell head (CellHead); 0: none
    crop: PositiveInt | None = None  # the flow generates only the central crop cells of each axis but the layer axis
    periphery: bool = True  # with crop: the cells outside it drawn independently per cell (periphery.py); False: zero


MLP_MAX_FEATURES = 8192  # above: the layer transformer (an MLP's input and output layers grow with the cells)


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    a = t[:, None] * freqs[None] * 1000.0
    return torch.cat([a.sin(), a.cos()], 1)


class Block(nn.Module):
    """Pre-norm residual MLP block; the (time, condition) embedding shifts and scales its input."""

    def __init__(self, width: int, emb: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.film = nn.Linear(emb, 2 * width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, h, emb):
        scale, shift = self.film(emb).chunk(2, 1)
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


class Velocity(nn.Module):
    """v(x_t, t, c): input projection, ``blocks`` residual blocks, output projection."""

    def __init__(self, n_features: int, n_cond: int, width: int, blocks: int, time_dim: int, n_energy: int = 0,
                 cell_head: int = 0):
        super().__init__()
        self.time_dim, self.n_energy = time_dim, n_energy
        self.cell_head = CellHead(n_features - n_energy, cell_head) if cell_head else None
        emb = width
        self.embed = nn.Sequential(nn.Linear(time_dim + n_cond, emb), nn.SiLU(), nn.Linear(emb, emb), nn.SiLU())
        self.inp = nn.Linear(n_features, width)
        self.blocks = nn.ModuleList(Block(width, emb) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_features))

    def forward(self, x, t, c):
        emb = self.embed(torch.cat([time_embedding(t, self.time_dim), c], 1))
        h = self.inp(x)
        for b in self.blocks:
            h = b(h, emb)
        v = self.out(h)
        if self.cell_head is None:
            return v
        k = self.n_energy
        return torch.cat([v[:, :k], self.cell_head(x[:, k:], v[:, k:], t)], 1)


class CellHead(nn.Module):
    """The part of each cell's velocity that depends on the cell itself: a small network shared by
    all cells, applied to (the cell's value, the backbone's velocity for it, t, a learnt embedding of
    the cell), added to the backbone's velocity. A zero's dequantisation noise is independent of
    everything else, so the field that moves it depends on the cell's own value; a backbone whose
    hidden layer is narrower than the number of cells cannot pass every cell's value through.
    Zero-initialised output: it starts as no correction."""

    def __init__(self, n_cells: int, hidden: int, embed: int = 4):
        super().__init__()
        self.embed = nn.Parameter(torch.zeros(n_cells, embed))
        nn.init.normal_(self.embed, std=0.1)
        self.net = nn.Sequential(nn.Linear(3 + embed, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x_cells, v_cells, t):
        b, n = x_cells.shape
        inp = torch.cat([x_cells[..., None], v_cells[..., None], t[:, None, None].expand(b, n, 1),
                         self.embed[None].expand(b, n, -1)], -1)
        return v_cells + self.net(inp)[..., 0]


class LayerVelocity(nn.Module):
    """v(x_t, t, c) for large geometries: a transformer over the calorimeter layers.

    Each layer's cells are one token (a linear embedding of the layer's log cells, shared by the
    layers, plus a learnt layer position), the energy features one more; ``blocks`` pre-norm
    transformer blocks whose inputs the (time, condition) embedding shifts and scales (adaLN, as
    in DiT); a linear read-out per token back to its cells. The cells of a layer talk to the
    other layers only through its token: the longitudinal correlations are the attention's, the
    lateral ones the embedding's. An MLP over 65 025 LCD cells would hold 67 M parameters in its
    input and output layers alone."""

    def __init__(self, rep, n_cond: int, width: int, blocks: int, time_dim: int, heads: int = 4, cell_head: int = 0):
        super().__init__()
        self.cell_head = CellHead(rep.n_cells, cell_head) if cell_head else None
        self.time_dim, self.n_energy = time_dim, rep.n_energy
        layer_of = rep.layer_of.cpu()
        per_layer = torch.bincount(layer_of, minlength=rep.n_layers)
        self.tokens, self.cells = rep.n_layers, int(per_layer.max())
        # the cell feature index of token l, slot p (padded with a spare zero column)
        index = torch.full((rep.n_layers, self.cells), rep.n_cells, dtype=torch.long)
        for layer in range(rep.n_layers):
            cells = torch.nonzero(layer_of == layer).flatten()
            index[layer, : len(cells)] = cells
        self.register_buffer("index", index, persistent=False)
        # every layer complete and the layer the fastest-running axis (lcd: x, y, layer): the tokens are a
        # strided view of the cells, no gather or scatter (equal to float rounding, tested)
        n = rep.n_cells
        self.strided = bool(n == rep.n_layers * self.cells and torch.equal(
            index, torch.arange(n).reshape(self.cells, rep.n_layers).T))
        self.embed = nn.Sequential(nn.Linear(time_dim + n_cond, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.cell_in = nn.Linear(self.cells, width)
        self.energy_in = nn.Linear(rep.n_energy, width)
        self.position = nn.Parameter(torch.zeros(rep.n_layers + 1, width))
        self.blocks = nn.ModuleList(TransformerBlock(width, width, heads) for _ in range(blocks))
        self.norm = nn.LayerNorm(width)
        self.cell_out = nn.Linear(width, self.cells)
        self.energy_out = nn.Linear(width, rep.n_energy)

    def forward(self, x, t, c):
        emb = self.embed(torch.cat([time_embedding(t, self.time_dim), c], 1))
        e, v = x[:, : self.n_energy], x[:, self.n_energy :]
        if self.strided:
            layers = v.reshape(len(x), self.cells, self.tokens).transpose(1, 2)  # [B, L, cells]
        else:
            v = torch.cat([v, torch.zeros_like(v[:, :1])], 1)  # the padding column
            layers = v[:, self.index]  # [B, L, cells]
        h = torch.cat([self.energy_in(e)[:, None], self.cell_in(layers)], 1) + self.position
        for b in self.blocks:
            h = b(h, emb)
        h = self.norm(h)
        out_v = self.cell_out(h[:, 1:])  # [B, L, cells]
        if self.strided:
            cells = out_v.transpose(1, 2).reshape(len(x), -1)
        else:
            flat = torch.zeros(len(x), v.shape[1], dtype=x.dtype, device=x.device)
            flat = flat.index_put((torch.arange(len(x), device=x.device)[:, None], self.index.reshape(1, -1)),
                                  out_v.reshape(len(x), -1))
            cells = flat[:, :-1]
        if self.cell_head is not None:
            cells = self.cell_head(x[:, self.n_energy :], cells, t)
        return torch.cat([self.energy_out(h[:, 0]), cells], 1)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention and MLP, each input shifted and scaled by the embedding (adaLN)
    and each output gated by it, zero-initialised so a block starts as the identity."""

    def __init__(self, width: int, emb: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.ada = nn.Linear(emb, 6 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, h, emb):
        s1, b1, g1, s2, b2, g2 = self.ada(emb)[:, None].chunk(6, -1)
        a = self.norm1(h) * (1 + s1) + b1
        h = h + g1 * self.attn(a, a, a, need_weights=False)[0]
        return h + g2 * self.mlp(self.norm2(h) * (1 + s2) + b2)


class FlowMatching(calobench.Model):
    name = "flow_matching"
    task = "generate"
    datasets = ()  # any voxel dataset
    description = "conditional flow matching (rectified flow), layer energies + log cells, EMA, ODE sampler"
    Options = FlowOptions
    inference_nets = ("ema",)
    presets = {
        "smoke": {"width": 64, "blocks": 2, "batch": 64, "warmup_steps": 5, "steps": 25, "n_train": 2000,
                  "n_fit": 2000, "ode_steps": 4, "timing_batches": [1, 100], "n_eval": 1000, "ema": 0.9},
        # 2-core CPU, <= 30 min of training per dataset (README: the measured times)
        "default": {"width": 512, "blocks": 4, "batch": 256, "warmup_steps": 500, "steps": 13_500,
                    "lr": 1e-3, "ode_steps": 16, "solver": "midpoint", "cell_head": 32,
                    # 65 025 cells: the central 25 x 25 of each layer only (99.5 % of the energy, 90 % of the
                    # hits; 0.28 s a step against 0.6 on all cells, so 5 000 steps in the time of 2 400), the layer
                    # transformer (auto), small batches, the energy features weighed as a block (1/600 of a plain
                    # MSE otherwise), 100 showers per generation call (memory); no cell head (~3/4 of a step:
                    # benchmarks/step_time.py), the hit count calibrated, an EMA horizon of 200 steps
                    "per_dataset": {"lcd": {"crop": 25, "width": 192, "blocks": 4, "heads": 4, "batch": 64, "cell_head": 0,
                                            "warmup_steps": 200, "steps": 4800, "n_fit": 2000, "energy_weight": 1.0,
                                            "ema": 0.995, "calibrate_hits": True, "n_calibrate": 500,
                                            "ode_steps": 8, "generation_batch": 100, "timing_batches": [1, 100]}}},
        # GPU-sized: a wider, deeper network trained ten times longer
        "paper": {"width": 1024, "blocks": 6, "batch": 512, "warmup_steps": 2000, "steps": 200_000, "lr": 5e-4,
                  "ode_steps": 32, "solver": "midpoint"},
    }

    def __init__(self, dataset, config, device):
        super().__init__(dataset, config, device)
        c = self.config
        self.cond_names = sorted(dataset.conditions)
        self.rep = Representation(dataset.geometry, dataset.conditions, c["energy"], c["zero_gap"], c["crop"])
        n_cond = sum(2 if lo > 0 else 1 for lo, _ in (dataset.conditions[k] for k in self.cond_names))
        self.nets["representation"] = self.rep
        self.periphery = None
        if c["crop"] is not None and c["periphery"]:
            g = dataset.geometry
            every = np.ones(int(np.prod(g.shape)), bool) if g.mask is None else np.asarray(g.mask, bool).reshape(-1)
            every[self.rep.active.numpy()] = False
            self.periphery = Periphery(np.flatnonzero(every), dataset.conditions)
            self.nets["periphery"] = self.periphery
        backbone = c["backbone"]
        if backbone == "auto":
            backbone = "mlp" if self.rep.n_features <= MLP_MAX_FEATURES else "layers"
        self.backbone = backbone
        if backbone == "mlp":
            self.nets["velocity"] = Velocity(self.rep.n_features, n_cond, c["width"], c["blocks"], c["time_dim"],
                                             self.rep.n_energy, c["cell_head"])
        else:
            self.nets["velocity"] = LayerVelocity(self.rep, n_cond, c["width"], c["blocks"], c["time_dim"], c["heads"],
                                                  c["cell_head"])
        self.nets["ema"] = AveragedModel(self.nets["velocity"], multi_avg_fn=get_ema_multi_avg_fn(c["ema"]))
        for k in self.nets:
            self.nets[k].to(device)
        self.optimizers["velocity"] = torch.optim.AdamW(self.nets["velocity"].parameters(), lr=c["lr"],
                                                        weight_decay=c["weight_decay"])
        self.network_evaluations_per_shower = c["ode_steps"] * (1 if c["solver"] == "euler" else 2)

    # -- conditions -------------------------------------------------------------
    def _cond(self, conditions: dict) -> torch.Tensor:
        cols = []
        for k in self.cond_names:
            lo, hi = self.dataset.conditions[k]
            v = torch.as_tensor(np.asarray(conditions[k], np.float32))
            cols.append(2 * (v - lo) / max(hi - lo, 1e-12) - 1)
            if lo > 0:
                cols.append(2 * (torch.log(v.clamp_min(lo * 1e-3)) - math.log(lo)) / max(math.log(hi / lo), 1e-12) - 1)
        return torch.stack(cols, 1).to(self.device) if cols else torch.zeros(len(next(iter(conditions.values()))), 0)

    def _energy(self, conditions):
        return conditions["energy"] if "energy" in conditions else None

    # -- training ---------------------------------------------------------------
    def fit(self, train, trainer, validation=None):
        c = self.config
        n = min(len(train), c["n_train"] or len(train))
        data = train.head(n)
        gen = torch.Generator().manual_seed(int(trainer.rng.integers(2**31)))
        fit_idx = np.sort(trainer.rng.choice(n, min(n, c["n_fit"]), replace=False))
        sample = data.take(fit_idx)
        self.rep.fit(sample.array(), self._energy(sample.conditions), gen)
        if self.periphery is not None:  # the cells outside the crop: per-cell hit rates and values, binned
            self.periphery.fit((b.array() for b in data.chunks(1000)), data.conditions)
        # the deterministic part of the encoding, once (only the zeros' noise is drawn per step)
        feats = [self.rep.features(torch.as_tensor(b.array()), self._energy(b.conditions)) for b in data.chunks(1000)]
        e_feat, v_feat = (torch.cat(f) for f in zip(*feats))
        del feats
        cond = self._cond(data.conditions).cpu()
        net, ema, opt = self.nets["velocity"], self.nets["ema"], self.optimizers["velocity"]
        warm, total = c["warmup_steps"], c["steps"]
        floor = c["lr_final"] / c["lr"]

        def lr_factor(s: int) -> float:  # linear warm-up, then cosine from lr to lr_final over the main phase
            if s < warm:
                return (s + 1) / warm
            p = min(1.0, (s - warm) / max(total, 1))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        trainer.track("scheduler", sched)
        trainer.track("noise", _GeneratorState(gen))

        def step():
            idx = torch.as_tensor(trainer.rng.integers(0, n, c["batch"]))
            x1 = self.rep.dequantise(e_feat[idx], v_feat[idx], gen).to(self.device)
            x0 = torch.randn_like(x1)
            if c["t_sampling"] == "logit_normal":
                t = torch.sigmoid(torch.randn(len(idx), device=self.device))
            else:
                t = torch.rand(len(idx), device=self.device)
            xt = (1 - t[:, None]) * x0 + t[:, None] * x1
            err = (net(xt, t, cond[idx].to(self.device)) - (x1 - x0)) ** 2
            if c["energy_weight"] is None:  # every feature weighs the same
                loss = err.mean()
            else:  # the energy features as a block: their mean weighs energy_weight x the cells' mean
                k = self.rep.n_energy
                loss = err[:, k:].mean() + c["energy_weight"] * err[:, :k].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), c["grad_clip"])
            opt.step()
            ema.update_parameters(net)
            sched.step()
            trainer.log(fm_loss=loss)

        for _ in trainer.phase("warmup", warm):
            step()
        for _ in trainer.phase("main", total):
            step()
        if c["calibrate_hits"] and validation is not None:
            trainer.once("calibrate", lambda g: self.calibrate_boundary(  # logged: in the record's training history
                validation.head(min(len(validation), c["n_calibrate"])), g))

    def calibrate_boundary(self, validation, generator=None) -> dict:
        """Move the decoding boundary between zeros and hits so that the mean number of hits of showers
        generated for the validation conditions matches the validation showers' (bisection; the number
        of hits falls monotonically as the boundary rises). Validation showers only: the test split is
        never seen. Returns what it found (also in ``self.calibration``)."""
        z = self._integrate(validation.conditions, generator)
        energy = self._energy(validation.conditions)
        active = self.rep.active.cpu().numpy()  # the hits the flow can make (crop: inside the window)
        target = float((validation.array().reshape(len(validation), -1)[:, active] > 0).sum(1).mean())

        def hits(b):
            return float((self.rep.decode(z, energy, b).reshape(len(z), -1) > 0).sum(1).mean())

        lo, hi = -self.rep.zero_gap - 0.5 * ZERO_WIDTH, 0.0  # hits(lo) >= hits(hi)
        before = hits(float(self.rep.boundary))
        for _ in range(20):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if hits(mid) > target else (lo, mid)
        self.rep.boundary.fill_(0.5 * (lo + hi))
        self.calibration = {"boundary": float(self.rep.boundary), "hits_validation": target,
                            "hits_before": before, "hits_after": hits(float(self.rep.boundary))}
        return self.calibration

    # -- sampling ---------------------------------------------------------------
    def sample(self, conditions):
        out = self.rep.decode(self._integrate(conditions), self._energy(conditions))
        if self.periphery is not None:
            flat = out.reshape(len(out), -1)
            flat[:, self.periphery.outside.cpu().numpy()] = self.periphery.sample(conditions).numpy()
        return out

    @torch.no_grad()
    def _integrate(self, conditions, generator=None) -> torch.Tensor:
        """The ODE from noise (t = 0) to the encoded showers (t = 1), standardised features."""
        c = self.config
        cond = self._cond(conditions)
        net = self.nets["ema"]
        x = torch.randn(len(cond), self.rep.n_features, generator=generator).to(self.device)
        n = c["ode_steps"]
        h = 1.0 / n
        for i in range(n):
            t = torch.full((len(x),), i * h, device=self.device)
            if c["solver"] == "euler":
                x = x + h * net(x, t, cond)
            elif c["solver"] == "midpoint":
                x = x + h * net(x + 0.5 * h * net(x, t, cond), t + 0.5 * h, cond)
            else:  # heun
                v0 = net(x, t, cond)
                v1 = net(x + h * v0, t + h, cond)
                x = x + 0.5 * h * (v0 + v1)
        return x


class _GeneratorState:
    """A torch.Generator as something with a state dict (for trainer.track): the noise that
    spreads the zeros continues exactly on --resume."""

    def __init__(self, gen: torch.Generator):
        self.gen = gen

    def state_dict(self):
        return {"state": self.gen.get_state()}

    def load_state_dict(self, state):
        self.gen.set_state(state["state"])
