"""calobench-metrics: the seeds' metrics and the field's reference evaluation.

Every metric reports a value and an uncertainty (bootstrap over showers, disjoint halves, or a
null-corrected bootstrap: whichever matched the spread over independent samples,
benchmarks/uncertainty_calibration.py), is seeded from the run's seed, and sits beside its floor
(real vs independent real) in every record.
"""
from __future__ import annotations

import calobench

from .classifier import ClassifierAUC, ClassifierAUCHighLevel
from .gromov import GromovWasserstein, GromovWassersteinEntropic
from .mre import MRE
from .mscn import MSCN
from .physics_distances import FPD, KPD
from .separation import SeparationPower
from .ssim import SSIM
from .triforce import Triforce
from .wasserstein import Wasserstein

__version__ = "0.1.0"

METRICS = (Wasserstein, GromovWasserstein, GromovWassersteinEntropic, SSIM, MSCN, MRE, Triforce, ClassifierAUC,
           ClassifierAUCHighLevel, SeparationPower, FPD, KPD)


@calobench.hookimpl
def register_metrics(register):
    for m in METRICS:
        register(m)
