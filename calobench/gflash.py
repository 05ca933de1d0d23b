"""GFLASH parametrisation of electromagnetic showers, shared by the simulator plugins.

Grindhammer & Peters, "The parameterized simulation of electromagnetic showers in
homogeneous and sampling calorimeters" (hep-ex/0001020). Depths ``t`` are in radiation
lengths, radii in Moliere radii, energies in GeV. Everything is vectorised over showers.
"""
from __future__ import annotations

import numpy as np


def critical_energy_gev(x0_cm_z_over_a: float) -> float:
    """E_c = 2.66 (X0 Z/A)^1.1 MeV, in GeV (X0 in g/cm^2 times Z/A)."""
    return 2.66e-3 * x0_cm_z_over_a**1.1


def sampling_e(z_absorber: float, z_active: float) -> float:
    """The sampling parameter e = 1 / (1 + 0.007 (Z_abs - Z_act))."""
    return 1.0 / (1.0 + 0.007 * (z_absorber - z_active))


def sampling_longitudinal(E, e_c: float, z: float, f_s: float, e: float) -> tuple:
    """<ln T>, <ln a>, sigma_lnT, sigma_lna, rho of a sampling calorimeter (homogeneous means corrected)."""
    lny = np.log(np.asarray(E, dtype=np.float64) / e_c)
    T_h = np.maximum(lny - 0.812, 0.1)
    a_h = 0.81 + (0.458 + 2.26 / z) * lny
    mean_lnT = np.log(np.maximum(T_h - 0.55 / f_s - 0.69 * (1 - e), 0.5))
    mean_lna = np.log(np.maximum(a_h - 0.476 / f_s, 1.2))
    s_T = 1.0 / np.maximum(-2.5 + 1.25 * lny, 1.0)
    s_a = 1.0 / np.maximum(-0.82 + 0.79 * lny, 1.0)
    rho = 0.784 - 0.023 * lny
    return mean_lnT, mean_lna, s_T, s_a, rho


def correlated_Ta(mean_lnT, mean_lna, s_T, s_a, rho, rng) -> tuple:
    """Per-shower depth of maximum T and shape a from the correlated log-normal draw (T >= 1, a >= 1.1)."""
    n = np.shape(mean_lnT)[0]
    z1, z2 = rng.standard_normal((2, n))
    lnT = mean_lnT + s_T * (np.sqrt((1 + rho) / 2) * z1 + np.sqrt((1 - rho) / 2) * z2)
    lna = mean_lna + s_a * (np.sqrt((1 + rho) / 2) * z1 - np.sqrt((1 - rho) / 2) * z2)
    return np.maximum(np.exp(lnT), 1.0), np.maximum(np.exp(lna), 1.1)


def radial_params(E, tau, z: float, e: float, f_s: float) -> tuple:
    """R_C, R_T (in R_M) and the core probability p at relative depth ``tau = t/T``, with the
    sampling corrections; ``E`` broadcasts against ``tau`` (pass ``E[:, None]`` for [n, L] tau)."""
    lnE = np.log(E)
    RC = 0.0251 + 0.00319 * lnE + (0.1162 - 0.000381 * z) * tau
    k1, k4 = 0.659 - 0.00309 * z, 0.3585 + 0.0412 * lnE
    RT = k1 * (np.exp(-2.59 * (tau - 0.645)) + np.exp(k4 * (tau - 0.645)))
    p1, p2, p3 = 2.632 - 0.00094 * z, 0.401 + 0.00187 * z, 1.313 - 0.0686 * lnE
    u = (p2 - tau) / p3
    p = p1 * np.exp(u - np.exp(u))
    RC = RC - 0.0203 * (1 - e) + 0.0397 * np.exp(-tau) / f_s
    RT = RT - 0.14 * (1 - e) - 0.495 * np.exp(-tau) / f_s
    p = p + (1 - e) * (0.348 - 0.642 * np.exp(-((tau - 1) ** 2)) / f_s)
    return np.maximum(RC, 0.02), np.maximum(RT, 0.05), np.clip(p, 0.0, 1.0)


def rectangle_integral(a, b, R):
    """Integral of the 2-D GFLASH density R^2 / (pi (r^2 + R^2)^2) over [0, a] x [0, b] (signed).

    G(a, b) = [a/s_a atan(b/s_a) + b/s_b atan(a/s_b)] / (2 pi), s_u = sqrt(u^2 + R^2); a cell's
    fraction is G(x1, y1) - G(x0, y1) - G(x1, y0) + G(x0, y0). Broadcast a [.., X, 1, ..] against
    b [.., 1, Y, ..] so that the square roots are taken on the edges only."""
    sa, sb = np.sqrt(a * a + R * R), np.sqrt(b * b + R * R)
    return ((a / sa) * np.arctan(b / sa) + (b / sb) * np.arctan(a / sb)) * (1 / (2 * np.pi))


def spot_radius(R, u):
    """Inverse CDF of one radial component: r = R sqrt(u / (1 - u)), u uniform in [0, 1)."""
    return R * np.sqrt(u / (1.0 - u))
