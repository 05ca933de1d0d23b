"""calobench-calochallenge: the Fast Calorimeter Simulation Challenge 2022 in calobench.

Its datasets 1 (photons, pions), 2 and 3 as catalog entries (Zenodo files, MD5-checked),
their cylindrical binnings, the file layout, a builtin simulator in the dataset-2 geometry,
the challenge's evaluation as the ``calochallenge`` protocol (``cc_*`` metrics) and its
published results as board references.
"""
from __future__ import annotations

from pathlib import Path

import calobench

__version__ = "0.1.0"


@calobench.hookimpl
def register_layouts(register):
    from .layout import read_calochallenge

    register("calochallenge", read_calochallenge)


@calobench.hookimpl
def register_simulators(register):
    from .simulator import DS2Simulator

    register(DS2Simulator())


@calobench.hookimpl
def register_datasets(register):
    register(Path(__file__).with_name("datasets.yaml"))


@calobench.hookimpl
def register_metrics(register):
    from .metrics import METRICS

    for m in METRICS:
        register(m)


@calobench.hookimpl
def register_references(register):
    from .published import references

    for ref in references():
        register(ref)
