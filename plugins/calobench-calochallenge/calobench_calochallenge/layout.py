"""The CaloChallenge HDF5 layout: ``incident_energies`` [N, 1] and ``showers`` [N, n_voxels], both MeV.

calobench keeps the units of the files: showers and the ``energy`` condition in MeV. Showers
stay flat ``[n_voxels]`` in the challenge's voxel order and are read lazily; the geometry
comes from the binning (named by the catalog entry's ``binning`` parameter, or recognised from
the voxel count when a file is read on its own).
"""
from __future__ import annotations

import h5py
import numpy as np

from calobench import CalobenchError, ShowerData

from .binning import N_VOXELS, binning_of, geometry

KEYS = ("incident_energies", "showers")


def _open(path):
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise CalobenchError(f"{path}: no such file") from None
    except OSError:
        raise CalobenchError(f"{path}: not a readable HDF5 file (corrupt or truncated?)") from None


def read_calochallenge(path, binning: str | None = None) -> ShowerData:
    """One challenge file as ShowerData (showers read lazily; the energies are read whole)."""
    f = _open(path)
    try:
        for key in KEYS:
            if key not in f or not isinstance(f[key], h5py.Dataset):
                raise CalobenchError(f"{path}: no '{key}' dataset (is it a CaloChallenge file? it holds "
                                     f"{', '.join(sorted(f)) or 'nothing'})")
        sh, inc = f["showers"], f["incident_energies"]
        if sh.ndim != 2 or sh.dtype.kind != "f":
            raise CalobenchError(f"{path}: 'showers' must be floats [N, n_voxels], got {sh.dtype} {sh.shape}")
        if inc.shape not in ((sh.shape[0], 1), (sh.shape[0],)):
            raise CalobenchError(f"{path}: 'incident_energies' has shape {inc.shape}, expected ({sh.shape[0]}, 1)")
        name = binning or binning_of(sh.shape[1])
        if name is None:
            raise CalobenchError(f"{path}: {sh.shape[1]} voxels per shower match no CaloChallenge binning "
                                 f"({', '.join(f'{k}: {v}' for k, v in N_VOXELS.items())})")
        if sh.shape[1] != N_VOXELS.get(name, -1):
            raise CalobenchError(f"{path}: {sh.shape[1]} voxels per shower, the {name} binning has "
                                 f"{N_VOXELS.get(name, '?')}")
        try:
            energy = np.asarray(inc[...], dtype=np.float32).reshape(-1)
            if len(sh):  # touch the first and last rows: a truncated file fails here, not mid-run
                sh[0:1], sh[len(sh) - 1:len(sh)]
        except (OSError, ValueError) as exc:
            raise CalobenchError(f"{path}: unreadable HDF5 content (corrupt or truncated?): {exc}") from None
        if len(energy) and (not np.isfinite(energy).all() or energy.min() <= 0):
            raise CalobenchError(f"{path}: incident energies must be positive and finite (MeV)")
        return ShowerData(sh, {"energy": energy}, geometry(name), {"source_file": str(path), "binning": name})
    except CalobenchError:
        f.close()
        raise


def _geometry(binning: str | None = None, **_):
    if binning is None:
        raise CalobenchError("a calochallenge dataset entry names its binning in params: "
                             "{binning: ds1_photons | ds1_pions | ds2 | ds3}")
    return geometry(binning)


read_calochallenge.geometry = _geometry  # the catalog describes file datasets without downloading them


def write_calochallenge(path, showers: np.ndarray, energy: np.ndarray) -> None:
    """Write showers [N, n_voxels] and incident energies [N] (MeV) in the challenge's layout, atomically."""
    from calobench import atomic_path

    showers = np.asarray(showers, dtype=np.float32)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("incident_energies", data=np.asarray(energy, dtype=np.float32).reshape(-1, 1))
        f.create_dataset("showers", data=showers.reshape(len(showers), -1), compression="gzip", compression_opts=4)
