"""The ``hgcal_wgan`` calobench model: WGAN-GP with two constrainers."""
from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
import pydantic
import torch
from pydantic import PositiveFloat, PositiveInt
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import calobench

from calobench.training import ResponseCalibration, gradient_penalty, interpolates

from .wgan import N_LATENT, N_LAYERS, Constrainer, Critic, Generator

LABELS = ("energy", "impact_x", "impact_y")
# label normalisation and the physical units of the auxiliary loss (GeV, mm)
LABEL_SCALE = torch.tensor([100.0, 3.0, 2.5])
AUX_UNITS = torch.tensor([100.0, 30.0, 25.0])
N_SUMMARIES = N_LAYERS + 1  # the critic's shower summaries: 7 layer sums and the total


def beam_groups(energy: np.ndarray, gap: float = 0.02) -> list[np.ndarray]:
    """Indices of showers grouped by beam energy: sorted energies split where the next one is more
    than ``gap`` (relative) above the last (hgcal: 20, 32, 50, 80, 90 GeV with 1 % smearing). A
    continuous spectrum is one group."""
    order = np.argsort(energy, kind="stable")
    e = energy[order]
    cuts = np.nonzero(e[1:] > e[:-1] * (1 + gap))[0] + 1
    return np.split(order, cuts)


class HGCALOptions(calobench.Options):
    width: PositiveFloat = 1.0  # channel multiplier of every network
    batch: PositiveInt = 256
    n_critic: PositiveInt = 9
    steps: PositiveInt | None = None  # generator steps; or give epochs
    epochs: PositiveFloat | None = None  # passes over the training set (counted in critic batches)
    lr: PositiveFloat = 1e-3  # the generator's learning rate
    lr_critic: PositiveFloat | None = None  # None: lr
    lr_constrainer: PositiveFloat | None = None  # None: lr
    lr_drops: list[float] = []  # steps (or fractions of the run, < 1) after which every lr drops x10
    constrainer_stop: float | None = None  # step (or fraction of the run, < 1) after which the constrainers freeze
    n_train: PositiveInt | None = None  # training showers used (None: all)
    constrainer_each_critic_step: bool = True
    gp_lambda: float = 5.0
    kappa: float = 0.01  # weight of the constrainers' term in the generator loss
    # paper: |L_real - L_fake|, the constrainers' loss on real showers against theirs on generated
    # showers of the same labels; label: |a(G) - label| (pulls every shower to the mean response)
    aux: Literal["paper", "label"] = "paper"
    adam_betas: tuple[float, float] = (0.0, 0.9)
    apply_threshold: bool = True
    transform: Literal["linear", "log"] = "log"
    # the networks see cells per unit of beam energy (E_cell x 50 GeV / E_beam): the response is linear in
    # the energy by construction, the generator learns one shape family; the constrainers see true cells
    per_gev: bool = False
    # bounded: u_max * tanh(relu / u_max), u_max from the data; total: a head draws the visible energy, the ReLU
    # cells are its fractions; softmax: the same, the fractions a softmax over the live cells
    output: Literal["relu", "bounded", "total", "softmax"] = "relu"
    # > 0: the output ReLU passes a leaky ReLU's gradient (this slope below zero) back, its output unchanged
    leak: float = pydantic.Field(0.0, ge=0.0, lt=1.0)
    # output total/softmax: the head that draws the visible energy learns adversarially (with the cells) or as a
    # Gaussian in log total given the labels, by maximum likelihood on the real training showers' totals
    total_fit: Literal["adversarial", "likelihood"] = "adversarial"
    critic_threshold: bool = False  # the critic sees generated showers after the 2 MIP readout threshold
    critic_summaries: bool = False  # the critic's label branch also reads the 7 layer sums and the total
    # ... and the number of hits above 2 MIP per layer, counted softly (sigmoid((u - u_2MIP) / hit_softness)) on
    # the generated cells before the threshold, so that the generator gets a gradient for cells just under it
    critic_hits: bool = False
    hit_softness: PositiveFloat = 0.02  # network (log) units: about 0.3 MIP at the threshold
    label_width: PositiveInt = 10  # the critic's label branch
    ema: float = pydantic.Field(0.0, ge=0.0, lt=1.0)  # > 0: sample from an EMA of the generator weights
    # after training: scale the generated cells per beam energy (before the 2 MIP threshold) so that the mean
    # visible energy of showers generated for validation labels matches the validation showers'
    calibrate_response: bool = False
    n_calibrate: PositiveInt = 5000  # validation showers used for that

    @pydantic.model_validator(mode="after")
    def _length(self):
        if self.total_fit == "likelihood" and self.output not in ("total", "softmax"):
            raise ValueError(f"total_fit=likelihood fits the head of output=total or softmax, not output={self.output}")
        if self.output in ("total", "softmax") and self.transform != "log":
            raise ValueError(f"output={self.output} generates on the log cell scale: it needs transform=log")
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
                  "n_train": 512, "timing_batches": [1, 100], "constrainer_each_critic_step": False, "n_eval": 1000,
                  "output": "total", "critic_threshold": True, "critic_summaries": True, "ema": 0.9, "per_gev": True,
                  "critic_hits": True, "calibrate_response": True, "n_calibrate": 200, "total_fit": "likelihood"},
        # a 2-core CPU in 30 minutes: a quarter of the channels, n_critic 3, 4 000 steps; cells per GeV of
        # beam energy, the visible energy drawn first (output total), a critic that sees thresholded showers
        # with their energy sums and hit counts, an EMA generator, the response calibrated per beam energy
        # on validation showers (every deviation and what it bought: the plugin README)
        "default": {"width": 0.25, "batch": 64, "n_critic": 3, "steps": 4000, "lr": 5e-4, "lr_critic": 5e-4,
                    "lr_constrainer": 5e-4, "lr_drops": [0.8], "constrainer_stop": None, "n_train": 100_000,
                    "constrainer_each_critic_step": False, "output": "total", "critic_threshold": True,
                    "critic_summaries": True, "critic_hits": True, "label_width": 64, "ema": 0.995,
                    "per_gev": True, "calibrate_response": True, "total_fit": "likelihood"},
        # the paper: 150 epochs of 5 x 100k showers, batch 256, n_critic 9; generator 1e-3, critic 5e-4,
        # constrainers 5e-5 and frozen after 50 epochs; learning rates x0.1 after 60 and 100 epochs
        "paper": {"width": 1.0, "batch": 256, "n_critic": 9, "epochs": 150, "lr": 1e-3, "lr_critic": 5e-4,
                  "lr_constrainer": 5e-5, "lr_drops": [60 / 150, 100 / 150], "constrainer_stop": 50 / 150,
                  "n_train": None, "constrainer_each_critic_step": True, "aux": "paper", "output": "relu",
                  "critic_threshold": False, "critic_summaries": False, "label_width": 10, "ema": 0.0},
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
        self.nets = {"generator": Generator(mask, w, config["output"], config["leak"], config["total_fit"]),
                     "critic": Critic(w, (N_SUMMARIES + N_LAYERS * config["critic_hits"]) if config["critic_summaries"]
                                      else 0, config["label_width"]),
                     "energy_constrainer": Constrainer(1, w), "position_constrainer": Constrainer(2, w)}
        # MIP per network unit (linear transform), set from the training data; a buffer of the
        # generator, so it travels with the weights
        self.nets["generator"].register_buffer("scale", torch.ones(1))
        if config["calibrate_response"]:
            self.nets["calibration"] = ResponseCalibration()
        if config["ema"] > 0:
            self.nets["ema"] = AveragedModel(self.nets["generator"], multi_avg_fn=get_ema_multi_avg_fn(config["ema"]))
            self.inference_nets = ("ema",)
        for net in self.nets.values():
            net.to(device)
        betas = tuple(config["adam_betas"])
        lr = config["lr"]
        self.optimizers = {
            "generator": torch.optim.Adam(self.nets["generator"].parameters(), lr, betas=betas),
            "critic": torch.optim.Adam(self.nets["critic"].parameters(), config["lr_critic"] or lr, betas=betas),
            "constrainers": torch.optim.Adam([*self.nets["energy_constrainer"].parameters(),
                                              *self.nets["position_constrainer"].parameters()],
                                             config["lr_constrainer"] or lr),
        }
        self.threshold = float(g.threshold)

    @property
    def scale(self) -> torch.Tensor:
        return self.nets["generator"].scale

    def sampling_generator(self):
        return (self.nets["ema"].module if "ema" in self.nets else self.nets["generator"]).eval()

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

    def _energy_scale(self, lab: torch.Tensor) -> torch.Tensor:
        """E_beam / 50 GeV per shower, shaped to broadcast over cells (1 without ``per_gev``)."""
        if not self.config["per_gev"]:
            return torch.ones(len(lab), 1, 1, 1, device=lab.device)
        return (lab[:, 0] * LABEL_SCALE[0] / 50.0).reshape(-1, 1, 1, 1)

    def physical(self, u: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        """Network cells -> the network scale of the true cells (what the constrainers see)."""
        if not self.config["per_gev"]:
            return u
        return self.to_net(self.from_net(u) * self._energy_scale(lab))

    def summaries(self, u: torch.Tensor) -> torch.Tensor:
        """The 7 layer sums and the total visible energy of showers in network units, on the log scale
        of the cells (log1p(sum / 2 MIP) / 4): what the response and the resolution are made of."""
        sums = self.from_net(u).sum((1, 2))
        return self.to_net(torch.cat([sums, sums.sum(1, keepdim=True)], 1))

    def hit_summaries(self, u: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        """The number of hits above 2 MIP per layer, log1p(n) / 4, counted softly: each cell weighs
        sigmoid((u - u_2MIP) / hit_softness), so cells just under the threshold carry a gradient. Real
        cells are zero or above the threshold: their count is the hard one but for the few cells within
        a softness of it."""
        thr = self._threshold_net(lab)
        n = torch.sigmoid((u - thr) / self.config["hit_softness"]).sum((1, 2))
        return torch.log1p(n) / 4

    def _threshold_net(self, lab: torch.Tensor) -> torch.Tensor:
        """2 MIP in the networks' cell units, per shower (per-GeV cells: it scales with the beam energy)."""
        return self.to_net(self.threshold / self._energy_scale(lab))

    def readout(self, u: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        """The detector's readout threshold in network units: cells below 2 MIP read zero. The gradient
        passes straight through (as if there were no threshold): a plain cut gives cells below it no
        gradient, and a generator whose cells all start below it stays empty (measured: 500 steps of
        the default preset ended with every cell under 0.2 MIP)."""
        thr = self._threshold_net(lab)
        cut = torch.where(u < thr, torch.zeros_like(u), u)
        return u + (cut - u).detach()

    def _constrain(self, u: torch.Tensor) -> torch.Tensor:
        """The constrainers' normalised labels (energy, x, y) for showers in the networks' true-cell units."""
        return torch.cat([self.nets["energy_constrainer"](u), self.nets["position_constrainer"](u)], 1)

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

    @staticmethod
    def _at(d: float, total: int) -> float:
        return d * total if isinstance(d, float) and d < 1 else d

    def _lr_factor(self, step: int, total: int) -> float:
        return 0.1 ** sum(step >= self._at(d, total) for d in self.config["lr_drops"])

    def fit(self, train, trainer, validation=None):
        """Multi-process safe (``calobench.distributed``): every rank draws the same global batch and
        noise and trains on its slice; the critic sees real, fake and interpolated showers in one
        forward pass, so its loss, gradient penalty included, is one backward through DDP."""
        from calobench import distributed as dist

        c, dev = self.config, self.device
        data = train.head(c["n_train"]) if c.get("n_train") else train.load()
        X = torch.as_tensor(data.array())
        L = self._labels(data.conditions)
        if c["per_gev"]:
            X = X / self._energy_scale(L)
        nz = X[X > 0]
        self.scale.copy_(torch.quantile(nz[: 1_000_000], 0.99).reshape(1) if len(nz) else torch.ones(1))
        X = self.to_net(X)
        G, D = self.nets["generator"], self.nets["critic"]
        # the bounded output's ceiling: 10 % above the hottest training cell (network units)
        G.u_max.fill_(1.1 * float(X.max()) if len(X) else 1.0)
        if c["output"] in ("total", "softmax"):
            G.total_ref.fill_(float(self.from_net(X).sum((1, 2, 3)).mean()) if len(X) else 1.0)
            G.cell_unit.fill_(max(self.threshold, 1e-3))
        ema = self.nets.get("ema")
        if ema is not None:
            for name, buf in G.named_buffers():
                ema.module.get_buffer(name).copy_(buf)
        AE, AP = self.nets["energy_constrainer"], self.nets["position_constrainer"]
        # DDP when world > 1; the constrainers are not wrapped: every rank trains them on the whole global
        # batch (the ranks draw the same one), so their batch norm and weights are those of one process
        Gw, Dw = dist.wrap(G, dev), dist.wrap(D, dev)
        opt_g, opt_d, opt_a = self.optimizers["generator"], self.optimizers["critic"], self.optimizers["constrainers"]
        base = {opt: opt.defaults["lr"] for opt in (opt_g, opt_d, opt_a)}
        units = AUX_UNITS.to(dev)
        total = self.total_steps(len(X))
        stop = self._at(c["constrainer_stop"], total) if c["constrainer_stop"] is not None else math.inf
        B = c["batch"]

        def critic(x, lab, before=None):
            """The critic's score; ``before``: the showers before the readout threshold (for the hit counts)."""
            if not c["critic_summaries"]:
                return Dw(x, lab)
            s = self.summaries(x)
            if c["critic_hits"]:
                s = torch.cat([s, self.hit_summaries(x if before is None else before, lab)], 1)
            return Dw(x, lab, s)

        for step in trainer.steps(self, total):
            f = self._lr_factor(step, total)
            for opt in (opt_g, opt_d, opt_a):
                for group in opt.param_groups:
                    group["lr"] = base[opt] * f
            train_a = step < stop
            AE.train(train_a), AP.train(train_a)
            for k in range(c["n_critic"]):
                idx_all = torch.as_tensor(trainer.rng.integers(0, len(X), B))
                idx = dist.shard(idx_all)
                real, lab = X[idx].to(dev, non_blocking=True), L[idx].to(dev, non_blocking=True)
                z = dist.shard(torch.rand(B, N_LATENT) * 2 - 1).to(dev)
                eps = dist.shard(torch.rand(B, 1, 1, 1)).to(dev)
                with torch.no_grad():
                    fake = before = Gw(z, lab)
                    if c["critic_threshold"]:
                        fake = self.readout(fake, lab)
                x_hat = interpolates(real, fake, eps)
                out = critic(torch.cat([real, fake, x_hat]), torch.cat([lab, lab, lab]), torch.cat([real, before, x_hat]))
                d_real, d_fake, d_hat = out.split(len(real))
                gp = gradient_penalty(d_hat, x_hat)
                d_real, d_fake = d_real.mean(), d_fake.mean()
                loss_d = d_fake - d_real + c["gp_lambda"] * gp
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                if train_a and (c["constrainer_each_critic_step"] or k == c["n_critic"] - 1):
                    lab_all = L[idx_all].to(dev)
                    real_all = self.physical(X[idx_all].to(dev), lab_all)
                    loss_a = (((AE(real_all)[:, 0] - lab_all[:, 0]) ** 2).mean()
                              + ((AP(real_all) - lab_all[:, 1:]) ** 2).mean())
                    opt_a.zero_grad(set_to_none=True)
                    loss_a.backward()
                    opt_a.step()
            # generator step: critic and constrainers frozen (plain modules: no gradient exchange for them)
            AE.eval(), AP.eval()
            idx = dist.shard(torch.as_tensor(trainer.rng.integers(0, len(X), B)))
            lab = L[idx].to(dev)
            fake = before = Gw(dist.shard(torch.rand(B, N_LATENT) * 2 - 1).to(dev), lab)
            if c["critic_threshold"]:
                fake = self.readout(fake, lab)
            fake_phys = self.physical(fake, lab)
            err_fake = torch.abs(self._constrain(fake_phys) - lab) * units  # GeV and mm
            if c["aux"] == "paper":  # |L_real - L_fake|: as well reconstructed as real showers, no better
                with torch.no_grad():
                    real = self.physical(X[idx].to(dev), lab)
                    err_real = torch.abs(self._constrain(real) - lab) * units
                # a statistic of the whole global batch: its value and sign come from the means over every
                # rank, and the surrogate s . (m_real - m_fake) of this rank's slice has, averaged over ranks
                # by DDP, the gradient of |M_real - M_fake| (in one process it is that loss exactly)
                d_local = err_real.mean(0) - err_fake.mean(0)
                d_global = dist.mean(d_local)
                s = torch.sign(d_global).detach()
                aux = (s * d_local).sum() + (d_global.abs().sum() - (s * d_local).sum()).detach()
            else:
                aux = err_fake.mean(0).sum()
            loss_g = -critic(fake, lab, before).mean() + c["kappa"] * aux
            if c["total_fit"] == "likelihood":  # the visible-energy head: maximum likelihood on real totals
                log_t = torch.log(self.from_net(X[idx].to(dev)).sum((1, 2, 3)).clamp(min=1e-6) / G.total_ref)
                nll = G.total_nll(lab, log_t)
                loss_g = loss_g + nll
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            if ema is not None:
                ema.update_parameters(G)
            log = {"critic": loss_d, "generator": loss_g, "wasserstein": d_real - d_fake, "aux_gev_mm": aux}
            if c["total_fit"] == "likelihood":
                log["total_nll"] = nll
            if train_a:
                log["constrainer"] = loss_a
            trainer.log(**log)
        if c["calibrate_response"] and validation is not None:
            trainer.once("calibrate", lambda g: self.calibrate(validation.head(min(len(validation), c["n_calibrate"])), g),
                         log=lambda f: {f"factor_{e:g}GeV": k for e, k in zip(f["energy"], f["factor"])})

    @torch.no_grad()
    def calibrate(self, validation, generator: torch.Generator | None = None) -> dict:
        """Find, per beam energy of the validation showers, the factor k on the generated cells (before
        the 2 MIP threshold) for which the mean visible energy of showers generated for their labels
        equals theirs (bisection: the visible energy grows with k). Validation showers only; the test
        split and the hold-out are never seen. Sets the ``calibration`` net; returns what it found."""
        if "calibration" not in self.nets:
            raise calobench.CalobenchError("hgcal_wgan: calibrate() needs --set calibrate_response=true")
        lab = self._labels(validation.conditions).to(self.device)
        G = self.sampling_generator()
        cells = []
        for i in range(0, len(lab), 1000):
            lb = lab[i: i + 1000]
            z = torch.rand(len(lb), N_LATENT, generator=generator).to(self.device) * 2 - 1
            cells.append((self.from_net(G(z, lb)) * self._energy_scale(lb)).reshape(len(lb), -1).float().cpu())
        cells = torch.cat(cells)
        real = validation.array().reshape(len(lab), -1).sum(1)
        energy = np.asarray(validation.conditions["energy"], np.float64)
        beams, factors = [], []
        for g in beam_groups(energy):
            x, target = cells[torch.as_tensor(g)], float(real[g].mean())

            def visible(k):
                y = x * k
                return float(torch.where(y < self.threshold, torch.zeros_like(y), y).sum(1).mean())

            lo, hi = 1 / 16, 16.0
            for _ in range(40):
                mid = math.sqrt(lo * hi)
                lo, hi = (mid, hi) if visible(mid) < target else (lo, mid)
            k = math.sqrt(lo * hi)
            if not 1 / 15 < k < 15:
                warnings.warn(f"hgcal_wgan: the response calibration at {energy[g].mean():.0f} GeV needs a factor "
                              f"outside 1/16..16; kept at {k:.3g}")
            beams.append(float(energy[g].mean())), factors.append(k)
        self.nets["calibration"].set(beams, factors)
        return {"energy": beams, "factor": factors}

    # -- generation ------------------------------------------------------------
    @torch.no_grad()
    def sample(self, conditions):
        lab = self._labels(conditions).to(self.device)
        self.warn_extrapolation(conditions, LABELS, lambda c: "energy outside the trained range" if c == "energy"
                                else f"{c} outside the beam spot")
        G = self.sampling_generator()
        z = torch.rand(len(lab), N_LATENT, device=self.device) * 2 - 1
        out = self.from_net(G(z, lab)) * self._energy_scale(lab)
        if "calibration" in self.nets:
            out = out * self.nets["calibration"].factor(lab[:, 0] * LABEL_SCALE[0].item()).reshape(-1, 1, 1, 1)
        if self.config["apply_threshold"]:  # the detector's readout threshold, as in the data
            out = torch.where(out < self.threshold, torch.zeros_like(out), out)
        return out.float().cpu().numpy()

    def reconstruct(self, showers: np.ndarray) -> dict:
        """The constrainers' labels for showers (used by the plots)."""
        x = self.to_net(torch.as_tensor(showers, device=self.device))
        self.nets["energy_constrainer"].eval(), self.nets["position_constrainer"].eval()
        with torch.no_grad():
            y = self._constrain(x).cpu() * LABEL_SCALE
        return {c: y[:, i].numpy() for i, c in enumerate(LABELS)}
