"""An in-process plugin for the core tests: a tiny dataset, a tiny torch model, one metric."""
from __future__ import annotations

import os
import signal

import numpy as np
import scipy.stats
from pydantic import PositiveInt
import torch
from torch import nn

import calobench
from calobench.observables import features


class Tiny(calobench.Simulator):
    name = "tiny"
    block_size = 64  # several blocks even for small splits

    def geometry(self, **p):
        return calobench.Geometry(shape=(4, 4, 3), cell_size=(5, 5, 10), energy_unit="MeV", threshold=0.1)

    def condition_ranges(self, **p):
        return {"energy": (1.0, 10.0)}

    def simulate(self, n, rng, scale=1.0, **p):
        e = rng.uniform(1, 10, n).astype(np.float32)
        base = np.linspace(0.2, 1.0, 48).reshape(4, 4, 3)
        x = (scale * e[:, None, None, None] * base * rng.gamma(4.0, 0.25, (n, 4, 4, 3))).astype(np.float32)
        x[x < 0.1] = 0
        return calobench.ShowerData(x, {"energy": e}, self.geometry())


class TinyOptions(calobench.Options):
    steps: PositiveInt = 60
    batch: int = 32
    lr: float = 0.01
    nan_at: int = -1  # make the loss NaN at this step (tests)
    interrupt_at: int = -1  # raise KeyboardInterrupt at this step (tests)
    fail_at: int = -1  # raise RuntimeError at this step (tests)
    nan_samples: bool = False


class TinyGen(calobench.Model):
    """Linear map from (energy, noise) to cells; enough to test the training contract."""

    name = "tiny_gen"
    datasets = ("tiny", "tiny_big")
    Options = TinyOptions
    presets = {"smoke": {"steps": 30, "batch": 32, "lr": 0.01, "timing_batches": [1, 10]},
               "default": {"steps": 60, "batch": 32, "lr": 0.01, "timing_batches": [1, 10]},
               "paper": {"steps": 60, "batch": 32, "lr": 0.01}}

    def __init__(self, dataset, config, device):
        super().__init__(dataset, config, device)
        self.nets["gen"] = nn.Linear(9, 48)
        self.optimizers["gen"] = torch.optim.Adam(self.nets["gen"].parameters(), lr=config["lr"])

    def fit(self, train, trainer, validation=None):
        x_all = torch.as_tensor(train.array()).reshape(len(train), -1)
        e_all = torch.as_tensor(train.conditions["energy"])
        for step in trainer.steps(self, self.config["steps"]):
            idx = trainer.rng.choice(len(train), self.config["batch"])
            z = torch.randn(len(idx), 8)
            out = self.nets["gen"](torch.cat([e_all[idx, None] / 10, z], 1))
            loss = ((out - x_all[idx]) ** 2).mean()
            if step == self.config["nan_at"]:
                loss = loss * float("nan")
            if step == self.config["interrupt_at"]:
                raise KeyboardInterrupt
            if step == int(os.environ.get("TOY_SIGNAL_AT", -1)):  # as `kill -TERM` / Ctrl-C would, mid-step
                os.kill(os.getpid(), getattr(signal, os.environ.get("TOY_SIGNAL", "SIGTERM")))
            if step == self.config["fail_at"]:
                raise RuntimeError("the plugin broke")
            self.optimizers["gen"].zero_grad()
            loss.backward()
            self.optimizers["gen"].step()
            trainer.log(mse=loss)

    def sample(self, conditions):
        e = torch.as_tensor(conditions["energy"])[:, None] / 10
        out = self.nets["gen"](torch.cat([e, torch.randn(len(e), 8)], 1)).clamp_min(0)
        if self.config["nan_samples"]:
            out[0, 0] = float("nan")
        return out.reshape(-1, 4, 4, 3).numpy()


class Refuses(TinyGen):
    name = "only_elsewhere"
    datasets = ("somewhere_else",)


class TotalEnergyW1(calobench.Metric):
    name = "e_w1"
    description = "W1 of total energy (test metric)"

    def compute(self, real, generated, ctx):
        a, b = features(real)["E_total"], features(generated)["E_total"]
        ctx.shared["energies"] = (a, b)  # for e_w1_twin: one computation, two metrics
        return calobench.MetricResult(scipy.stats.wasserstein_distance(a, b), 0.01,
                                      artifacts={"generated_energy": b})


class Twin(calobench.Metric):
    """Reuses e_w1's work through ctx.shared (it runs after it: metrics run in registration order)."""

    name = "e_w1_twin"

    def compute(self, real, generated, ctx):
        reused = "energies" in ctx.shared
        a, b = ctx.shared["energies"] if reused else (features(real)["E_total"], features(generated)["E_total"])
        return calobench.MetricResult(float(abs(a.mean() - b.mean())), 0.0, {"reused": reused, "n": len(b)})


class EnergyPlot(calobench.Plot):
    """Draws what e_w1 handed over (its artifacts), on the tiny dataset only."""

    name = "tiny_energy"
    description = "generated energies handed over by e_w1"
    datasets = ("tiny",)
    needs = ("e_w1",)

    def make(self, ctx):
        e = ctx.metrics["e_w1"].artifacts["generated_energy"]
        path = ctx.outdir / "tiny_energy.txt"
        path.write_text(f"{len(e)} {float(e.sum()):.6g} {len(ctx.extra)}")
        return [path]


class ElsewherePlot(EnergyPlot):
    name = "elsewhere"
    datasets = ("somewhere_else",)

    def make(self, ctx):
        raise AssertionError("a plot for another dataset was drawn")


class MissingMetricPlot(EnergyPlot):
    name = "needs_missing"
    needs = ("no_such_metric",)


class BrokenPlot(calobench.Plot):
    name = "broken_plot"

    def make(self, ctx):
        raise RuntimeError("plot boom")


class MeanEnergyCheck(calobench.Check):
    """The tiny dataset's 'paper claim': mean total energy within 50 % of real; one entry per half of
    the energy range, and one on the 'hot' split when it is there."""

    name = "tiny_claims"
    datasets = ("tiny",)

    def evaluate(self, ctx):
        from calobench.checks import relative

        out = []
        fr, fg = features(ctx.real), features(ctx.generated)
        for lo, hi in ((1, 5.5), (5.5, 10)):
            sr = (ctx.real.conditions["energy"] >= lo) & (ctx.real.conditions["energy"] < hi)
            sg = (ctx.generated.conditions["energy"] >= lo) & (ctx.generated.conditions["energy"] < hi)
            out.append(relative(f"mean_energy_{lo:g}-{hi:g}", fr["E_total"][sr].mean(), fg["E_total"][sg].mean(), 0.5))
        if "hot" in ctx.extra:
            r, g = ctx.extra["hot"]
            out.append(relative("mean_energy_hot", features(r)["E_total"].mean(), features(g)["E_total"].mean(), 1e-9))
        return out


class BrokenCheck(calobench.Check):
    name = "broken_check"

    def evaluate(self, ctx):
        raise ValueError("check boom")


class NeedsMany(TotalEnergyW1):
    name = "needs_many"
    min_showers = 10**9


class Broken(TotalEnergyW1):
    name = "broken_metric"

    def compute(self, real, generated, ctx):
        raise RuntimeError("boom")


@calobench.hookimpl
def register_simulators(register):
    register(Tiny())


@calobench.hookimpl
def register_datasets(register):
    register("tiny", {"description": "tiny test data", "simulator": "tiny",
                      "splits": {"train": {"n": 200, "seed": 1}, "validation": {"n": 40, "seed": 2},
                                 "test": {"n": 80, "seed": 3}, "reference": {"n": 80, "seed": 4},
                                 "hot": {"n": 40, "seed": 5, "params": {"scale": 1.5}}}})


@calobench.hookimpl
def register_models(register):
    register(TinyGen)
    register(Refuses)


@calobench.hookimpl
def register_metrics(register):
    register(TotalEnergyW1)
    register(Twin)
    register(NeedsMany)
    register(Broken)


@calobench.hookimpl
def register_checks(register):
    register(MeanEnergyCheck)
    register(BrokenCheck)


@calobench.hookimpl
def register_plots(register):
    for plot in (EnergyPlot, ElsewherePlot, MissingMetricPlot, BrokenPlot):
        register(plot)
