"""The ``hgcal_wgan`` calobench model: WGAN-GP with two constrainers."""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pydantic
import torch
from pydantic import PositiveFloat, PositiveInt

import calobench

from calobench.training import gradient_penalty, interpolates

from .wgan import N_LATENT, Constrainer, Critic, Generator

LABELS = ("energy", "impact_x", "impact_y")
# label normalisation and the physical units of the auxiliary loss (GeV, mm)
LABEL_SCALE = torch.tensor([100.0, 3.0, 2.5])
AUX_UNITS = torch.tensor([100.0, 30.0, 25.0])


class HGCALOptions(calobench.Options):
    width: PositiveFloat = 1.0  # channel multiplier of every network
    batch: PositiveInt = 256
    n_critic: PositiveInt = 9
    steps: PositiveInt | None = None  # generator steps; or give epochs
    epochs: PositiveFloat | None = None  # passes over the training set (counted in critic batches)
    lr: PositiveFloat = 1e-4
    lr_drops: list[float] = []  # steps (or fractions of the run, < 1) after which lr drops x10
    n_train: PositiveInt | None = None  # training showers used (None: all)
    constrainer_each_critic_step: bool = True
    gp_lambda: float = 5.0
    kappa: float = 0.01  # weight of the constrainers' term in the generator loss
    adam_betas: tuple[float, float] = (0.0, 0.9)
    apply_threshold: bool = True
    transform: Literal["linear", "log"] = "log"

    @pydantic.model_validator(mode="after")
    def _length(self):
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps or epochs (to replace a preset's epochs by steps: "
                             "--set epochs=null --set steps=N)")
        return self


class HGCALWGAN(calobench.Model):
    name = "hgcal_wgan"
    task = "generate"
    datasets = ("hgcal",)
    description = "WGAN-GP, 7 generator towers, label-aware critic, energy + position constrainers"
    distributed = True
    Options = HGCALOptions
    inference_nets = ("generator",)
    presets = {
        # seconds: for tests
        "smoke": {"width": 0.125, "batch": 16, "n_critic": 2, "steps": 4, "lr": 1e-3, "lr_drops": [],
                  "n_train": 512, "timing_batches": [1, 100], "constrainer_each_critic_step": False, "n_eval": 1000},
        # a useful model in <= 15 min on a 2-core CPU: a quarter of the channels, n_critic 3,
        # constrainers updated once per generator step (see the plugin README)
        "default": {"width": 0.25, "batch": 64, "n_critic": 3, "steps": 1000, "lr": 5e-4,
                    "lr_drops": [700, 900], "n_train": 100_000, "constrainer_each_critic_step": False},
        # the paper: 150 epochs of 5 x 100k showers, batch 256, n_critic 9
        "paper": {"width": 1.0, "batch": 256, "n_critic": 9, "epochs": 150, "lr": 1e-4, "lr_drops": [0.5, 0.75],
                  "n_train": None, "constrainer_each_critic_step": True},
    }

    def __init__(self, dataset, config, device):
        super().__init__(dataset, config, device)
        config = self.config
        g = dataset.geometry
        missing = [c for c in LABELS if c not in dataset.conditions]
        if missing or g.shape != (12, 15, 7):
            raise calobench.CalobenchError(f"hgcal_wgan needs 12x15x7 showers with conditions {', '.join(LABELS)}")
        mask = torch.as_tensor(g.mask if g.mask is not None else np.ones(g.shape, bool))
        w = config["width"]
        self.nets = {"generator": Generator(mask, w), "critic": Critic(w), "energy_constrainer": Constrainer(1, w),
                     "position_constrainer": Constrainer(2, w)}
        for net in self.nets.values():
            net.to(device)
        betas = tuple(config["adam_betas"])
        self.optimizers = {
            "generator": torch.optim.Adam(self.nets["generator"].parameters(), config["lr"], betas=betas),
            "critic": torch.optim.Adam(self.nets["critic"].parameters(), config["lr"], betas=betas),
            "constrainers": torch.optim.Adam([*self.nets["energy_constrainer"].parameters(),
                                              *self.nets["position_constrainer"].parameters()], config["lr"]),
        }
        # MIP per network unit (linear transform), set from the training data; a buffer of the
        # generator, so it travels with the weights
        self.nets["generator"].register_buffer("scale", torch.ones(1, device=device))
        self.threshold = float(g.threshold)

    @property
    def scale(self) -> torch.Tensor:
        return self.nets["generator"].scale

    # -- the networks' cell scale ------------------------------------------------
    def to_net(self, x: torch.Tensor) -> torch.Tensor:
        """linear: x / scale (99th percentile of hit cells); log: log1p(x / 2 MIP) / 4."""
        if self.config["transform"] == "log":
            return torch.log1p(x / max(self.threshold, 1e-3)) / 4
        return x / self.scale.to(x.device)

    def from_net(self, u: torch.Tensor) -> torch.Tensor:
        if self.config["transform"] == "log":
            return torch.expm1(4 * u) * max(self.threshold, 1e-3)
        return u * self.scale.to(u.device)

    # -- labels ----------------------------------------------------------------
    def _labels(self, conditions) -> torch.Tensor:
        missing = [c for c in LABELS if c not in conditions]
        if missing:
            raise calobench.CalobenchError(
                f"hgcal_wgan needs conditions {', '.join(LABELS)}; missing {', '.join(missing)}")
        lab = np.stack([np.asarray(conditions[c], np.float32) for c in LABELS], 1)
        return torch.as_tensor(lab) / LABEL_SCALE

    # -- training --------------------------------------------------------------
    def total_steps(self, n_train: int) -> int:
        c = self.config
        if c.get("epochs"):
            return max(1, math.ceil(c["epochs"] * n_train / (c["batch"] * c["n_critic"])))
        return int(c["steps"])

    def _lr_at(self, step: int, total: int) -> float:
        drops = [d * total if isinstance(d, float) and d < 1 else d for d in self.config["lr_drops"]]
        return self.config["lr"] * 0.1 ** sum(step >= d for d in drops)

    def fit(self, train, trainer, validation=None):
        """Multi-process safe (``calobench.distributed``): every rank draws the same global batch and
        noise and trains on its slice; the critic sees real, fake and interpolated showers in one
        forward pass, so its loss, gradient penalty included, is one backward through DDP."""
        from calobench import distributed as dist

        c, dev = self.config, self.device
        data = train.head(c["n_train"]) if c.get("n_train") else train.load()
        X = torch.as_tensor(data.array())
        nz = X[X > 0]
        self.scale.copy_(torch.quantile(nz[: 1_000_000], 0.99).reshape(1) if len(nz) else torch.ones(1))
        X = self.to_net(X)
        L = self._labels(data.conditions)
        G, D = self.nets["generator"], self.nets["critic"]
        AE, AP = self.nets["energy_constrainer"], self.nets["position_constrainer"]
        Gw, Dw, AEw, APw = (dist.wrap(n, dev) for n in (G, D, AE, AP))  # DDP when world > 1
        opt_g, opt_d, opt_a = self.optimizers["generator"], self.optimizers["critic"], self.optimizers["constrainers"]
        units = AUX_UNITS.to(dev)
        total = self.total_steps(len(X))
        B = c["batch"]
        for step in trainer.steps(self, total):
            lr = self._lr_at(step, total)
            for opt in (opt_g, opt_d, opt_a):
                for group in opt.param_groups:
                    group["lr"] = lr
            AE.train(), AP.train()
            for k in range(c["n_critic"]):
                idx = dist.shard(torch.as_tensor(trainer.rng.integers(0, len(X), B)))
                real, lab = X[idx].to(dev, non_blocking=True), L[idx].to(dev, non_blocking=True)
                z = dist.shard(torch.rand(B, N_LATENT) * 2 - 1).to(dev)
                eps = dist.shard(torch.rand(B, 1, 1, 1)).to(dev)
                with torch.no_grad():
                    fake = Gw(z, lab)
                x_hat = interpolates(real, fake, eps)
                out = Dw(torch.cat([real, fake, x_hat]), torch.cat([lab, lab, lab]))
                d_real, d_fake, d_hat = out.split(len(real))
                gp = gradient_penalty(d_hat, x_hat)
                d_real, d_fake = d_real.mean(), d_fake.mean()
                loss_d = d_fake - d_real + c["gp_lambda"] * gp
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                if c["constrainer_each_critic_step"] or k == c["n_critic"] - 1:
                    loss_a = ((AEw(real)[:, 0] - lab[:, 0]) ** 2).mean() + ((APw(real) - lab[:, 1:]) ** 2).mean()
                    opt_a.zero_grad(set_to_none=True)
                    loss_a.backward()
                    opt_a.step()
            # generator step: critic and constrainers frozen (plain modules: no gradient exchange for them)
            AE.eval(), AP.eval()
            idx = dist.shard(torch.as_tensor(trainer.rng.integers(0, len(X), B)))
            lab = L[idx].to(dev)
            fake = Gw(dist.shard(torch.rand(B, N_LATENT) * 2 - 1).to(dev), lab)
            pred = torch.cat([AE(fake), AP(fake)], 1)
            aux = (torch.abs(pred - lab) * units).mean(0).sum()  # |L_real - L_fake| in GeV and mm
            loss_g = -D(fake, lab).mean() + c["kappa"] * aux
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            trainer.log(critic=loss_d, generator=loss_g, wasserstein=d_real - d_fake, constrainer=loss_a,
                        aux_gev_mm=aux)

    # -- generation ------------------------------------------------------------
    @torch.no_grad()
    def sample(self, conditions):
        lab = self._labels(conditions).to(self.device)
        self.warn_extrapolation(conditions, LABELS, lambda c: "energy outside the trained range" if c == "energy"
                                else f"{c} outside the beam spot")
        G = self.nets["generator"].eval()
        z = torch.rand(len(lab), N_LATENT, device=self.device) * 2 - 1
        out = self.from_net(G(z, lab))
        if self.config["apply_threshold"]:  # the detector's readout threshold, as in the data
            out = torch.where(out < self.threshold, torch.zeros_like(out), out)
        return out.float().cpu().numpy()

    def reconstruct(self, showers: np.ndarray) -> dict:
        """The constrainers' labels for showers (used by the plots)."""
        x = self.to_net(torch.as_tensor(showers, device=self.device))
        AE, AP = self.nets["energy_constrainer"].eval(), self.nets["position_constrainer"].eval()
        with torch.no_grad():
            y = torch.cat([AE(x), AP(x)], 1).cpu() * LABEL_SCALE
        return {c: y[:, i].numpy() for i, c in enumerate(LABELS)}
