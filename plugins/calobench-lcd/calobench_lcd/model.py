"""The ``3dgan`` calobench model (Khattak, Vallecorsa, Carminati, Khan 2021).

Conditional GAN on 51 x 51 x 25 images with E_p and theta. The discriminator has four
heads: real/fake (BCE), E_p regression (MAPE) and two physics heads computed from the
image, not learned: the measured angle (MAE) and the total deposited energy (MAPE), with
the paper's loss weights 3, 0.1, 25, 0.1 in the order (real/fake, E_p, angle, sum).
Cells enter the networks as (50 x E_cell / GeV)^power: the paper's 0.85 in ``paper``, 0.5 in ``default``
(README: measured), where the shower is also drawn along the beam axis and tilted by theta (``Tilt``).
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt

import calobench
from calobench.training import QuantileCalibration, hat_weights

from .nets import LATENT, Discriminator, Generator
from .physics import ecal_sum, measured_angle

SHAPE = (51, 51, 25)
LABELS = ("energy", "theta")


def mape(pred, target):
    """Keras' mean absolute percentage error (in per cent)."""
    return 100 * (torch.abs(pred - target) / torch.clamp(torch.abs(target), min=1e-7)).mean()


class Stage(calobench.Options):
    energy: tuple[float, float] | None = None  # E_p range in GeV of this stage's showers (None: all)
    epochs: PositiveFloat


class ThreeDGANOptions(calobench.Options):
    crop: int | None = None  # train on the central crop x crop cells (odd, 9-51; None: full 51 x 51)
    width: PositiveFloat = 1.0
    batch: PositiveInt = 64
    steps: PositiveInt | None = None  # one stage of this many steps; or give stages
    stages: list[Stage] | None = None  # training stages, each resuming from the previous weights
    n_train: PositiveInt | None = None
    n_select: PositiveInt = 2000  # hold-out showers scoring each candidate generator
    select_every: PositiveInt | Literal["epoch"] = "epoch"
    sample_batch: PositiveInt = 64
    lr: PositiveFloat = 1e-3
    power: PositiveFloat = 0.85
    xscale: PositiveFloat = 50.0
    label_flip: NonNegativeFloat = 0.05
    loss_weights: tuple[float, float, float, float] = (3.0, 0.1, 25.0, 0.1)  # real/fake, E_p, angle, sum
    generator_steps: PositiveInt = 2
    dropout: NonNegativeFloat = 0.2
    apply_threshold: bool = True
    # > 0: the generator's output ReLU passes a leaky ReLU's gradient (this slope below zero) back, output unchanged
    leak: float = pydantic.Field(0.0, ge=0.0, lt=1.0)
    # after training: scale the generated cells by a smooth factor of (E_p, theta) so that the mean sampling
    # fraction of showers generated for the validation labels matches the validation showers' (SamplingCalibration)
    calibrate_response: bool = False
    calibrate_draws: PositiveInt = 4  # generated showers per validation label for that
    # the generator draws the shower along the beam axis and a fixed shear tilts it by theta: layer z moved
    # along y by cot(theta) x (b + k (z - z_c)) cells, k and b measured on the training showers (Tilt)
    tilt: bool = False
    # after training, before calibrate_response: every non-zero generated cell moved by delta(E_p) on the network's
    # scale ((50 E)^power), delta interpolated in log E_p between hit_bins quantile bins of the validation energies,
    # each found so that the mean number of hits above 0.2 MeV of showers generated for that bin's validation labels
    # matches the validation showers' (HitCalibration)
    calibrate_hits: bool = False
    hit_bins: PositiveInt = 5
    # with calibrate_response: each generated shower's total energy also moved to the real showers' quantile at
    # its E_p (SpreadCalibration, spread_bins quantile bins of the validation energies): the generator's per-shower
    # sampling-fraction spread is several times real's
    calibrate_spread: bool = False
    spread_bins: PositiveInt = 5

    @pydantic.model_validator(mode="after")
    def _check(self):
        if (self.steps is None) == (self.stages is None):
            raise ValueError("give exactly one of steps or stages (to train a fixed number of steps instead of "
                             "the preset's stages: --set stages=null --set steps=N)")
        if self.calibrate_spread and not self.calibrate_response:
            raise ValueError("calibrate_spread maps the totals around the response calibration's mean: it needs "
                             "calibrate_response=true")
        if self.crop is not None and (self.crop < 9 or self.crop > 51 or self.crop % 2 == 0):
            raise ValueError(f"crop must be an odd number of cells in [9, 51] or null, got {self.crop}")
        return self


def _per_bin(stat, e_real, v_real, e_gen, v_gen, bins: int = 10) -> list:
    """stat(generated values, real values) in each of ``bins`` E_p bins (quantiles of the real energies)."""
    edges = np.quantile(e_real, np.linspace(0, 1, bins + 1))
    br = np.clip(np.searchsorted(edges, e_real, side="right") - 1, 0, bins - 1)
    bg = np.clip(np.searchsorted(edges, e_gen, side="right") - 1, 0, bins - 1)
    return [stat(v_gen[bg == k], v_real[br == k]) for k in range(bins) if (br == k).any() and (bg == k).any()]


def _sf_error(e_real, sf_real, e_gen, sf_gen, bins: int = 10) -> float:
    """Mean over ``bins`` E_p bins of |<sf_gen> / <sf_real> - 1|."""
    return float(np.mean(_per_bin(lambda g, r: abs(g.mean() / r.mean() - 1), e_real, sf_real, e_gen, sf_gen, bins)))


def _spread_ratio(e_real, sf_real, e_gen, sf_gen, bins: int = 10) -> float:
    """Mean over ``bins`` E_p bins of std(sf_gen) / std(sf_real) (bins whose real values all agree left out;
    none left: nan, reported as such)."""
    ratios = _per_bin(lambda g, r: g.std() / r.std() if r.std() > 0 else np.nan, e_real, sf_real, e_gen, sf_gen, bins)
    ratios = [v for v in ratios if np.isfinite(v)]
    return float(np.mean(ratios)) if ratios else np.nan


class SamplingCalibration(torch.nn.Module):
    """A factor on the generated cells as a smooth function of (E_p, theta): the ratio of two linear
    least-squares fits of the sampling fraction (sum / E_p), one to real validation showers and one to
    showers generated for the same labels, on the features [hat functions of log E_p at ``KNOTS_GEV``,
    theta - 90 deg, its square, its product with log E_p]. Buffers only: it travels with the weights;
    until ``set`` it is 1."""

    KNOTS_GEV = (2.0, 5.0, 15.0, 50.0, 150.0, 500.0)

    def __init__(self):
        super().__init__()
        n = len(self.KNOTS_GEV) + 3
        self.register_buffer("coef_real", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("coef_generated", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("active", torch.zeros((), dtype=torch.bool))

    @classmethod
    def features(cls, energy, theta) -> np.ndarray:
        log_e = np.log(np.clip(np.asarray(energy, np.float64), cls.KNOTS_GEV[0], cls.KNOTS_GEV[-1]))
        hats = hat_weights(log_e, np.log(cls.KNOTS_GEV))
        t = np.asarray(theta, np.float64) - math.pi / 2
        return np.stack([*hats, t, t**2, t * log_e], 1)

    def set(self, real: tuple, generated: tuple) -> None:
        """``real``, ``generated``: (E_p, theta, sampling fraction) arrays of each sample."""
        for coef, (energy, theta, sf) in ((self.coef_real, real), (self.coef_generated, generated)):
            fit = np.linalg.lstsq(self.features(energy, theta), np.asarray(sf, np.float64), rcond=None)[0]
            coef.copy_(torch.as_tensor(fit))
        self.active.fill_(True)

    def factor(self, energy, theta) -> np.ndarray:
        if not bool(self.active):
            return np.ones(len(np.asarray(energy)))
        f = self.features(energy, theta)
        real, gen = f @ self.coef_real.cpu().numpy(), f @ self.coef_generated.cpu().numpy()
        ok = gen > 0  # where the generated fit is not positive, leave the showers as they are
        return np.where(ok, np.clip(real / np.where(ok, gen, 1.0), 0.1, 10.0), 1.0)

    def real_mean(self, energy, theta) -> np.ndarray:
        """The real sampling fraction's fitted mean at these labels."""
        return self.features(energy, theta) @ self.coef_real.cpu().numpy()


class SpreadCalibration(QuantileCalibration):
    """Each generated shower's total energy moved to the same quantile of the real showers' at its E_p:
    r = (sampling fraction after the ``SamplingCalibration`` factor) / (the real mean fit at its labels) is
    mapped through the generated ratios' quantiles onto the real ones' (``QuantileCalibration``, ``bins``
    quantile bins of the validation energies), and the shower is scaled by r' / r. The shape of every
    shower stays the generator's; its total follows the real spread. Until ``set`` the factor is 1."""

    def factor(self, energy, ratio) -> np.ndarray:
        ratio = np.asarray(ratio, np.float64)
        ok = ratio > 0  # an empty shower stays empty
        return np.where(ok, self.mapped(energy, ratio) / np.where(ok, ratio, 1.0), 1.0)


class HitCalibration(torch.nn.Module):
    """An offset delta(E_p) on the non-zero generated cells in the network's scale u = (50 E / GeV)^power:
    u' = max(u + delta, 0) where u > 0. The small cells cross the 0.2 MeV hit threshold (delta > 0) or
    fall under it (delta < 0); a core cell of u ~ 30 moves by a fraction of a per cent. delta is set at
    ``bins`` energies (log E_p interpolation, constant beyond them). Buffers only: it travels with the
    weights; until ``set`` it is 0."""

    def __init__(self, bins: int = 5):
        super().__init__()
        self.register_buffer("log_energy", torch.zeros(bins, dtype=torch.float64))
        self.register_buffer("delta", torch.zeros(bins, dtype=torch.float64))
        self.register_buffer("active", torch.zeros((), dtype=torch.bool))

    @staticmethod
    def find_delta(u: torch.Tensor, u_hit: float, target: float, iters: int = 40) -> float:
        """The smallest offset in [-u_hit, u_hit] (to bisection precision) at which showers ``u`` [N, ...]
        (network scale) have at least ``target`` mean hits (non-zero cells with u + delta > u_hit): the
        count is monotone in delta."""
        pos = u[u > 0]
        n = len(u)

        def hits(d):
            return float((pos > u_hit - d).sum()) / n

        lo, hi = -u_hit, u_hit
        if hits(hi) <= target:
            return hi
        if hits(lo) >= target:
            return lo
        for _ in range(iters):  # hits(lo) < target <= hits(hi)
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if hits(mid) < target else (lo, mid)
        return hi

    def set(self, energies, deltas) -> None:
        self.log_energy.copy_(torch.log(torch.as_tensor(energies, dtype=torch.float64)))
        self.delta.copy_(torch.as_tensor(deltas, dtype=torch.float64))
        self.active.fill_(True)

    def forward(self, u: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        if not bool(self.active):
            return u
        d = np.interp(np.log(energy.detach().double().cpu().numpy()), self.log_energy.cpu().numpy(),
                      self.delta.cpu().numpy())
        d = torch.as_tensor(d, dtype=u.dtype, device=u.device).reshape(-1, *([1] * (u.dim() - 1)))
        return torch.where(u > 0, torch.clamp(u + d, min=0), u)


class Tilt(torch.nn.Module):
    """A shower's inclination as a fixed, differentiable shear: layer z of an image [N, X, Y, Z] is moved
    along y by cot(theta) x (b + k (z - (Z - 1) / 2)) cells (linear interpolation, zeros shifted in).
    ``k`` (cells per layer per unit cot theta) and ``b`` are measured on real showers by ``measure``: the
    least-squares lines of each shower's barycentre drift (``barycentre_drift``) and of its mean layer
    y barycentre against cot(theta). Buffers only: it travels with the weights; until measured it is the
    identity."""

    def __init__(self):
        super().__init__()
        self.register_buffer("k", torch.zeros((), dtype=torch.float64))
        self.register_buffer("b", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def measure(self, images: torch.Tensor, theta) -> dict:
        """``images`` [N, X, Y, Z] (linear cell energies), ``theta`` radians. Returns what it set and how
        well a line describes the drift (its correlation with cot theta)."""
        from .physics import barycentre_drift, layer_y_barycentres

        img = images.double()
        cot = 1 / np.tan(np.asarray(theta, np.float64))
        y_mid, on = layer_y_barycentres(img)
        drift = barycentre_drift(img, (y_mid, on)).numpy()
        on = on.double()
        y_bar = ((y_mid * on).sum(1) / on.sum(1).clamp_min(1)).numpy() - img.shape[2] / 2
        ok = np.isfinite(drift) & (on.sum(1).numpy() >= 4)
        if ok.sum() < 10:
            raise calobench.CalobenchError("3dgan: too few showers with 4 or more layers to measure the tilt")
        k = np.polyfit(cot[ok], drift[ok], 1)[0]
        b = np.polyfit(cot[ok], y_bar[ok], 1)[0]
        self.k.fill_(float(k)), self.b.fill_(float(b))
        return {"tilt_k": float(k), "tilt_b": float(b), "tilt_corr": float(np.corrcoef(cot[ok], drift[ok])[0, 1])}

    def forward(self, u: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        n, X, Y, Z = u.shape
        dt, dev = u.dtype, u.device
        z = torch.arange(Z, device=dev, dtype=dt) - (Z - 1) / 2
        cot = (1 / torch.tan(theta.to(dt)))[:, None]
        shift = cot * (self.b.to(dt) + self.k.to(dt) * z)  # [N, Z] cells along +y
        # output cell y reads the input at y - shift: grid_sample's normalised coordinates (align_corners False)
        y = torch.arange(Y, device=dev, dtype=dt)
        src_y = (y[None, :, None] - shift[:, None, :] + 0.5) * 2 / Y - 1  # [N, Y, Z]
        src_z = ((torch.arange(Z, device=dev, dtype=dt) + 0.5) * 2 / Z - 1)[None, None].expand(n, Y, Z)
        grid = torch.stack([src_z, src_y], -1)  # (x = width = z, y = height = y) per output (y, z)
        # every x row shares the shear: fold x into the batch for a 2-D sample over (y, z)
        out = torch.nn.functional.grid_sample(u.reshape(n * X, 1, Y, Z), grid.repeat_interleave(X, 0),
                                              mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.reshape(n, X, Y, Z)


class ThreeDGAN(calobench.Model):
    name = "3dgan"
    task = "generate"
    description = "3-D convolutional GAN conditioned on E_p and theta, with angle and energy-sum physics heads"
    Options = ThreeDGANOptions
    inference_nets = ("generator",)
    presets = {
        "smoke": {"crop": 25, "width": 0.5, "batch": 4, "steps": 2, "n_train": 64, "n_select": 8, "select_every": 2,
                  "timing_batches": [1, 8], "sample_batch": 16, "n_eval": 200, "calibrate_response": True,
                  "calibrate_hits": True, "hit_bins": 2, "calibrate_spread": True, "spread_bins": 2},
        # CPU, <= 45 min of training: the central 25 x 25 x 25 cells (the first 3DGAN's image size,
        # 99.5 % of the energy on simulator v2), half the channels, batch 8, 1 200 steps; selection every
        # 100 steps; the sampling fraction calibrated in (E_p, theta) on validation showers afterwards; the
        # shower drawn along the beam axis and tilted by theta (Tilt); cells fed as (50 E)^0.5; the hits above
        # 0.2 MeV calibrated on validation showers before the sampling fraction (HitCalibration), each shower's
        # total moved to the real quantile at its E_p (SpreadCalibration) (README: measured)
        "default": {"crop": 25, "width": 0.5, "batch": 8, "steps": 1200, "n_train": 10000, "n_select": 256,
                    "select_every": 100, "timing_batches": [1, 100], "calibrate_response": True,
                    "tilt": True, "power": 0.5, "calibrate_hits": True, "calibrate_spread": True},
        # the paper: full images, batch 64; 130 epochs on 100-200 GeV first, then 30 on 2-500 GeV starting
        # from those weights; the epoch whose generator has the lowest sampling-fraction error on the hold-out is kept
        "paper": {"crop": None, "width": 1.0, "batch": 64, "stages": [{"energy": [100.0, 200.0], "epochs": 130},
                                                                    {"energy": None, "epochs": 30}],
                  "n_train": None, "n_select": 2000, "select_every": "epoch", "timing_batches": [1, 100, 10000]},
    }
    @classmethod
    def supports(cls, dataset):
        if tuple(dataset.geometry.shape) != SHAPE or not set(LABELS) <= set(dataset.conditions):
            return f"model '3dgan' needs 51x51x25 showers with conditions energy and theta; '{dataset.name}' has " \
                   f"{'x'.join(map(str, dataset.geometry.shape))} and {', '.join(dataset.conditions) or 'none'}"
        return None

    def __init__(self, dataset, config, device):
        super().__init__(dataset, config, device)
        config = self.config
        g = dataset.geometry
        missing = [c for c in LABELS if c not in dataset.conditions]
        if missing or tuple(g.shape) != SHAPE:
            raise calobench.CalobenchError(f"3dgan needs 51x51x25 showers with conditions {', '.join(LABELS)}")
        crop = config["crop"]
        self.net_shape = (crop, crop, SHAPE[2]) if crop else SHAPE
        w = config["width"]
        self.nets = {"generator": Generator(w, self.net_shape, config["leak"]),
                     "discriminator": Discriminator(w, config["dropout"], self.net_shape)}
        if config["calibrate_response"]:
            self.nets["calibration"] = SamplingCalibration()
        if config["tilt"]:
            self.nets["tilt"] = Tilt()
        if config["calibrate_hits"]:
            self.nets["hits"] = HitCalibration(config["hit_bins"])
        if config["calibrate_spread"]:
            self.nets["spread"] = SpreadCalibration(config["spread_bins"])
        for net in self.nets.values():
            net.to(device)
        self.optimizers = {n: torch.optim.RMSprop(self.nets[n].parameters(), lr=config["lr"])
                           for n in ("generator", "discriminator")}
        self.threshold = float(g.threshold)

    # -- scales ----------------------------------------------------------------
    def to_net(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.config["xscale"]) ** self.config["power"]

    def from_net(self, u: torch.Tensor) -> torch.Tensor:
        return torch.clamp(u, min=0) ** (1 / self.config["power"]) / self.config["xscale"]

    def crop(self, x: np.ndarray) -> np.ndarray:
        c = self.net_shape[0]
        lo = (SHAPE[0] - c) // 2
        return x[:, lo:lo + c, lo:lo + c, :]

    def uncrop(self, x: torch.Tensor) -> torch.Tensor:
        c = self.net_shape[0]
        if c == SHAPE[0]:
            return x
        lo = (SHAPE[0] - c) // 2
        return F.pad(x, (0, 0, lo, SHAPE[1] - c - lo, lo, SHAPE[0] - c - lo))

    def latent(self, energy: torch.Tensor, theta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(len(energy), LATENT - 2, generator=generator).to(energy.device) if generator is not None \
            else torch.randn(len(energy), LATENT - 2, device=energy.device)
        return torch.cat([energy[:, None] / 100, theta[:, None], noise], 1)

    def generate_net(self, energy: torch.Tensor, theta: torch.Tensor, generator: torch.Generator | None = None):
        """The generator's image for these labels in the network's scale, tilted by theta with ``tilt``."""
        u = self.nets["generator"](self.latent(energy, theta, generator))
        return self.nets["tilt"](u, theta) if "tilt" in self.nets else u

    # -- training --------------------------------------------------------------
    def _stages(self, energy: np.ndarray) -> list:
        """[(indices of the training showers, number of steps)] per stage."""
        c = self.config
        if c["stages"] is None:
            return [(np.arange(len(energy)), int(c["steps"]))]
        out = []
        for st in c["stages"]:
            rng = st.get("energy")
            idx = np.arange(len(energy)) if rng is None else np.flatnonzero((energy >= rng[0]) & (energy <= rng[1]))
            if len(idx) == 0:
                raise calobench.CalobenchError(f"3dgan: no training shower in the stage energy range {rng}")
            out.append((idx, max(1, math.ceil(st["epochs"] * len(idx) / c["batch"]))))
        return out

    def total_steps(self, n_train: int) -> int:
        """Steps for ``n_train`` showers with E_p flat over the dataset's range (for projections)."""
        c = self.config
        if c["stages"] is None:
            return int(c["steps"])
        lo, hi = self.dataset.conditions["energy"]
        total = 0
        for st in c["stages"]:
            a, b = st.get("energy") or (lo, hi)
            frac = max(0.0, min(b, hi) - max(a, lo)) / (hi - lo)
            total += max(1, math.ceil(st["epochs"] * n_train * frac / c["batch"]))
        return total

    def _prepare(self, data):
        """Cropped network-scale images, labels, and the cropped (linear) energy sums, block by block."""
        X, S = [], []
        for block in data.chunks(256):
            x = torch.as_tensor(np.ascontiguousarray(self.crop(block.array())))
            S.append(x.sum((1, 2, 3)))
            X.append(self.to_net(x))
        E = torch.as_tensor(data.conditions["energy"])
        TH = torch.as_tensor(data.conditions["theta"])
        return torch.cat(X), E, TH, torch.cat(S)

    def _sf_error(self, sel) -> float:
        """Mean absolute relative error of the sampling fraction (sum/E_p) in 10 E_p bins: the
        selection score (lower is better)."""
        real_sum, E = sel.array().sum((1, 2, 3)), sel.conditions["energy"]
        gen = self.sample(sel.conditions)
        gen_sum = gen.sum((1, 2, 3))
        edges = np.quantile(E, np.linspace(0, 1, 11))
        b = np.clip(np.searchsorted(edges, E, side="right") - 1, 0, 9)
        err = [abs(gen_sum[b == k].mean() / real_sum[b == k].mean() - 1) for k in range(10) if (b == k).any()]
        return float(np.mean(err))

    def fit(self, train, trainer, validation=None):
        c, dev = self.config, self.device
        data = train.head(c["n_train"]) if c.get("n_train") else train
        X, E, TH, S = self._prepare(data)
        sel = (validation if validation is not None else train).head(c["n_select"])
        G, D = self.nets["generator"], self.nets["discriminator"]
        opt_g, opt_d = self.optimizers["generator"], self.optimizers["discriminator"]
        w_bce, w_aux, w_ang, w_sum = c["loss_weights"]
        stages = self._stages(E.numpy())
        every = c["select_every"]
        every = max(1, math.ceil(len(X) / c["batch"])) if every == "epoch" else int(every)
        total = sum(n for _, n in stages)
        best = calobench.BestWeights(G, mode="min")  # the generator with the lowest sampling-fraction error
        trainer.track("best_generator", best)
        if c["tilt"]:  # measured once on the training showers (the crop the networks see)
            trainer.once("tilt", lambda g: self.nets["tilt"].measure(self.from_net(X[:2000]), TH[:2000].numpy()))
        B, done = c["batch"], 0
        for i, (pool, n_steps) in enumerate(stages):
            name = "train" if len(stages) == 1 else f"stage{i + 1}"
            for step in trainer.phase(name, n_steps):
                g_step = done + step + 1  # steps done over all stages after this one
                idx = torch.as_tensor(pool[trainer.rng.integers(0, len(pool), B)])
                real, e, th, s_real = X[idx].to(dev), E[idx].to(dev), TH[idx].to(dev), S[idx].to(dev)
                G.train(), D.train()
                with torch.no_grad():
                    fake = self.generate_net(e, th)
                # discriminator: the real batch, then a fake batch for the same conditions (labels flipped 5 %)
                losses_d = []
                for images, label in ((real, 1.0), (fake, 0.0)):
                    flip = torch.as_tensor(trainer.rng.random(B) < c["label_flip"], device=dev)
                    target = torch.where(flip, 1.0 - label, label).float()
                    logit, aux = D(images)
                    loss_d = w_bce * F.binary_cross_entropy_with_logits(logit, target) + w_aux * mape(aux, e / 100)
                    opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    opt_d.step()
                    losses_d.append(loss_d.detach())
                # generator, twice: fool D, keep E_p, the angle and the energy sum of the conditions
                for _ in range(c["generator_steps"]):
                    gen = self.generate_net(e, th)
                    logit, aux = D(gen)
                    lin = self.from_net(gen)
                    ang = measured_angle(lin)
                    ang = torch.where(torch.isnan(ang), torch.full_like(ang, math.pi / 2), ang)
                    l_bce = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
                    l_aux, l_ang, l_sum = mape(aux, e / 100), (ang - th).abs().mean(), mape(ecal_sum(lin), s_real)
                    loss_g = w_bce * l_bce + w_aux * l_aux + w_ang * l_ang + w_sum * l_sum
                    opt_g.zero_grad(set_to_none=True)
                    loss_g.backward()
                    opt_g.step()
                trainer.log(d_real=losses_d[0], d_fake=losses_d[1], generator=loss_g, angle_mae=l_ang,
                            sum_mape=l_sum)
                if g_step % every == 0 or g_step == total:
                    best.update(self._sf_error(sel), g_step)
            done += n_steps
        best.restore()
        if c["calibrate_hits"] and validation is not None:
            trainer.once("calibrate_hits", lambda g: self.calibrate_hits(validation, g))
        if c["calibrate_response"] and validation is not None:
            trainer.once("calibrate", lambda g: self.calibrate(validation, g))

    def _start_calibration(self, net: str, method: str, option: str, validation) -> tuple:
        """The calibration ``net``, switched off so that what is measured next is uncalibrated, and the
        validation labels (E_p, theta) as float64 arrays."""
        if net not in self.nets:
            raise calobench.CalobenchError(f"3dgan: {method}() needs --set {option}=true")
        self.nets[net].active.fill_(False)
        return (self.nets[net], np.asarray(validation.conditions["energy"], np.float64),
                np.asarray(validation.conditions["theta"], np.float64))

    @torch.no_grad()
    def calibrate(self, validation, generator: torch.Generator | None = None) -> dict:
        """Fit the ``calibration`` net on validation showers (the test split is never seen): their sampling
        fractions against those of ``calibrate_draws`` generated showers per validation label; then, with
        ``calibrate_spread``, the ``spread`` net on the same showers. Returns the mean absolute sampling-fraction
        error over 10 E_p bins before and after (and the mean ratio of the generated to the real spread of the
        sampling fraction before and after the spread map)."""
        cal, energy, theta = self._start_calibration("calibration", "calibrate", "calibrate_response", validation)
        sf_real = np.concatenate([b.array().astype(np.float64).sum((1, 2, 3)) for b in validation.chunks(256)]) / energy
        n = self.config["calibrate_draws"]
        e_gen, th_gen = np.tile(energy, n), np.tile(theta, n)
        sf_gen = self._sums(e_gen, th_gen, generator) / e_gen
        out = {"sf_error_before": _sf_error(energy, sf_real, e_gen, sf_gen)}
        cal.set((energy, theta, sf_real), (e_gen, th_gen, sf_gen))
        sf_gen = sf_gen * cal.factor(e_gen, th_gen)
        if "spread" in self.nets:
            spread = self.nets["spread"]
            spread.active.fill_(False)
            mean_real, mean_gen = self._real_mean(energy, theta), self._real_mean(e_gen, th_gen)
            before = _spread_ratio(energy, sf_real, e_gen, sf_gen)
            spread.set((energy, sf_real / mean_real), (e_gen, sf_gen / mean_gen))
            sf_gen = spread.mapped(e_gen, sf_gen / mean_gen) * mean_gen
            after = _spread_ratio(energy, sf_real, e_gen, sf_gen)
            if np.isfinite(before) and np.isfinite(after):  # too few validation showers to measure a spread: not
                out.update(spread_before=before, spread_after=after)  # reported (the run's log takes finite values)
        out["sf_error_after"] = _sf_error(energy, sf_real, e_gen, sf_gen)
        return out

    def _real_mean(self, energy, theta) -> np.ndarray:
        return np.clip(self.nets["calibration"].real_mean(energy, theta), 1e-9, None)

    @torch.no_grad()
    def calibrate_hits(self, validation, generator: torch.Generator | None = None) -> dict:
        """Set the ``hits`` net on validation showers (the test split is never seen): per quantile bin of
        their energies, the offset at which one shower generated per validation label has their mean
        number of hits above 0.2 MeV. Returns the offsets and the hits before and after, per bin."""
        from .checks import HIT_THRESHOLD_GEV

        cal, energy, theta = self._start_calibration("hits", "calibrate_hits", "calibrate_hits", validation)
        real_hits = np.concatenate([(b.array() > HIT_THRESHOLD_GEV).sum((1, 2, 3)) for b in validation.chunks(256)])
        self.nets["generator"].eval()
        u = []
        for i in range(0, len(energy), self.config["sample_batch"]):
            e = torch.as_tensor(energy[i:i + self.config["sample_batch"]], dtype=torch.float32, device=self.device)
            t = torch.as_tensor(theta[i:i + self.config["sample_batch"]], dtype=torch.float32, device=self.device)
            u.append(self.generate_net(e, t, generator).cpu())
        u = torch.cat(u).double()
        u_hit = float(self.to_net(torch.tensor(HIT_THRESHOLD_GEV, dtype=torch.float64)))
        bins = cal.delta.numel()
        edges = np.quantile(energy, np.linspace(0, 1, bins + 1))
        which = np.clip(np.searchsorted(edges, energy, side="right") - 1, 0, bins - 1)
        knots, deltas, out = [], [], {}
        for k in range(bins):
            m = which == k
            if not m.any():
                raise calobench.CalobenchError("3dgan: an empty energy bin in the hit calibration (too few validation showers)")
            target = float(real_hits[m].mean())
            d = HitCalibration.find_delta(u[torch.as_tensor(m)], u_hit, target)
            knots.append(float(np.exp(np.log(energy[m]).mean()))), deltas.append(d)
            before = float((u[torch.as_tensor(m)] > u_hit).sum()) / m.sum()
            out.update({f"hits_real_{knots[-1]:.0f}GeV": target, f"hits_before_{knots[-1]:.0f}GeV": before,
                        f"delta_{knots[-1]:.0f}GeV": d})
        cal.set(knots, deltas)
        return out

    # -- generation ------------------------------------------------------------
    @torch.no_grad()
    def _generate(self, energy, theta, generator: torch.Generator | None = None, calibrated: bool = True):
        """Generated showers (full 51 x 51 x 25, linear scale, before the readout threshold), batch by batch."""
        self.nets["generator"].eval()
        e_all = torch.as_tensor(np.asarray(energy, np.float32))
        th_all = torch.as_tensor(np.asarray(theta, np.float32))
        cal = self.nets.get("calibration") if calibrated else None
        spread = self.nets.get("spread") if calibrated else None
        for i in range(0, len(e_all), self.config["sample_batch"]):
            e = e_all[i:i + self.config["sample_batch"]].to(self.device)
            th = th_all[i:i + self.config["sample_batch"]].to(self.device)
            u = self.generate_net(e, th, generator)
            if "hits" in self.nets:
                u = self.nets["hits"](u, e)
            x = self.uncrop(self.from_net(u))
            if cal is not None and bool(cal.active):
                e_np, th_np = e.double().cpu().numpy(), th.double().cpu().numpy()
                k = cal.factor(e_np, th_np)
                x = x * torch.as_tensor(k, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
                if spread is not None and bool(spread.active):
                    ratio = self._readout(x).double().sum((1, 2, 3)).cpu().numpy() / e_np / self._real_mean(e_np, th_np)
                    k = spread.factor(e_np, ratio)
                    x = x * torch.as_tensor(k, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
            yield x

    def _readout(self, x: torch.Tensor) -> torch.Tensor:
        """Cells under the readout threshold read 0 (with ``apply_threshold``)."""
        return torch.where(x < self.threshold, torch.zeros_like(x), x) if self.config["apply_threshold"] else x

    def _sums(self, energy, theta, generator=None) -> np.ndarray:
        """Total energy of uncalibrated generated showers for these labels (readout threshold applied)."""
        out = []
        for x in self._generate(energy, theta, generator, calibrated=False):
            out.append(self._readout(x).double().sum((1, 2, 3)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    @torch.no_grad()
    def sample(self, conditions):
        missing = [c for c in LABELS if c not in conditions]
        if missing:
            raise calobench.CalobenchError(f"3dgan needs conditions {', '.join(LABELS)}; missing {', '.join(missing)}")
        self.warn_extrapolation(conditions, LABELS)
        out = []
        for x in self._generate(conditions["energy"], conditions["theta"]):
            out.append(self._readout(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, *SHAPE), np.float32)
