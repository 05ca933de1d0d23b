"""calobench-flow: conditional flow matching for any voxel dataset calobench knows.

A rectified-flow (optimal-transport path) velocity network, trained with the flow-matching
loss on a calorimeter-aware representation of the shower (the energy of every layer, then the
cells in log space with the zeros spread below the readout threshold), sampled with an ODE
solver (midpoint or Heun) from EMA weights.
"""
from __future__ import annotations

import calobench

__version__ = "0.1.0"


@calobench.hookimpl
def register_models(register):
    from .model import FlowMatching

    register(FlowMatching)
