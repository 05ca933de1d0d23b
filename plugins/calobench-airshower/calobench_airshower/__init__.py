"""calobench-airshower: the air-shower array of Erdmann, Geiger, Glombitza, Schmidt,
"Generating and refining particle detector simulations using the Wasserstein distance in
adversarial networks" (Comput. Softw. Big Sci. 2, 2018): simulator (data / simulation
variants), pattern WGAN, trace refiner, AixNet, and their metrics."""
from __future__ import annotations

import calobench

from .metrics import LabelConsistency, RefinementUtility, RefinementUtilityData, RefinementUtilitySim
from .models import AirshowerRefiner, AirshowerWGAN
from .simulator import AirShowerSimulator

__version__ = "0.1.0"


@calobench.hookimpl
def register_simulators(register):
    register(AirShowerSimulator())


@calobench.hookimpl
def register_models(register):
    register(AirshowerWGAN)
    register(AirshowerRefiner)


@calobench.hookimpl
def register_metrics(register):
    for m in (RefinementUtility, RefinementUtilitySim, RefinementUtilityData, LabelConsistency):
        register(m)


@calobench.hookimpl
def register_plots(register):
    from .plots import PLOTS

    for plot in PLOTS:
        register(plot)


@calobench.hookimpl
def register_checks(register):
    from .checks import PatternWGANChecks, RefinerChecks

    register(PatternWGANChecks)
    register(RefinerChecks)
