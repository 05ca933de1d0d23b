"""Reader of the public 3DGAN electron files (``EleEscan_RandomAngle_*.h5``, Zenodo record 3603086).

Keys: ``ECAL`` [N, 51, 51, 25] (x, y, layer), ``energy`` [N] or [N, 1] in GeV, ``theta`` [N] in
radians; ``eta`` and ``mtheta`` (the measured angle) are ignored. Showers stay on disk until
sliced, so a file of 10 000 events (2.6 GB as float32) is never read whole.
"""
from __future__ import annotations

import h5py
import numpy as np

from calobench import CalobenchError, Geometry, ShowerData

from .simulator import CELL_CM, EDGES_X0, NL, NX, NY

REQUIRED = ("ECAL", "energy", "theta")


def geometry() -> Geometry:
    return Geometry(shape=(NX, NY, NL), cell_size=(CELL_CM * 10, CELL_CM * 10, 1.0), layer_axis=-1,
                    layer_positions=EDGES_X0[1:].tolist(), layer_unit="X0", length_unit="mm", energy_unit="GeV",
                    axes=("x", "y", "layer"))


def read_3dgan(path) -> ShowerData:
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise CalobenchError(f"{path}: not a readable HDF5 file (corrupt or truncated?)") from None
    missing = [k for k in REQUIRED if k not in f]
    if missing:
        f.close()
        raise CalobenchError(f"{path}: no {', '.join(repr(k) for k in missing)} dataset (is it a 3DGAN file?)")
    ecal = f["ECAL"]
    if tuple(ecal.shape[1:]) != (NX, NY, NL):
        f.close()
        raise CalobenchError(f"{path}: ECAL has shape {tuple(ecal.shape)}, expected (N, {NX}, {NY}, {NL})")
    try:
        energy = np.asarray(f["energy"][...], dtype=np.float32).reshape(-1)
        theta = np.asarray(f["theta"][...], dtype=np.float32).reshape(-1)
    except (OSError, ValueError) as exc:
        f.close()
        raise CalobenchError(f"{path}: unreadable HDF5 content (corrupt or truncated?): {exc}") from None
    if len(energy) != len(ecal) or len(theta) != len(ecal):
        f.close()
        raise CalobenchError(f"{path}: {len(ecal)} showers but {len(energy)} energies and {len(theta)} angles")
    if len(theta) and np.nanmax(np.abs(theta)) > 2 * np.pi:
        f.close()
        raise CalobenchError(f"{path}: 'theta' looks like degrees (max {np.nanmax(theta):.3g}); 3DGAN files store radians")
    return ShowerData(ecal, {"energy": energy, "theta": theta}, geometry(), {"source": str(path)})
