"""calobench-lcd: the LCD-like Si-W ECAL simulator, the public 3DGAN files, and the 3DGAN.

Seed: G. R. Khattak, S. Vallecorsa, F. Carminati, G. M. Khan, "High energy physics
calorimeter detector simulation using generative adversarial networks with domain
related constraints" (2021).
"""
from __future__ import annotations

import calobench

from .layout import read_3dgan
from .simulator import LCDSimulator

__version__ = "0.1.0"


@calobench.hookimpl
def register_simulators(register):
    register(LCDSimulator())


@calobench.hookimpl
def register_layouts(register):
    register("lcd_3dgan", read_3dgan)


@calobench.hookimpl
def register_datasets(register):
    register("lcd", {
        "description": "LCD-like 51x51x25 Si-W ECAL, electrons 2-500 GeV, theta 60-120 deg (GFLASH spots; plugin calobench-lcd)",
        "simulator": "lcd",
        "version": 2,
        "splits": {"train": {"n": 10000, "seed": 301}, "validation": {"n": 1000, "seed": 302},
                   "test": {"n": 2000, "seed": 303}, "reference": {"n": 2000, "seed": 304}},
    })


@calobench.hookimpl
def register_models(register):
    from .model import ThreeDGAN

    register(ThreeDGAN)


@calobench.hookimpl
def register_plots(register):
    from .plots import LCDPlots

    register(LCDPlots)


@calobench.hookimpl
def register_checks(register):
    from .checks import LCDPaperChecks

    register(LCDPaperChecks)
