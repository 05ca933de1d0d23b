"""Air-shower detector array: 9 x 9 water-Cherenkov stations, 80 time bins of 25 ns.

The toy of the seed (Erdmann, Geiger, Glombitza, Schmidt 2018): vertical showers with a
fixed depth of maximum, energy flat in 1-100 EeV, core uniform within 750 m of the array
centre. Stations on a triangular grid (odd rows shifted by half a spacing, rows 1500 m x
sin 60 apart). Per station and component (muons, electromagnetic):
  signal      S = S0 * f_comp * (r / 1000 m)^-beta, S0 = 900 VEM * E / 10 EeV,
              r clipped at 150 m, beta_mu = 4.7, beta_em = 6.1
  arrival     log-normal, sigma 0.7, median 50 + 140 (r/750 m)^1.4 ns (muons),
              80 + 200 (r/750 m)^1.4 ns (EM, later), plus a start-time jitter
              60 ns * 8 / (1 + log10(S_tot + 1)) per station
  trace       expected particles per bin (log-normal CDF differences) with Gaussian
              fluctuations of variance k^2 S_bin (particle counting) + (0.05 S_bin)^2
              (5 % relative gain noise), then the tank response (exponential light
              decay, 60 ns)
  noise       an additive ~1.2 VEM per bin whose amplitude has its own spread
              (|N(1.2, 0.3)| per station); clipped at 0
"data" (``variant: data``): 30 % of the signal in muons, 70 % EM, k = 1.
"simulation" (``variant: sim``): 70 % muons, 30 % EM, absolute noise and event-by-event
fluctuations halved (k = 0.5). Both variants consume identical random streams, so splits
with the same seed are paired: same energies, cores and fluctuation draws.
``view: pattern`` returns the time-integrated 9 x 9 signal pattern instead of traces.
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from calobench import Geometry, ShowerData, Simulator

N_SIDE, N_T, DT_NS = 9, 80, 25.0
SPACING_M = 1500.0
E_RANGE = (1.0, 100.0)  # EeV
VARIANTS = {"data": {"muon_fraction": 0.3, "fluct": 1.0, "noise": 1.0},
            "sim": {"muon_fraction": 0.7, "fluct": 0.5, "noise": 0.5}}


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


def simulate_block(n: int, rng, variant: str = "data", view: str = "traces", e_min=E_RANGE[0], e_max=E_RANGE[1]):
    v = VARIANTS[variant]
    E = rng.uniform(e_min, e_max, n)
    core = rng.uniform(-750, 750, (n, 2))
    r = np.hypot(SX[None] - core[:, 0, None, None], SY[None] - core[:, 1, None, None])  # [n, 9, 9]
    rr = np.maximum(r, 150.0) / 1000.0
    S0 = 900.0 * E / 10.0
    s_mu = S0[:, None, None] * v["muon_fraction"] * rr**-4.7
    s_em = S0[:, None, None] * (1 - v["muon_fraction"]) * rr**-6.1
    g_n = rng.standard_normal((2, n, N_SIDE, N_SIDE))
    s_mu = np.maximum(s_mu + v["fluct"] * np.sqrt(s_mu) * g_n[0], 0)
    s_em = np.maximum(s_em + v["fluct"] * np.sqrt(s_em) * g_n[1], 0)
    jitter = 60.0 * 8.0 / (1.0 + np.log10(s_mu + s_em + 1.0)) * rng.standard_normal((n, N_SIDE, N_SIDE))
    q = (r / 750.0) ** 1.4
    # stations with a signal get a trace; the others only noise (< 0.05 VEM in all, under 1.2 VEM/bin noise)
    lit = (s_mu + s_em) > 0.05
    expected = s_mu[lit][:, None] * _lognormal_bins(50 + 140 * q[lit], jitter[lit]) \
        + s_em[lit][:, None] * _lognormal_bins(80 + 200 * q[lit], jitter[lit])  # [m, 80], lit stations only
    # particle-counting fluctuations (scaled by k) and the 5 % relative gain noise, as one Gaussian
    sd = np.sqrt(v["fluct"] ** 2 * expected + (0.05 * expected) ** 2)
    lit_trace = np.maximum(expected + sd * rng.standard_normal(expected.shape, dtype=np.float32), 0)
    smooth = _KERNEL[0] * lit_trace  # tank response: exponential light decay, 60 ns
    for k in range(1, len(_KERNEL)):
        smooth[:, k:] += _KERNEL[k] * lit_trace[:, :-k]
    trace = np.zeros((n, N_SIDE, N_SIDE, N_T), np.float32)
    trace[lit] = smooth
    amp = (np.abs(1.2 + 0.3 * rng.standard_normal((n, N_SIDE, N_SIDE, 1))) * v["noise"]).astype(np.float32)
    trace = np.maximum(trace + amp * rng.standard_normal(trace.shape, dtype=np.float32), 0)
    if view == "pattern":
        return trace.sum(-1), E
    return trace, E


class AirShowerSimulator(Simulator):
    name = "airshower"
    version = "1"
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
