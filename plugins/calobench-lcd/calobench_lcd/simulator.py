"""LCD-like Si-W electromagnetic calorimeter: inclined electron showers in 51 x 51 x 25 cells.

A GFLASH spot simulation (the method of GFLASH itself: a shower is a cloud of energy
spots drawn from the longitudinal and radial profiles), fully vectorised over a block.

Geometry: cells of 5.1 mm x 5.1 mm, 25 layers: 17 x 2.4 mm W (0.686 X0) then 8 x 4.8 mm W
(1.371 X0), ~22.6 X0 in all, each followed by a silicon layer. Cell values are the visible
(silicon) energy in GeV, so a shower's sum is a few per cent of E_p, as in the public files.

Per shower (see the plugin README for the choices made):
1. E_p flat in [2, 500] GeV, theta flat in [60, 120] deg (stored in radians); 90 deg is a
   shower perpendicular to the layers;
2. (T, a) from GFLASH's sampling-calorimeter parametrisation (W absorber, Si active,
   F_s = 1.45), correlated log-normal draw;
3. N = 10.3/c E^0.959 spots (c = 0.17) shared multinomially among the 25 absorber slabs
   and the leakage by the exact gamma-law fractions, P(a, b t_hi) - P(a, b t_lo), the slab
   edges taken along the inclined axis (normal depth / sin(theta));
4. radial distance from GFLASH's core/tail profile at the slab's tau = t/T, uniform
   azimuth; the axis drifts by cot(theta) cells per layer in y (layer pitch taken as one
   cell, so the 3DGAN angle measurement is unbiased), and the y offset of a spot is
   stretched by 1/sin(theta) (the inclined shower's cut by a layer plane);
5. energy: the shower's deposit E_p g, g ~ Gamma(E/c^2)/(E/c^2) (sampling fluctuation),
   shared by the spots with a Gamma(2)/2 factor each; visible fraction 2.5 % in the thin
   and 1.25 % in the thick layers (twice the tungsten per silicon layer);
6. a soft-photon halo (version 2): HALO_PER_GEV x E_p deposits per shower, each starting at a
   random spot of its shower and flying an isotropic exponential path of 2 cm (W's attenuation
   length at its minimum, ~1.3 cm at 3-4 MeV, diluted by the silicon and lengthened for the
   few Compton scatters before absorption); the layer changes by the path's depth over the
   layer pitch, deposits leaving the stack are lost; visible energy per deposit from
   dN/de ~ e^-1.6 between 1 keV and 1 MeV, taken from the shower's spots so the visible sum
   is kept. It gives the periphery the smooth spectrum of very small deposits the paper's
   power-0.85 pre-processing exists for: ~1 % of the cells hit at 2-10 GeV, ~16 % at 500 GeV
   (version 1, without it: 0.2 % and 2.4 %);
7. the image is centred on the shower's energy barycentre; cells below 1e-6 GeV are zero
   (the threshold the authors' analysis applies to the public files).
"""
from __future__ import annotations

import numpy as np
from scipy.special import gammainc

from calobench import Geometry, ShowerData, Simulator, gflash

NX = NY = 51
NL = 25
CELL_CM = 0.51
N_THIN, X0_THIN, X0_THICK = 17, 2.4 / 3.5, 4.8 / 3.5
LAYER_X0 = np.array([X0_THIN] * N_THIN + [X0_THICK] * (NL - N_THIN))
EDGES_X0 = np.concatenate([[0.0], np.cumsum(LAYER_X0)])  # absorber slab edges, normal depth
Z_ABS, Z_ACT = 74.0, 14.0
E_C_GEV = 0.008  # tungsten
RM_CM = 0.93 * (2.4 + 0.5) / 2.4  # tungsten's R_M diluted by the 0.5 mm of silicon per layer
F_S = 1.45  # X0_eff / (d_W + d_Si) for 2.4 mm W + 0.5 mm Si
E_SAMPLING = gflash.sampling_e(Z_ABS, Z_ACT)
STOCHASTIC_C = 0.17
SF_THIN, SF_THICK = 0.025, 0.0125
SAMPLING_FRACTION = np.where(np.arange(NL) < N_THIN, SF_THIN, SF_THICK)
THRESHOLD_GEV = 1e-6  # the authors' analysis threshold (cells below 1e-6 GeV set to zero)
# soft-photon halo: photons below ~MeV fly an attenuation length before a Compton electron
# deposits in a silicon layer; a 1/e spectrum of small deposits in the periphery
HALO_PER_GEV = 200.0  # halo deposits per GeV of E_p
HALO_LAMBDA_CM = 2.0  # flight length (W at a few MeV: mu/rho ~ 0.04 cm2/g, 1.3 cm, diluted by the silicon)
HALO_E_GEV = (1e-6, 1e-3)  # visible energy of one deposit: 1 keV - 1 MeV, dN/de ~ e^-HALO_INDEX
HALO_INDEX = 1.6
INV_PITCH_CM = (1 / np.where(np.arange(NL) < N_THIN, 0.24 + 0.05, 0.48 + 0.05)).astype(np.float32)  # W + Si per layer
ENERGY_RANGE = (2.0, 500.0)
THETA_RANGE = (np.pi / 3, 2 * np.pi / 3)


def layer_fractions(T, a, sin_theta) -> np.ndarray:
    """Energy fraction of each absorber slab [n, 25] plus the longitudinal leakage [n, 1]: the slab
    edges, in depth along the inclined axis, are the normal depths / sin(theta)."""
    b = ((a - 1) / T)[:, None]
    cdf = gammainc(a[:, None], b * EDGES_X0[None, :] / sin_theta[:, None])  # [n, 26]
    frac = np.diff(cdf, axis=1)
    return np.concatenate([frac, np.clip(1 - cdf[:, -1:], 0, 1)], axis=1)


def simulate_block(n: int, rng, energy_range=ENERGY_RANGE, theta_range=THETA_RANGE) -> tuple:
    E = rng.uniform(*energy_range, n)
    theta = rng.uniform(*theta_range, n)
    sin_t, cot_t = np.sin(theta), 1.0 / np.tan(theta)
    T, a = gflash.correlated_Ta(*gflash.sampling_longitudinal(E, E_C_GEV, Z_ABS, F_S, E_SAMPLING), rng)
    g = rng.gamma(E / STOCHASTIC_C**2) * (STOCHASTIC_C**2 / E)
    n_spots = np.maximum(rng.poisson(10.3 / STOCHASTIC_C * E**0.959), 1)
    # longitudinal: spots shared among the layers (and the leakage) by the exact slab fractions
    pv = layer_fractions(T, a, sin_t)
    pv /= pv.sum(1, keepdims=True)
    counts = rng.multinomial(n_spots, pv)[:, :NL]
    sl = np.repeat(np.arange(n * NL), counts.ravel())  # (shower, layer) of each spot
    s, layer = sl // NL, sl % NL
    # radial: GFLASH core/tail parameters at each layer's tau = t/T (t: slab centre along the axis)
    t_mid = (EDGES_X0[:-1] + EDGES_X0[1:])[None, :] / 2 / sin_t[:, None]
    RC, RT, p = gflash.radial_params(E[:, None], t_mid / T[:, None], Z_ABS, E_SAMPLING, F_S)
    m = len(sl)
    u = rng.random(m, dtype=np.float32)
    v = rng.random(m, dtype=np.float32)
    phi = rng.random(m, dtype=np.float32) * np.float32(2 * np.pi)
    R = np.where(v < p.ravel()[sl], RC.ravel()[sl], RT.ravel()[sl]).astype(np.float32)
    r = np.float32(RM_CM) * gflash.spot_radius(R, np.minimum(u, np.float32(0.999999)))
    x = r * np.cos(phi)
    y = ((layer - (NL - 1) / 2) * cot_t[s] * CELL_CM).astype(np.float32) + r * np.sin(phi) / sin_t[s].astype(np.float32)
    # energies: per-shower sampling fluctuation, per-spot Landau-like factor, layer sampling fraction
    e = ((E * g / n_spots)[s] * SAMPLING_FRACTION[layer]).astype(np.float32)
    e *= (rng.standard_exponential(m, dtype=np.float32) + rng.standard_exponential(m, dtype=np.float32)) * np.float32(0.5)
    # soft-photon halo: each deposit starts at a random spot of its shower and flies an isotropic
    # exponential path; its energy is taken from the shower's spots, so the visible sum is kept
    per_shower = np.bincount(s, minlength=n)
    n_halo = np.where(per_shower > 0, rng.poisson(HALO_PER_GEV * E), 0)
    hs = np.repeat(np.arange(n), n_halo)
    k = len(hs)
    first = np.cumsum(per_shower) - per_shower
    parent = first[hs] + (rng.random(k, dtype=np.float32) * per_shower[hs]).astype(np.int64)
    L = rng.standard_exponential(k, dtype=np.float32) * np.float32(HALO_LAMBDA_CM)
    cos_t = rng.random(k, dtype=np.float32) * np.float32(2) - np.float32(1)
    L_perp = L * np.sqrt(np.float32(1) - cos_t * cos_t)
    phi_h = rng.random(k, dtype=np.float32) * np.float32(2 * np.pi)
    h_layer = layer[parent] + np.rint(L * cos_t * INV_PITCH_CM[layer[parent]]).astype(np.int64)
    keep = (h_layer >= 0) & (h_layer < NL)  # out of the stack: leaked or back-scattered
    q = 1 - HALO_INDEX  # inverse CDF of the truncated power law
    lo, hi = HALO_E_GEV[0] ** q, HALO_E_GEV[1] ** q
    h_e = (rng.random(k, dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)) ** np.float32(1 / q)
    h_e_sum = np.bincount(hs, h_e, minlength=n)
    main_sum = np.bincount(s, e, minlength=n)
    e *= np.clip(1 - h_e_sum / np.where(main_sum > 0, main_sum, 1), 0.5, 1).astype(np.float32)[s]
    parent, L_perp, phi_h = parent[keep], L_perp[keep], phi_h[keep]
    s = np.concatenate([s, hs[keep]])
    layer = np.concatenate([layer, h_layer[keep]])
    x = np.concatenate([x, x[parent] + L_perp * np.cos(phi_h)])
    y = np.concatenate([y, y[parent] + L_perp * np.sin(phi_h)])
    e = np.concatenate([e, h_e[keep]])
    # centre the image on the energy barycentre
    wsum = np.bincount(s, e, minlength=n)
    wsum[wsum == 0] = 1.0
    x -= (np.bincount(s, e * x, minlength=n) / wsum).astype(np.float32)[s]
    y -= (np.bincount(s, e * y, minlength=n) / wsum).astype(np.float32)[s]
    ix = np.floor(x * np.float32(1 / CELL_CM) + NX / 2).astype(np.int64)
    iy = np.floor(y * np.float32(1 / CELL_CM) + NY / 2).astype(np.int64)
    inside = (ix >= 0) & (ix < NX) & (iy >= 0) & (iy < NY)
    flat = ((s * NX + ix) * NY + iy) * NL + layer
    img = np.bincount(flat[inside], e[inside], minlength=n * NX * NY * NL).astype(np.float32)
    img[img < THRESHOLD_GEV] = 0.0
    return img.reshape(n, NX, NY, NL), {"energy": E, "theta": theta}


class LCDSimulator(Simulator):
    name = "lcd"
    version = "2"  # 2: the soft-photon halo, threshold 1e-6 GeV (1: 0.25 MIP, no halo)
    block_size = 128

    def geometry(self, **params) -> Geometry:
        depths = (EDGES_X0[1:]).tolist()  # silicon behind each absorber
        return Geometry(shape=(NX, NY, NL), cell_size=(CELL_CM * 10, CELL_CM * 10, 1.0), layer_axis=-1,
                        layer_positions=depths, layer_unit="X0", length_unit="mm", energy_unit="GeV",
                        threshold=THRESHOLD_GEV, axes=("x", "y", "layer"))

    def condition_ranges(self, energy_range=ENERGY_RANGE, theta_range=THETA_RANGE, **_):
        return {"energy": tuple(map(float, energy_range)), "theta": tuple(map(float, theta_range))}

    def simulate(self, n, rng, **params) -> ShowerData:
        showers, labels = simulate_block(n, rng, **params)
        return ShowerData(showers, labels, self.geometry(**params))
