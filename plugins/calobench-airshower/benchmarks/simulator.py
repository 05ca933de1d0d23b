"""The air-shower array simulator: events/s on one thread, the array's physics figures
(lateral-distribution slope, signal at 1000 m vs energy, saturation, pedestal, scatter of
the total signal at fixed energy), and the data/simulation differences on paired events.

    python plugins/calobench-airshower/benchmarks/simulator.py [--n 4096] [--figures-n 20000]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from calobench_airshower.simulator import (DT_NS, NOISE_VEM, SATURATION_VEM, TRIGGER_VEM, VARIANTS,  # noqa: E402
                                           event_geometry, readout, simulate_block)


def array_figures(n: int, variant: str, seed: int = 9) -> dict:
    """Physics figures of one variant from ``n`` events (the stations' exact distances from the
    simulator's own first draws)."""
    x, E = simulate_block(n, np.random.default_rng(seed), variant)
    _, _, r = event_geometry(n, np.random.default_rng(seed))
    S = x.sum(-1)
    sat = (x >= SATURATION_VEM).any(-1)
    trig = S > 0
    out = {"variant": variant}
    # log-log slope of the station signal vs distance, per energy decade's events, 500-2000 m,
    # triggered and unsaturated stations (median signal in distance bins, then a line)
    edges = np.geomspace(500, 2000, 7)
    mid = np.sqrt(edges[1:] * edges[:-1])
    slopes = []
    for lo, hi in ((10, 30), (30, 100)):
        ev = (E >= lo) & (E < hi)
        rs, ss = r[ev][trig[ev] & ~sat[ev]], S[ev][trig[ev] & ~sat[ev]]
        e_norm = np.broadcast_to(E[ev][:, None, None], r[ev].shape)[trig[ev] & ~sat[ev]]
        med = [np.median(ss[(rs >= a) & (rs < b)] / e_norm[(rs >= a) & (rs < b)]) for a, b in zip(edges[:-1], edges[1:])]
        slopes.append(np.polyfit(np.log(mid), np.log(med), 1)[0])
    out["ldf_slope_10-30EeV"], out["ldf_slope_30-100EeV"] = slopes
    near = (r > 900) & (r < 1100) & trig & ~sat
    for e0 in (3, 10, 30, 100):
        ev = np.abs(E - e0) / e0 < 0.15
        sel = near & ev[:, None, None]
        out[f"S1000_{e0}EeV"] = float(np.median(S[sel])) if sel.any() else float("nan")
    out["saturated_station_fraction"] = float(sat[trig].mean())
    out["events_with_saturation_above_50EeV"] = float(sat[E > 50].any((1, 2)).mean())
    top = S.reshape(n, -1).max(1)
    out["largest_station_median"] = float(np.median(top))
    out["largest_station_max"] = float(top.max())
    # pedestal: the integral of a light-free trace read out with the variant's noise, before the
    # trigger; and how often such a trace triggers
    quiet = np.zeros((4000, x.shape[-1]), np.float32)
    sd = np.full(4000, NOISE_VEM * VARIANTS[variant]["noise"], np.float32)
    out["pedestal_noise_only"] = float(readout(quiet, sd, np.random.default_rng(1), trigger=False).sum(-1).mean())
    out["noise_only_triggered_fraction"] = float((readout(quiet, sd, np.random.default_rng(1)).sum(-1) > 0).mean())
    out["stations_triggered_10EeV"] = float(trig[np.abs(E - 10) < 1.5].sum((1, 2)).mean())
    ev = np.abs(E - 10) < 1.0
    tot = S[ev].sum((1, 2))
    out["total_signal_scatter_dex_10EeV"] = float(np.std(np.log10(tot)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--figures-n", type=int, default=20000)
    args = ap.parse_args()
    simulate_block(256, np.random.default_rng(0))
    for variant in ("data", "sim"):
        rates = []
        for rep in range(5):
            t0 = time.perf_counter()
            simulate_block(args.n, np.random.default_rng(rep), variant)
            rates.append(args.n / (time.perf_counter() - t0))
        print(f"{variant:>5}: {np.median(rates):,.0f} events/s (median of 5 x {args.n}, one thread)")
    print(f"trigger {TRIGGER_VEM:g} VEM integrated, saturation {SATURATION_VEM:g} VEM per {DT_NS:g} ns bin")
    figs = [array_figures(args.figures_n, v) for v in ("data", "sim")]
    keys = [k for k in figs[0] if k != "variant"]
    print(f"{'figure':<34} {'data':>12} {'sim':>12}")
    for k in keys:
        print(f"{k:<34} {figs[0][k]:>12.4g} {figs[1][k]:>12.4g}")
    d, E = simulate_block(2000, np.random.default_rng(9), "data")
    s, _ = simulate_block(2000, np.random.default_rng(9), "sim")
    t = np.arange(d.shape[-1]) * DT_NS
    for name, x in (("data", d), ("sim", s)):
        top = x.reshape(len(x), 81, -1)[np.arange(len(x)), x.sum(-1).reshape(len(x), -1).argmax(1)]
        mean_t = (top * t).sum(1) / top.sum(1)
        print(f"{name:>5}: largest-station mean arrival {mean_t.mean():.0f} ns, total signal per event "
              f"{np.median(x.sum((1, 2, 3))):,.0f} VEM (median)")


if __name__ == "__main__":
    main()
