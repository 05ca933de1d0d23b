"""An example third-party calobench plugin, using only calobench's public API.

* ``percell_baseline``: a generator that samples every cell independently from the cell's
  empirical distribution among training showers of similar energy. It reproduces every
  one-cell marginal and no correlation: the floor any real generator must beat.
* ``toy``: a tiny 8x8x6 calorimeter simulator (gamma longitudinal profile, Gaussian
  lateral profile, Poisson sampling, threshold) so the plugin runs on its own.
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import PositiveInt

import calobench

__version__ = "0.1.0"


class PerCellOptions(calobench.Options):
    bins: PositiveInt = 8  # energy bins (quantiles of the training labels)
    max_per_bin: PositiveInt = 4000  # training showers kept per bin


class PerCellBaseline(calobench.Model):
    name = "percell_baseline"
    task = "generate"
    datasets = ()  # any dataset
    description = "independent per-cell sampling within energy bins"
    Options = PerCellOptions
    presets = {
        "smoke": {"bins": 2, "max_per_bin": 200, "timing_batches": [1, 100]},
        "default": {"bins": 8, "max_per_bin": 4000},
        "paper": {"bins": 16, "max_per_bin": 20000},
    }

    def __init__(self, dataset, config, device):
        super().__init__(dataset, config, device)
        self.label = "energy" if "energy" in dataset.conditions else next(iter(dataset.conditions), None)
        self.edges = torch.zeros(0)
        self.banks: list[torch.Tensor] = []

    def fit(self, train, trainer, validation=None):
        labels = train.conditions[self.label] if self.label else np.zeros(len(train), np.float32)
        n_bins = int(self.config["bins"])
        edges = np.quantile(labels, np.linspace(0, 1, n_bins + 1)[1:-1])
        which = np.searchsorted(edges, labels)
        self.edges = torch.as_tensor(edges, dtype=torch.float32)
        self.banks = []
        for b in trainer.steps(self, n_bins):  # one step per energy bin
            idx = np.flatnonzero(which == b)
            if len(idx) > self.config["max_per_bin"]:
                idx = np.sort(trainer.rng.choice(idx, self.config["max_per_bin"], replace=False))
            if len(idx) == 0:  # an empty bin borrows from everything
                idx = np.arange(min(len(train), self.config["max_per_bin"]))
            self.banks.append(torch.as_tensor(train.take(idx).array()))
            trainer.log(showers_in_bin=len(idx))

    def sample(self, conditions):
        labels = conditions[self.label] if self.label else np.zeros(len(next(iter(conditions.values()))))
        which = np.searchsorted(self.edges.numpy(), labels)
        shape = self.dataset.geometry.shape
        out = torch.empty((len(labels), *shape))
        for b in np.unique(which):
            rows = np.flatnonzero(which == b)
            bank = self.banks[b].reshape(len(self.banks[b]), -1)
            pick = torch.randint(len(bank), (len(rows), bank.shape[1]))
            out[rows] = torch.gather(bank, 0, pick).reshape(len(rows), *shape)
        return out.numpy()

    def state_dict(self):
        return {"edges": self.edges, **{f"bank.{i}": b for i, b in enumerate(self.banks)}}

    def load_state_dict(self, state):
        self.edges = state["edges"].cpu()
        self.banks = [state[f"bank.{i}"].cpu() for i in range(len(state) - 1)]

    def n_parameters(self):
        return sum(b.numel() for b in self.banks)


class ToyCalorimeter(calobench.Simulator):
    """8x8x6 cells; energy 10-100 GeV; shower maximum deepens with ln E."""

    name = "toy"

    def geometry(self, **params):
        return calobench.Geometry(shape=(8, 8, 6), cell_size=(10.0, 10.0, 20.0), layer_axis=-1,
                                  energy_unit="MeV", threshold=0.5)

    def condition_ranges(self, e_min=10.0, e_max=100.0, **_):
        return {"energy": (e_min, e_max)}

    def simulate(self, n, rng, e_min=10.0, e_max=100.0, **_):
        energy = rng.uniform(e_min, e_max, n)
        tmax = 1.0 + 0.8 * np.log(energy / 10.0) + rng.normal(0, 0.3, n)
        z = np.arange(6) + 0.5
        a = 1.0 + np.clip(tmax, 0.2, None)[:, None]
        prof = (z[None] ** (a - 1)) * np.exp(-z[None])
        prof /= prof.sum(1, keepdims=True)
        xy = (np.arange(8) + 0.5 - 4)[None, :]
        cx, cy = rng.normal(0, 0.5, (2, n, 1))
        width = 1.0 + 0.15 * z[None, :]
        lx = np.exp(-0.5 * ((xy - cx)[:, :, None] / width[:, None, :]) ** 2)
        ly = np.exp(-0.5 * ((xy - cy)[:, :, None] / width[:, None, :]) ** 2)
        lx /= lx.sum(1, keepdims=True)
        ly /= ly.sum(1, keepdims=True)
        mean = 10 * energy[:, None, None, None] * lx[:, :, None, :] * ly[:, None, :, :] * prof[:, None, None, :]
        showers = rng.poisson(mean).astype(np.float32) * 0.1
        showers[showers < 0.5] = 0
        return calobench.ShowerData(showers, {"energy": energy.astype(np.float32)}, self.geometry())


@calobench.hookimpl
def register_models(register):
    register(PerCellBaseline)


@calobench.hookimpl
def register_simulators(register):
    register(ToyCalorimeter())


@calobench.hookimpl
def register_datasets(register):
    register("toy", {
        "description": "8x8x6 toy calorimeter (example plugin)",
        "simulator": "toy",
        "splits": {"train": {"n": 2000, "seed": 1}, "validation": {"n": 300, "seed": 2},
                   "test": {"n": 500, "seed": 3}, "reference": {"n": 500, "seed": 4}},
    })
