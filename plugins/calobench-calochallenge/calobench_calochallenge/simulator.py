"""A parametric simulator in the geometry of CaloChallenge dataset 2 (``calochallenge_ds2``).

Electrons, incident energy log-uniform in [1 GeV, 1 TeV], entering at the origin along z, into
a Si-W sampling calorimeter read out in 45 layers (each two W-Si pairs, 0.8 X0), 9 radial bins
of 4.65 mm (0.5 Moliere radius of tungsten) and 16 angular bins, in the challenge's voxel order.
As in the challenge's files, energies are MeV scaled by the sampling fraction, so the visible
energy is close to the incident one; voxels below 15.15 keV are zero.

Per shower (GFLASH, Grindhammer & Peters, via ``calobench.gflash``; vectorised):
1. longitudinal: the sampling-calorimeter (ln T, ln a) correlated draw for tungsten (Z 74,
   E_c 8 MeV) with silicon readout; layer l collects the gamma-law fraction of its slab
   [0.8 l, 0.8 (l + 1)] X0;
2. sampling fluctuation: one Gamma factor per shower with relative spread
   sqrt(0.16^2 / E[GeV] + 0.01^2);
3. lateral: GFLASH core + tail radii (R_C, R_T, p at tau = t/T) and the radial CDF
   r^2 / (r^2 + R^2) of the 2-D density, integrated exactly over each radial bin; energy
   beyond 41.85 mm is lost (lateral leakage, as in the real files); the shower axis is
   displaced by 0.3 mm (Gaussian) from the origin per shower, which the angular bins see;
4. voxel response: charged tracks ~ Poisson(mean / 1 MIP), 1 MIP = 0.085 MeV in 0.3 mm Si,
   i.e. 2.6 MeV scaled; each track deposits Gamma(1.5, 1/1.5) MIPs (a broad, Landau-like
   spectrum that reaches the threshold), so the periphery is sparse and its spectrum smooth.
"""
from __future__ import annotations

import numpy as np
from scipy.special import gammainc

from calobench import ShowerData, Simulator, gflash

from .binning import BINNINGS, THRESHOLD_MEV, X0_PER_LAYER, geometry

N_LAYERS = 45
R_EDGES_MM = np.asarray(BINNINGS["ds2"][0][1], dtype=np.float64)
N_ALPHA = BINNINGS["ds2"][0][2]
RM_MM = 9.327  # Moliere radius of tungsten
Z_ABS, Z_ACT, EC_GEV, F_S = 74.0, 14.0, 8.0e-3, 2.1
E_SAMPLING = gflash.sampling_e(Z_ABS, Z_ACT)
MIP_MEV = 0.085 / 0.033  # one MIP in 0.3 mm silicon, in the files' scaled units
TRACK_SHAPE = 1.5
STOCHASTIC, CONSTANT = 0.16, 0.01
AXIS_JITTER_MM = 0.3
E_RANGE_MEV = (1.0e3, 1.0e6)


def layer_fractions(T: np.ndarray, a: np.ndarray) -> np.ndarray:
    edges = np.arange(N_LAYERS + 1) * X0_PER_LAYER
    b = ((a - 1) / T)[:, None]
    G = gammainc(a[:, None], b * edges[None, :])
    return np.diff(G, axis=1)  # [n, 45]


def voxel_fractions(cx, cy, R) -> np.ndarray:
    """Fraction of a radial component of radius ``R`` [n, L] (mm), centred at (cx, cy), in each
    (alpha, r) voxel [n, L, 16, 9]: the exact radial CDF per ring, split between the angular bins
    by the direction of the voxel from the displaced axis (a first-order correction, exact for a
    centred axis)."""
    F = R_EDGES_MM[None, None, :] ** 2 / (R_EDGES_MM[None, None, :] ** 2 + R[..., None] ** 2)
    ring = np.diff(F, axis=-1)  # [n, L, 9]
    a_mid = -np.pi + (np.arange(N_ALPHA) + 0.5) * 2 * np.pi / N_ALPHA
    r_mid = (R_EDGES_MM[:-1] + R_EDGES_MM[1:]) / 2
    # displacement along each bin's direction, relative to the ring's radius: more energy towards the axis
    shift = (cx[:, None] * np.cos(a_mid)[None] + cy[:, None] * np.sin(a_mid)[None])  # [n, 16]
    w = 1.0 + 2.0 * shift[:, :, None] * r_mid[None, None, :] / (r_mid[None, None, :] ** 2 + 0.25 * 4.65**2)
    w = np.clip(w, 0.05, None)
    w = w / w.mean(1, keepdims=True)
    return ring[:, :, None, :] * (w[:, None, :, :] / N_ALPHA)


def simulate_block(n: int, rng, e_range=E_RANGE_MEV) -> tuple:
    E_mev = np.exp(rng.uniform(np.log(e_range[0]), np.log(e_range[1]), n))
    E = E_mev / 1e3  # GeV for the parametrisation
    T, a = gflash.correlated_Ta(*gflash.sampling_longitudinal(E, EC_GEV, Z_ABS, F_S, E_SAMPLING), rng)
    frac = layer_fractions(T, a)
    rel = np.sqrt(STOCHASTIC**2 / E + CONSTANT**2)
    g = rng.gamma(1.0 / rel**2, rel**2)
    layer_e = E_mev[:, None] * frac * g[:, None]  # [n, 45] MeV (scaled)
    t_mid = (np.arange(N_LAYERS) + 0.5) * X0_PER_LAYER
    tau = t_mid[None, :] / T[:, None]
    RC, RT, p = gflash.radial_params(E[:, None], tau, Z_ABS, E_SAMPLING, F_S)
    cx, cy = AXIS_JITTER_MM * rng.standard_normal((2, n))
    shape = p[..., None, None] * voxel_fractions(cx, cy, RC * RM_MM) \
        + (1 - p)[..., None, None] * voxel_fractions(cx, cy, RT * RM_MM)  # [n, 45, 16, 9]
    mean = layer_e[..., None, None] * shape
    tracks = rng.poisson(mean / MIP_MEV)
    hit = tracks > 0
    dep = np.zeros(mean.shape, dtype=np.float32)
    dep[hit] = rng.gamma(TRACK_SHAPE * tracks[hit], MIP_MEV / TRACK_SHAPE)
    dep[dep < THRESHOLD_MEV["ds2"]] = 0.0
    return dep.reshape(n, -1), {"energy": E_mev}


class DS2Simulator(Simulator):
    """CaloChallenge dataset-2 geometry, GFLASH physics (see the module docstring)."""

    name = "calochallenge_ds2"
    version = "1"
    block_size = 1024

    def geometry(self, **params):
        return geometry("ds2")

    def condition_ranges(self, e_range=E_RANGE_MEV, **_):
        return {"energy": (float(e_range[0]), float(e_range[1]))}

    def simulate(self, n, rng, e_range=E_RANGE_MEV, **_) -> ShowerData:
        showers, labels = simulate_block(n, rng, e_range)
        return ShowerData(showers, labels, self.geometry())
