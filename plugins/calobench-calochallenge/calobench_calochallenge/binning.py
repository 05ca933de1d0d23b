"""The CaloChallenge 2022 readout binnings (the challenge's ``binning_dataset_*.xml``, as data).

Each layer: its id in the challenge's numbering, the radial bin edges in mm and the number
of equal angular (alpha) bins; layers without voxels are left out. Voxels are stored layer
after layer, inside a layer angular bin after angular bin, inside an angular bin radial bin
after radial bin (the challenge's reshape ``(num_z, num_alpha, num_r)``).

Evaluation thresholds (the challenge's ``min_energy``, MeV): voxels below it are zeroed before
any observable: 1 MeV for dataset 1, 0.5 keV / 0.033 (the sampling fraction the files are
scaled by) = 15.15 keV for datasets 2 and 3.
"""
from __future__ import annotations

import numpy as np

from calobench import CalobenchError, Geometry

_DS23_R2 = [round(4.65 * i, 4) for i in range(10)]
_DS23_R3 = [round(2.325 * i, 4) for i in range(19)]

BINNINGS = {
    "ds1_photons": [
        (0, [0, 5, 10, 30, 50, 100, 200, 400, 600], 1),
        (1, [0, 2, 4, 6, 8, 10, 12, 15, 20, 30, 40, 50, 70, 90, 120, 150, 200], 10),
        (2, [0, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 130, 160, 200, 250, 300, 350, 400], 10),
        (3, [0, 50, 100, 200, 400, 600], 1),
        (12, [0, 100, 200, 400, 1000, 2000], 1),
    ],
    "ds1_pions": [
        (0, [0, 5, 10, 30, 50, 100, 200, 400, 600], 1),
        (1, [0, 1, 4, 7, 10, 15, 30, 50, 90, 150, 200], 10),
        (2, [0, 5, 10, 20, 30, 50, 80, 130, 200, 300, 400], 10),
        (3, [0, 50, 100, 200, 400, 600], 1),
        (12, [0, 10, 20, 30, 50, 80, 100, 130, 160, 200, 250, 300, 350, 400, 1000, 2000], 10),
        (13, [0, 10, 20, 30, 50, 80, 100, 130, 160, 200, 250, 300, 350, 400, 600, 1000, 2000], 10),
        (14, [0, 50, 100, 150, 200, 250, 300, 400, 600, 1000, 2000], 1),
    ],
    "ds2": [(i, _DS23_R2, 16) for i in range(45)],
    "ds3": [(i, _DS23_R3, 50) for i in range(45)],
}
THRESHOLD_MEV = {"ds1_photons": 1.0, "ds1_pions": 1.0, "ds2": 0.5e-3 / 0.033, "ds3": 0.5e-3 / 0.033}
N_VOXELS = {name: sum((len(r) - 1) * a for _, r, a in layers) for name, layers in BINNINGS.items()}
# ds2/ds3: each readout layer is two W-Si pairs, 3.4 mm = 2 x 1.4 mm / 3.504 mm = 0.8 X0 of tungsten
X0_PER_LAYER = 0.8


def geometry(binning: str) -> Geometry:
    """The calobench geometry of one challenge binning (flat voxels, energies in MeV)."""
    if binning not in BINNINGS:
        raise CalobenchError(f"unknown CaloChallenge binning '{binning}' (known: {', '.join(BINNINGS)})")
    layers = [{"layer": i, "r_edges": [float(e) for e in r], "n_alpha": a} for i, r, a in BINNINGS[binning]]
    if binning in ("ds2", "ds3"):
        positions, unit = [X0_PER_LAYER * (i + 0.5) for i in range(len(layers))], "X0"
    else:
        positions, unit = [float(b["layer"]) for b in layers], "ATLAS layer"
    return Geometry(shape=(N_VOXELS[binning],), cell_size=(1.0,), layer_axis=None, layer_positions=positions,
                    layer_unit=unit, length_unit="mm", energy_unit="MeV", threshold=THRESHOLD_MEV[binning],
                    axes=("voxel",), binning=layers)


def binning_of(n_voxels: int) -> str | None:
    """The binning a flat shower of ``n_voxels`` voxels belongs to (they are all different)."""
    return next((k for k, v in N_VOXELS.items() if v == n_voxels), None)


def is_regular(geom) -> bool:
    """Every layer binned alike (datasets 2 and 3): the challenge's ds2/ds3 histogram ranges apply."""
    b = geom.binning or []
    return len(b) > 1 and all(x["r_edges"] == b[0]["r_edges"] and x["n_alpha"] == b[0]["n_alpha"] for x in b)


def as_grid(showers: np.ndarray, binning: str) -> np.ndarray:
    """ds2/ds3 flat showers [n, V] -> [n, layers, alpha, r] (a view); other binnings are irregular."""
    layers = BINNINGS[binning]
    if binning not in ("ds2", "ds3"):
        raise CalobenchError(f"binning '{binning}' has irregular layers; it has no grid form")
    return showers.reshape(len(showers), len(layers), layers[0][2], len(layers[0][1]) - 1)
