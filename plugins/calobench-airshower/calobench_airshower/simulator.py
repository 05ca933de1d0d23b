"""Air-shower detector array: 9 x 9 water-Cherenkov stations, 80 time bins of 25 ns.

The toy of the seed (Erdmann, Geiger, Glombitza, Schmidt 2018), on the scales of a real
surface array (the Pierre Auger Observatory's 1500 m grid): vertical showers with a fixed
depth of maximum, energy flat in 1-100 EeV, core uniform within 750 m of the array centre.
Stations on a triangular grid (odd rows shifted by half a spacing, rows 1500 m x sin 60
apart). Per station and component (muons, electromagnetic):
  scale       S(1000 m) = 54 VEM * (E / 10 EeV)^0.97: Auger's S38 calibration
              E = 0.186 EeV * S38^1.031 (ICRC 2019), times 1.13 for vertical showers
              (its attenuation curve at 0 deg); shower-to-shower scatter of S(1000)
              log-normal, 10 % x k
  lateral     S_c(r) = S(1000) f_c (r/1000)^-1.2 ((1 + r/r_M) / (1 + 1000/r_M))^-(eta_c - 1.2),
              r_M = 91.6 m (the AGASA form, Takeda et al. 2003); eta_c chosen so that the
              log-log slope at 1000 m is -4.2 for EM (NKG electrons) and -2.6 for muons;
              the total signal of the data variant falls as r^-3.7 at 1000 m
  arrival     log-normal, sigma 0.7, median 50 + 140 (r/750 m)^1.4 ns (muons),
              80 + 200 (r/750 m)^1.4 ns (EM, later), plus a start-time jitter
              60 ns * 8 / (1 + log10(S_tot + 1)) per station
  trace       expected particles per bin (log-normal CDF differences) with gamma-law
              fluctuations of variance k^2 S_bin (particle counting) + (0.05 S_bin)^2
              (5 % relative gain noise), then the tank response (exponential light
              decay, 60 ns)
  readout     baseline-subtracted: noise N(0, sigma_n) per bin, sigma_n = |N(0.05, 0.0125)|
              VEM per station; bins under 0.15 VEM (3 sigma of the data's noise) read 0 (zero
              suppression: a noise-only trace integrates to ~0, no pedestal, no negative bin);
              the FADC saturates at 200 VEM per bin; a station is read out (triggers) when its
              integrated signal is >= 3 VEM, else its trace is 0
"data" (``variant: data``): 30 % of the signal at 1000 m in muons, 70 % EM, k = 1.
"simulation" (``variant: sim``): the same EM part, muons x 5.4 so that they make 70 % of its
signal at 1000 m (S(1000) x 2.33: the mismodelled muon number of the seed's 70 % / 30 %; an
energy scale learnt on simulation reads data 2x low), baseline noise and event-by-event
fluctuations halved (k = 0.5). Both variants draw energies, cores, the S(1000) scatter and
the per-station fluctuations first, from the same stream, so splits with the same seed are
paired event by event (the per-bin draws then differ with the stations lit).
``view: pattern`` returns the time-integrated 9 x 9 signal pattern instead of traces.
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from calobench import Geometry, ShowerData, Simulator

N_SIDE, N_T, DT_NS = 9, 80, 25.0
SPACING_M = 1500.0
E_RANGE = (1.0, 100.0)  # EeV
MUON_FRACTION = {"data": 0.3, "sim": 0.7}  # of the signal at 1000 m
# per component, the signal at 1000 m in units of data's S(1000): the EM part is the same in both
# (data's 70 %); the simulation's muons are scaled so that they make 70 % of its signal there
# (x 5.4 data's muons, x 2.33 the total), the mismodelled muon number behind the seed's 70 % / 30 %
VARIANTS = {"data": {"muon": MUON_FRACTION["data"], "em": 1 - MUON_FRACTION["data"], "fluct": 1.0, "noise": 1.0},
            "sim": {"muon": (1 - MUON_FRACTION["data"]) * MUON_FRACTION["sim"] / (1 - MUON_FRACTION["sim"]),
                    "em": 1 - MUON_FRACTION["data"], "fluct": 0.5, "noise": 0.5}}
S1000_10EEV, S1000_INDEX = 54.0, 0.97  # VEM at 1000 m for a vertical 10 EeV shower; S ~ E^0.97
R_M, ALPHA = 91.6, 1.2  # AGASA lateral distribution: Moliere radius (m), inner slope
SLOPE_1000 = {"muon": -2.6, "em": -4.2}  # log-log slope at 1000 m per component
NOISE_VEM = 0.05  # baseline noise per 25 ns bin (data; the station's amplitude spreads by 25 %)
ZERO_SUPPRESSION_VEM = 3 * NOISE_VEM  # bins under it read 0
SATURATION_VEM = 200.0  # FADC saturation per 25 ns bin
TRIGGER_VEM = 3.0  # a station is read out when its integrated signal reaches this


def station_positions() -> tuple:
    j, i = np.meshgrid(np.arange(N_SIDE), np.arange(N_SIDE), indexing="ij")  # row j, column i
    x = (i + 0.5 * (j % 2) - (N_SIDE - 1) / 2 - 0.25) * SPACING_M
    y = (j - (N_SIDE - 1) / 2) * SPACING_M * np.sin(np.pi / 3)
    return x.T, y.T  # [9, 9] indexed [i, j]


SX, SY = station_positions()
_T_EDGES = np.arange(N_T + 1) * DT_NS
_KERNEL = np.exp(-np.arange(4) * DT_NS / 60.0)
_KERNEL /= _KERNEL.sum()


def _lognormal_bins(median: np.ndarray, t0: np.ndarray, sigma: float = 0.7) -> np.ndarray:
    """Probability per time bin for arrival t0 + LogNormal(median, sigma): [m, 80] for [m] stations."""
    t = (_T_EDGES - 100.0).astype(np.float32)  # the trace starts 100 ns before the plane front
    rel = t[None] - t0[:, None].astype(np.float32)
    z = (np.log(np.maximum(rel, 1e-3)) - np.log(median).astype(np.float32)[:, None]) * np.float32(1 / sigma)
    cdf = np.where(rel > 0, ndtr(z), 0.0)
    return np.diff(cdf, axis=-1).astype(np.float32)


def ldf(r, component: str):
    """Signal at distance r (m) relative to 1000 m, for ``component`` 'muon' or 'em'."""
    eta = ALPHA + (-SLOPE_1000[component] - ALPHA) * (1 + 1000.0 / R_M) / (1000.0 / R_M)
    r = np.maximum(r, 1.0)
    return (r / 1000.0) ** -ALPHA * ((1 + r / R_M) / (1 + 1000.0 / R_M)) ** -(eta - ALPHA)


def readout(trace, noise_sd, rng, trigger: bool = True):
    """Baseline-subtracted FADC readout of [m, 80] light traces: N(0, noise_sd) per bin, zero
    suppression of bins under ZERO_SUPPRESSION_VEM (3 sigma of the data's noise; so a noise-only
    trace integrates to ~0: no pedestal, and no bin is negative), saturation at SATURATION_VEM
    per bin, and (``trigger``) the station trigger: a trace whose integral is under TRIGGER_VEM
    is not read out (all 0)."""
    out = trace + noise_sd[:, None].astype(np.float32) * rng.standard_normal(trace.shape, dtype=np.float32)
    out[out < ZERO_SUPPRESSION_VEM] = 0
    out = np.minimum(out, SATURATION_VEM)
    if trigger:
        out[out.sum(-1) < TRIGGER_VEM] = 0
    return out


def event_geometry(n: int, rng, e_min=E_RANGE[0], e_max=E_RANGE[1]) -> tuple:
    """The first draws of every block: energies [n] (EeV), cores [n, 2] (m) and the stations'
    distances to the core [n, 9, 9] (m). A fresh generator of a block's seed gives that block's."""
    E = rng.uniform(e_min, e_max, n)
    core = rng.uniform(-750, 750, (n, 2))
    return E, core, np.hypot(SX[None] - core[:, 0, None, None], SY[None] - core[:, 1, None, None])


def simulate_block(n: int, rng, variant: str = "data", view: str = "traces", e_min=E_RANGE[0], e_max=E_RANGE[1]):
    v = VARIANTS[variant]
    E, _, r = event_geometry(n, rng, e_min, e_max)
    s1000 = S1000_10EEV * (E / 10.0) ** S1000_INDEX * np.exp(0.10 * v["fluct"] * rng.standard_normal(n))
    s_mu = s1000[:, None, None] * v["muon"] * ldf(r, "muon")
    s_em = s1000[:, None, None] * v["em"] * ldf(r, "em")
    g_n = rng.standard_normal((2, n, N_SIDE, N_SIDE))
    s_mu = np.maximum(s_mu + v["fluct"] * np.sqrt(s_mu) * g_n[0], 0)
    s_em = np.maximum(s_em + v["fluct"] * np.sqrt(s_em) * g_n[1], 0)
    jitter = 60.0 * 8.0 / (1.0 + np.log10(s_mu + s_em + 1.0)) * rng.standard_normal((n, N_SIDE, N_SIDE))
    q = (r / 750.0) ** 1.4
    amp = (np.abs(1.0 + 0.25 * rng.standard_normal((n, N_SIDE, N_SIDE))) * NOISE_VEM * v["noise"]).astype(np.float32)
    # stations with a signal get a trace; the others (< 0.1 VEM, under the trigger with noise alone) stay 0
    lit = (s_mu + s_em) > 0.1
    expected = s_mu[lit][:, None] * _lognormal_bins(50 + 140 * q[lit], jitter[lit]) \
        + s_em[lit][:, None] * _lognormal_bins(80 + 200 * q[lit], jitter[lit])  # [m, 80], lit stations only
    # particle-counting fluctuations (scaled by k) and the 5 % relative gain noise: a gamma law
    # with that mean and variance (non-negative and unbiased, unlike a Gaussian clipped at 0)
    var = v["fluct"] ** 2 * expected + (0.05 * expected) ** 2
    on = expected > 1e-6
    shape = np.where(on, expected**2 / np.maximum(var, 1e-12), 1.0).astype(np.float32)
    lit_trace = np.where(on, rng.standard_gamma(shape, dtype=np.float32) * (var / np.maximum(expected, 1e-12)),
                         0).astype(np.float32)
    smooth = _KERNEL[0] * lit_trace  # tank response: exponential light decay, 60 ns
    for k in range(1, len(_KERNEL)):
        smooth[:, k:] += _KERNEL[k] * lit_trace[:, :-k]
    noisy = readout(smooth, amp[lit], rng)
    trace = np.zeros((n, N_SIDE, N_SIDE, N_T), np.float32)
    trace[lit] = noisy
    if view == "pattern":
        return trace.sum(-1), E
    return trace, E


class AirShowerSimulator(Simulator):
    name = "airshower"
    version = "2"
    block_size = 2048

    def geometry(self, view="traces", **_):
        if view == "pattern":
            return Geometry(shape=(N_SIDE, N_SIDE), cell_size=(SPACING_M, SPACING_M * np.sin(np.pi / 3)),
                            layer_axis=None, length_unit="m", energy_unit="VEM", axes=("x", "y"))
        return Geometry(shape=(N_SIDE, N_SIDE, N_T), cell_size=(SPACING_M, SPACING_M * np.sin(np.pi / 3), DT_NS),
                        layer_axis=-1, layer_positions=(np.arange(N_T) * DT_NS).tolist(), layer_unit="ns",
                        length_unit="m", energy_unit="VEM", axes=("x", "y", "t"))

    def condition_ranges(self, e_min=E_RANGE[0], e_max=E_RANGE[1], **_):
        return {"energy": (float(e_min), float(e_max))}

    def simulate(self, n, rng, variant="data", view="traces", **params):
        if variant not in VARIANTS:
            from calobench import CalobenchError

            raise CalobenchError(f"airshower variant must be one of {sorted(VARIANTS)}, got '{variant}'")
        x, E = simulate_block(n, rng, variant, view, **params)
        return ShowerData(x, {"energy": E.astype(np.float32)}, self.geometry(view=view))
