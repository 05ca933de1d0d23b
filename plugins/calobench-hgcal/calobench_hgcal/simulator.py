"""HGCAL-like test-beam electron showers: a GFLASH parametric simulation.

Geometry: 12 x 15 cells of 1 cm (hexagonal wafer cells mapped to a Cartesian frame; the
cells outside the hexagonal wafer and two calibration cells are dead, always zero), 7
silicon layers at non-equidistant depths between 2.8 and 16.2 X0 behind 0.27 X0 of
upstream material. Energies in MIP; cells below 2 MIP are zeroed.

Per shower (all vectorised over a block of showers):
1. beam energy: nominal x (1 + 1 % Gaussian) [the label is the true energy];
   impact uniform over a 6 x 5 cm^2 spot, labels smeared by 0.3 mm (tracking);
2. longitudinal profile: GFLASH gamma law with the HGCAL-tuned correlated (ln T, ln a)
   draw; layer l collects the energy of the absorber slab it samples,
   P(a, b t_hi) - P(a, b t_lo) (regularised incomplete gamma), slabs split halfway
   between layers, depth measured from the shower start (upstream 0.27 X0 invisible);
3. sampling fluctuation: one Gamma(shape E/c^2) factor per shower (c = 0.2 for 7
   sparse layers);
4. lateral profile: GFLASH core + tail (R_C, R_T, p as functions of tau = t/T, ln E and
   Z, with the sampling-calorimeter corrections), integrated *exactly* over every cell:
   the 2-D density R^2 / (pi (r^2 + R^2)^2) has the rectangle integral
   G(a, b) = [a/s_a atan(b/s_a) + b/s_b atan(a/s_b)] / (2 pi), s_u = sqrt(u^2 + R^2);
5. cell response: particles ~ Poisson(mean MIP), each a Landau-like deposit
   (Gamma(4, 1/4) per particle, mean 1 MIP), plus 0.25 MIP electronic noise on hit cells
   (an empty cell would need an 8 sigma fluctuation to pass threshold); mask; 2 MIP
   threshold. Few-particle cells populate the 2-5 MIP region.
"""
from __future__ import annotations

import numpy as np
from scipy.special import gammainc

from calobench import Geometry, ShowerData, Simulator, gflash

NX, NY = 12, 15
CELL_CM = 1.0
LAYER_X0 = np.array([2.8, 4.6, 6.5, 8.5, 10.6, 13.3, 16.2])
UPSTREAM_X0 = 0.27
X0_CM, RM_CM, EC_GEV = 0.968, 2.3, 5.36e-3
Z_ABS, Z_ACT, F_S = 82.0, 14.0, 1.0
E_SAMPLING = gflash.sampling_e(Z_ABS, Z_ACT)
MIP_PER_GEV = 60.0
SAMPLING_C = 0.2
NOISE_MIP, THRESHOLD_MIP = 0.25, 2.0
TRAIN_ENERGIES = (20.0, 32.0, 50.0, 80.0, 90.0)
BEAM_SPOT_CM = (6.0, 5.0)
LABEL_SMEAR_CM = 0.03

# slab edges (in X0 from the calorimeter front), halfway between layers
_mid = (LAYER_X0[1:] + LAYER_X0[:-1]) / 2
SLAB_LO = np.concatenate([[0.0], _mid])
SLAB_HI = np.concatenate([_mid, [LAYER_X0[-1] + (LAYER_X0[-1] - LAYER_X0[-2]) / 2]])


def wafer_mask() -> np.ndarray:
    """Active cells: inside a pointy-top hexagon of circumradius 7.5 cm, minus two calibration cells."""
    x = (np.arange(NX) + 0.5 - NX / 2) * CELL_CM
    y = (np.arange(NY) + 0.5 - NY / 2) * CELL_CM
    X, Y = np.meshgrid(x, y, indexing="ij")
    r = 7.5
    inside = (np.abs(X) <= r * np.sqrt(3) / 2) & (np.abs(Y) <= r - np.abs(X) / np.sqrt(3))
    inside[3, 4] = inside[8, 10] = False  # calibration cells
    return np.repeat(inside[:, :, None], len(LAYER_X0), axis=2)


MASK = wafer_mask()


def longitudinal(E: np.ndarray, rng) -> tuple:
    """Correlated GFLASH (T, a) per shower, HGCAL-tuned effective medium."""
    lny = np.log(E / EC_GEV)
    mean_T = -1.396 + 1.007 * lny
    mean_a = -0.0433 + 0.540 * lny
    s_T = 1.0 / (-2.506 + 1.245 * lny)
    s_a = 1.0 / (-0.0844 + 0.790 * lny)
    rho = 0.786 - 0.0232 * lny
    return gflash.correlated_Ta(np.log(mean_T), np.log(mean_a), s_T, s_a, rho, rng)


def layer_fractions(T: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Energy fraction of each layer's slab, [n, 7]."""
    b = ((a - 1) / T)[:, None]
    lo, hi = SLAB_LO + UPSTREAM_X0, SLAB_HI + UPSTREAM_X0
    return gammainc(a[:, None], b * hi) - gammainc(a[:, None], b * lo)


def cell_fractions(cx: np.ndarray, cy: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Exact fraction of a 2-D GFLASH component of radius R [n, L] (cm) in each cell: [n, 12, 15, L]."""
    xe = (np.arange(NX + 1) - NX / 2) * CELL_CM
    ye = (np.arange(NY + 1) - NY / 2) * CELL_CM
    a = (xe[None, :] - cx[:, None])[:, :, None, None].astype(np.float32)  # [n, 13, 1, 1]
    b = (ye[None, :] - cy[:, None])[:, None, :, None].astype(np.float32)  # [n, 1, 16, 1]
    G = gflash.rectangle_integral(a, b, R[:, None, None, :].astype(np.float32))  # [n, 13, 16, L]
    return G[:, 1:, 1:] - G[:, :-1, 1:] - G[:, 1:, :-1] + G[:, :-1, :-1]


def simulate_block(n: int, rng, energies=TRAIN_ENERGIES, energy_smear=0.01, spot=BEAM_SPOT_CM,
                   noise_mip=NOISE_MIP) -> tuple:
    E_nom = rng.choice(np.asarray(energies, dtype=np.float64), n)
    E = E_nom * (1 + energy_smear * rng.standard_normal(n))
    x0 = rng.uniform(-spot[0] / 2, spot[0] / 2, n)
    y0 = rng.uniform(-spot[1] / 2, spot[1] / 2, n)
    T, a = longitudinal(E, rng)
    frac = layer_fractions(T, a)  # [n, L]
    g = rng.gamma(E / SAMPLING_C**2, SAMPLING_C**2 / E)
    mips = MIP_PER_GEV * E[:, None] * frac * g[:, None]  # [n, L]
    tau = (LAYER_X0[None, :] + UPSTREAM_X0) / T[:, None]
    RC, RT, p = gflash.radial_params(E[:, None], tau, Z_ABS, E_SAMPLING, F_S)
    # shower axis jitter (lateral start fluctuations), 1 mm
    cx = x0 + 0.1 * rng.standard_normal(n)
    cy = y0 + 0.1 * rng.standard_normal(n)
    shape = p[:, None, None, :] * cell_fractions(cx, cy, RC * RM_CM) \
        + (1 - p)[:, None, None, :] * cell_fractions(cx, cy, RT * RM_CM)
    lam = np.clip(mips[:, None, None, :] * shape, 0, None)
    particles = rng.poisson(lam)
    hit = (particles > 0) & MASK[None]
    # cells without a particle stay empty: 0.25 MIP noise cannot pass the 2 MIP threshold (8 sigma)
    k = particles[hit]
    dep = np.zeros(lam.shape, dtype=np.float32)
    dep[hit] = rng.gamma(4.0 * k, 0.25) + noise_mip * rng.standard_normal(len(k))
    dep[dep < THRESHOLD_MIP] = 0.0
    labels = {"energy": E, "impact_x": x0 + LABEL_SMEAR_CM * rng.standard_normal(n),
              "impact_y": y0 + LABEL_SMEAR_CM * rng.standard_normal(n)}
    return dep, labels


class HGCALSimulator(Simulator):
    name = "hgcal"
    version = "1"
    block_size = 2048

    def geometry(self, **params) -> Geometry:
        return Geometry(shape=(NX, NY, len(LAYER_X0)), cell_size=(10.0, 10.0, 1.0), layer_axis=-1,
                        layer_positions=LAYER_X0.tolist(), layer_unit="X0", length_unit="mm", energy_unit="MIP",
                        threshold=THRESHOLD_MIP, mask=MASK, axes=("x", "y", "layer"))

    def condition_ranges(self, energies=TRAIN_ENERGIES, energy_smear=0.01, spot=BEAM_SPOT_CM, **_):
        lo, hi = min(energies) * (1 - 4 * energy_smear), max(energies) * (1 + 4 * energy_smear)
        sx, sy = spot[0] / 2 + 4 * LABEL_SMEAR_CM, spot[1] / 2 + 4 * LABEL_SMEAR_CM  # labels carry tracking smear
        return {"energy": (lo, hi), "impact_x": (-sx, sx), "impact_y": (-sy, sy)}

    def simulate(self, n, rng, **params) -> ShowerData:
        showers, labels = simulate_block(n, rng, **params)
        return ShowerData(showers, labels, self.geometry(**params))
