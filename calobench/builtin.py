"""calobench's built-in plugin: the calobench file layout, and the plots every run gets.
(The CaloChallenge layout lives in the calobench-calochallenge plugin, with its binnings.)

Registered through the same hooks as any external plugin (``calobench plugins --all``).
"""
from __future__ import annotations

from .data import read_hdf5
from .plugins import hookimpl


@hookimpl
def register_layouts(register):
    register("calobench", read_hdf5)


@hookimpl
def register_plots(register):
    from .plots import CORE_PLOTS

    for plot in CORE_PLOTS:
        register(plot)
