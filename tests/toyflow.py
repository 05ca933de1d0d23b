"""A toy conditional flow-matching model on the training contract: two phases (a warm-up at a fixed
learning rate, then a cosine schedule), EMA weights that do the sampling, a tracked scheduler,
and an Euler ODE sampler. Small enough for CI; written as the README tells a plugin author to."""
from __future__ import annotations

import os
import signal

import numpy as np
import torch
from pydantic import PositiveInt
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import calobench


class FlowOptions(calobench.Options):
    warmup_steps: PositiveInt = 10
    steps: PositiveInt = 30
    batch: PositiveInt = 32
    lr: float = 3e-3
    ema: float = 0.9
    ode_steps: PositiveInt = 8


class ToyFlow(calobench.Model):
    name = "toy_flow"
    Options = FlowOptions
    inference_nets = ("ema",)
    presets = {"smoke": {"timing_batches": [1, 10]}, "default": {"timing_batches": [1, 10]}, "paper": {}}

    def __init__(self, dataset, config, device):
        super().__init__(dataset, config, device)
        d = int(np.prod(dataset.geometry.shape))
        self.nets["velocity"] = nn.Sequential(nn.Linear(d + 2, 64), nn.SiLU(), nn.Linear(64, d))
        self.nets["ema"] = AveragedModel(self.nets["velocity"], multi_avg_fn=get_ema_multi_avg_fn(self.config["ema"]))
        self.optimizers["velocity"] = torch.optim.Adam(self.nets["velocity"].parameters(), lr=self.config["lr"])
        self.network_evaluations_per_shower = self.config["ode_steps"]

    def _v(self, net, x, t, e):
        return net(torch.cat([x, t[:, None], e[:, None]], 1))

    def fit(self, train, trainer, validation=None):
        c = self.config
        x_all = torch.log1p(torch.as_tensor(train.array()).reshape(len(train), -1))
        e_all = torch.as_tensor(train.conditions["energy"]) / 10
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizers["velocity"], T_max=c["steps"])
        trainer.track("scheduler", sched)

        def step(k):
            idx = torch.as_tensor(trainer.rng.integers(0, len(x_all), c["batch"]))
            x1, e = x_all[idx], e_all[idx]
            x0, t = torch.randn_like(x1), torch.rand(len(idx))
            xt = (1 - t[:, None]) * x0 + t[:, None] * x1
            loss = ((self._v(self.nets["velocity"], xt, t, e) - (x1 - x0)) ** 2).mean()
            self.optimizers["velocity"].zero_grad()
            loss.backward()
            self.optimizers["velocity"].step()
            self.nets["ema"].update_parameters(self.nets["velocity"])
            if int(os.environ.get("TOY_SIGNAL_AT", -1)) == trainer.step:
                os.kill(os.getpid(), signal.SIGTERM)
            trainer.log(fm=loss)

        for k in trainer.phase("warmup", c["warmup_steps"]):
            step(k)
        for k in trainer.phase("main", c["steps"]):
            step(k)
            sched.step()

    def sample(self, conditions):
        e = torch.as_tensor(np.asarray(conditions["energy"], np.float32)) / 10
        x = torch.randn(len(e), int(np.prod(self.dataset.geometry.shape)))
        n = self.config["ode_steps"]
        for i in range(n):  # Euler from noise (t = 0) to data (t = 1)
            t = torch.full((len(e),), i / n)
            x = x + self._v(self.nets["ema"], x, t, e) / n
        return torch.expm1(x).clamp_min(0).reshape(len(e), *self.dataset.geometry.shape)


@calobench.hookimpl
def register_models(register):
    register(ToyFlow)
