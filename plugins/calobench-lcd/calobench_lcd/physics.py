"""LCD observables shared by the 3DGAN's physics heads and the plots (torch, any device).

Images are ``[N, X, Y, Z]`` cell energies (linear scale). Cell centres are at index + 0.5.
"""
from __future__ import annotations

import math

import torch


def ecal_sum(img: torch.Tensor) -> torch.Tensor:
    return img.sum((1, 2, 3))


def measured_angle(img: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """The 3DGAN angle measurement, in radians (NaN for an empty image).

    Overall barycentre (x_ref, y_ref, z_ref); per-layer barycentres (x_mid, y_mid); per layer
    m = (y_mid - y_ref) / sqrt((x_mid - x_ref)^2 + (z - z_ref)^2), sign flipped before z_ref;
    layer angle pi/2 - atan(m); event angle: the z-weighted mean over non-empty layers."""
    n, X, Y, Z = img.shape
    dev, dt = img.device, img.dtype
    xi = torch.arange(X, device=dev, dtype=dt) + 0.5
    yi = torch.arange(Y, device=dev, dtype=dt) + 0.5
    zi = torch.arange(Z, device=dev, dtype=dt) + 0.5
    tot = img.sum((1, 2, 3))
    safe_tot = torch.where(tot > 0, tot, torch.ones_like(tot))
    x_ref = (img.sum((2, 3)) * xi).sum(1) / safe_tot
    y_ref = (img.sum((1, 3)) * yi).sum(1) / safe_tot
    z_ref = (img.sum((1, 2)) * zi).sum(1) / safe_tot
    sumz = img.sum((1, 2))  # [n, Z]
    safe_z = torch.where(sumz > 0, sumz, torch.ones_like(sumz))
    x_mid = (img.sum(2) * xi[:, None]).sum(1) / safe_z
    y_mid = (img.sum(1) * yi[:, None]).sum(1) / safe_z
    zproj = torch.sqrt(torch.clamp((x_mid - x_ref[:, None]) ** 2 + (zi - z_ref[:, None]) ** 2, min=eps))
    m = (y_mid - y_ref[:, None]) / zproj
    m = torch.where(zi < z_ref[:, None], -m, m)
    ang = math.pi / 2 - torch.atan(m)
    w = zi * (sumz > 0)
    wsum = w.sum(1)
    out = (ang * w).sum(1) / torch.where(wsum > 0, wsum, torch.ones_like(wsum))
    return torch.where(tot > 0, out, torch.full_like(out, float("nan")))


def layer_y_barycentres(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per shower and layer, the energy-weighted mean y (cells, centres at index + 0.5; float64, 0
    where the layer is empty) and whether the layer has energy: two ``[N, Z]`` tensors."""
    img = img.to(torch.float64)
    yi = torch.arange(img.shape[2], dtype=torch.float64, device=img.device) + 0.5
    per_layer = img.sum(1)  # [N, Y, Z]
    w = per_layer.sum(1)  # [N, Z]
    return (per_layer * yi[:, None]).sum(1) / torch.where(w > 0, w, torch.ones_like(w)), w > 0


def barycentre_drift(img: torch.Tensor, layers: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Per shower, the slope of the per-layer y barycentre against the layer index (cells per layer;
    NaN with fewer than 4 non-empty layers): the shower axis' drift along y, which for a shower at
    polar angle theta is cot(theta) x (layer pitch / cell pitch) on average. A least-squares line
    through the non-empty layers, each weighted equally. ``layers``: ``layer_y_barycentres(img)`` when
    the caller has it already."""
    Z, dt = img.shape[3], torch.float64
    zi = torch.arange(Z, dtype=dt, device=img.device) - (Z - 1) / 2
    y_mid, on = layers if layers is not None else layer_y_barycentres(img)
    on = on.to(dt)
    k = on.sum(1)
    safe_k = torch.where(k > 0, k, torch.ones_like(k))
    z_bar = (on * zi).sum(1) / safe_k
    y_bar = (on * y_mid).sum(1) / safe_k
    dz = (zi - z_bar[:, None]) * on
    den = (dz ** 2).sum(1)
    slope = (dz * (y_mid - y_bar[:, None])).sum(1) / torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(k >= 4, slope, torch.full_like(slope, float("nan")))
