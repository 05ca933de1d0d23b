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
def register_plots(register):
    from .plots import PLOTS

    for plot in PLOTS:
        register(plot)


@calobench.hookimpl
def register_checks(register):
    from .checks import HGCALPaperChecks

    register(HGCALPaperChecks)
