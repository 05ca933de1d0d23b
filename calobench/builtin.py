"""calobench's built-in plugin: the file layouts that are not tied to one detector, and the
plots every run gets.

Registered through the same hooks as any external plugin (``calobench plugins --all``).
"""
from __future__ import annotations

import numpy as np

from .data import Geometry, ShowerData, _open, read_hdf5
from .errors import CalobenchError
from .plugins import hookimpl


def read_calochallenge(path) -> ShowerData:
    """Fast Calorimeter Simulation Challenge 2022 files: ``showers`` [N, voxels] in MeV,
    ``incident_energies`` [N, 1] in MeV. The voxel binning lives in the challenge's XML,
    so showers stay flat here (layer structure unknown to the core)."""
    with _open(path) as f:
        for key in ("showers", "incident_energies"):
            if key not in f:
                raise CalobenchError(f"{path}: no '{key}' dataset (is it a CaloChallenge file?)")
        try:
            showers = np.asarray(f["showers"][...], dtype=np.float32)
            energy = np.asarray(f["incident_energies"][...], dtype=np.float32).reshape(-1)
        except OSError as exc:
            raise CalobenchError(f"{path}: unreadable HDF5 content (corrupt or truncated?): {exc}") from None
    geometry = Geometry(shape=showers.shape[1:], layer_axis=None, energy_unit="MeV")
    return ShowerData(showers, {"energy": energy}, geometry)


@hookimpl
def register_layouts(register):
    register("calobench", read_hdf5)
    register("calochallenge", read_calochallenge)


@hookimpl
def register_plots(register):
    from .plots import CORE_PLOTS

    for plot in CORE_PLOTS:
        register(plot)
