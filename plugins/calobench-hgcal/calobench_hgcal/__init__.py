"""calobench-hgcal: the HGCAL-like test-beam simulator and the HGCAL WGAN.

Seed: M. Erdmann, J. Glombitza, T. Quast, "Precise simulation of electromagnetic
calorimeter showers using a Wasserstein Generative Adversarial Network" (2019).
"""
from __future__ import annotations

import calobench

from .model import HGCALWGAN
from .simulator import HGCALSimulator

__version__ = "0.1.0"


@calobench.hookimpl
def register_simulators(register):
    register(HGCALSimulator())


@calobench.hookimpl
def register_models(register):
    register(HGCALWGAN)


@calobench.hookimpl
def make_plots(dataset, real, generated, outdir, model, extra):
    if real.geometry.shape != (12, 15, 7) or "energy" not in real.conditions:
        return []
    from .plots import hgcal_plots

    return hgcal_plots(real, generated, outdir, model, extra)
