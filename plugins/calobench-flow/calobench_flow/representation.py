"""The shower representation the flow is trained on, and its exact inverse.

Energies first, cells second (as CaloFlow and CaloDREAM split them, in one vector here):
  * ``energy="total"`` (default): log(E_tot / E_inc), then per layer log(E_l / E_tot) (a 2-D
    pattern is one layer); ``energy="layers"``: per layer log(E_l / E_inc). E_inc is the
    incident energy when the dataset has an ``energy`` condition (else left out);
  * per active cell: v = log(x / t) >= 0 above the readout threshold t, and for a cell below it
    (a zero) a value drawn uniformly in [-width, 0): the zeros become a learnable continuous
    region that decodes back to exactly zero;
  * every feature standardised with the training set's mean and spread.
Decoding maps the cells back (x = t exp(v), zero where v < 0) and rescales each layer to the
generated layer energy, so the total energy, and hence the response, is what the flow put in
the low-dimensional layer part, not the sum of hundreds of noisy cells.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

FRACTION_EPS = 1e-6  # layer fractions below this are empty layers
ZERO_WIDTH = 2.0  # zeros are drawn in [-ZERO_WIDTH, 0) in log(x / threshold) units


def central_window(shape: tuple, layer_axis, crop: int) -> np.ndarray:
    """True on the central ``crop`` cells of every axis longer than ``crop``, the layer axis excepted."""
    keep = np.ones(shape, bool)
    layer_axis = None if layer_axis is None else layer_axis % len(shape)
    for axis, n in enumerate(shape):
        if axis == layer_axis or n <= crop:
            continue
        lo = (n - crop) // 2
        inside = np.zeros(n, bool)
        inside[lo: lo + crop] = True
        keep &= np.expand_dims(inside, tuple(i for i in range(len(shape)) if i != axis))
    return keep


class Representation(nn.Module):
    """Buffers only (saved with the model): active-cell mask, layer index per cell, threshold,
    feature mean/std."""

    def __init__(self, geometry, conditions: dict, energy: str = "total", zero_gap: float = 0.0,
                 crop: int | None = None):
        super().__init__()
        self.zero_gap = float(zero_gap)  # zeros are drawn in [-gap - ZERO_WIDTH, -gap)
        # a cell feature decodes to a hit at or above this (default: the middle of the gap); the model
        # may calibrate it on validation showers (a buffer: saved with the weights)
        self.register_buffer("boundary", torch.tensor(-self.zero_gap / 2, dtype=torch.float64))
        if energy not in ("total", "layers"):
            raise ValueError(f"energy features: 'total' or 'layers', not {energy!r}")
        self.energy_mode = energy
        shape = tuple(geometry.shape)
        mask = np.ones(shape, bool) if geometry.mask is None else np.asarray(geometry.mask, bool)
        if crop is not None:  # only the central crop cells of every axis but the layer axis are generated
            mask = mask & central_window(shape, geometry.layer_axis, crop)
        if geometry.layer_axis is not None and len(shape) > 1:
            layer = np.broadcast_to(np.expand_dims(np.arange(shape[geometry.layer_axis]),
                                                   tuple(i for i in range(len(shape)) if i != geometry.layer_axis)),
                                    shape)
        else:
            layer = np.zeros(shape, int)
        flat_mask = mask.reshape(-1)
        self.shape = shape
        self.n_layers = int(layer.max()) + 1
        self.register_buffer("active", torch.as_tensor(np.flatnonzero(flat_mask)))
        self.register_buffer("layer_of", torch.as_tensor(layer.reshape(-1)[flat_mask].astype(np.int64)))
        self.register_buffer("threshold", torch.tensor(float(geometry.threshold)))
        # the unit of the log cells: the threshold, or (no threshold) half the smallest deposit seen in fit()
        self.register_buffer("scale", torch.tensor(float(geometry.threshold) if geometry.threshold > 0 else 1.0))
        self.n_cells = int(flat_mask.sum())
        self.n_energy = self.n_layers + (1 if energy == "total" else 0)
        self.n_features = self.n_energy + self.n_cells
        self.register_buffer("mean", torch.zeros(self.n_features))
        self.register_buffer("std", torch.ones(self.n_features))
        self.with_energy = "energy" in conditions

    # -- helpers ----------------------------------------------------------------
    def _cells(self, showers: torch.Tensor) -> torch.Tensor:
        return showers.reshape(len(showers), -1)[:, self.active].double()

    def _layer_sums(self, cells: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(cells), self.n_layers, dtype=cells.dtype, device=cells.device)
        return out.index_add_(1, self.layer_of, cells)

    def _scale(self) -> float:
        return float(self.scale)

    def _incident(self, energy) -> torch.Tensor:
        return torch.as_tensor(np.asarray(energy, np.float64)) if self.with_energy else None

    def fit(self, showers: np.ndarray, energy=None, generator=None) -> None:
        """Mean and spread of every feature on (a sample of) the training showers."""
        if float(self.threshold) <= 0:
            pos = showers[showers > 0]
            self.scale.fill_(0.5 * float(pos.min()) if len(pos) else 1.0)
        z = self.encode(torch.as_tensor(showers), energy, generator, standardise=False)
        self.mean.copy_(z.mean(0).float())
        self.std.copy_(z.std(0).clamp_min(1e-3).float())

    def encode(self, showers: torch.Tensor, energy=None, generator=None, standardise: bool = True) -> torch.Tensor:
        return self.dequantise(*self.features(showers, energy), generator, standardise)

    def features(self, showers: torch.Tensor, energy=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The deterministic part of the encoding: the energy features and the log cells, -inf for a
        zero (float32; computed once for a training set, dequantised per step)."""
        cells = self._cells(showers).clamp_min(0)
        t = self._scale()
        layer_e = self._layer_sums(cells)
        if self.energy_mode == "total":  # log(E_tot / E_inc), then log of each layer's fraction
            total = layer_e.sum(1, keepdim=True)
            e = torch.cat([torch.log(total + t * 1e-3), torch.log(layer_e / total.clamp_min(1e-30) + FRACTION_EPS)], 1)
            if self.with_energy:
                e[:, :1] -= torch.log(self._incident(energy))[:, None]
        else:  # log(E_layer / E_inc) per layer
            e = torch.log(layer_e + t * 1e-3)
            if self.with_energy:
                e = e - torch.log(self._incident(energy))[:, None]
        above = cells > 0  # the data are thresholded already: every deposit is a hit
        v = torch.where(above, torch.log(cells.clamp_min(t * 1e-12) / t).clamp_min(0), -torch.inf)
        return e.float(), v.float()

    def dequantise(self, e: torch.Tensor, v: torch.Tensor, generator=None, standardise: bool = True) -> torch.Tensor:
        """Each zero (-inf) drawn uniformly in [-gap - width, -gap); then standardised."""
        u = torch.rand(v.shape, generator=generator, dtype=torch.float64)  # float64: the stream encode always drew
        v = torch.where(torch.isfinite(v), v, (-self.zero_gap - ZERO_WIDTH * u).float())
        z = torch.cat([e, v], 1)
        return (z - self.mean) / self.std if standardise else z

    def decode(self, z: torch.Tensor, energy=None, boundary: float | None = None) -> np.ndarray:
        boundary = float(self.boundary) if boundary is None else float(boundary)
        z = (z.double().cpu() * self.std.double().cpu() + self.mean.double().cpu())
        e, v = z[:, : self.n_energy], z[:, self.n_energy :]
        t = self._scale()
        if self.energy_mode == "total":
            total = torch.exp(e[:, :1])
            if self.with_energy:
                total = total * self._incident(energy)[:, None]
            total = (total - t * 1e-3).clamp_min(0)
            frac = (torch.exp(e[:, 1:]) - FRACTION_EPS).clamp_min(0)
            frac = frac / frac.sum(1, keepdim=True).clamp_min(1e-30)
            layer_e = total * frac
        else:
            layer_e = torch.exp(e)
            if self.with_energy:
                layer_e = layer_e * self._incident(energy)[:, None]
            layer_e = (layer_e - t * 1e-3).clamp_min(0)
        raw = torch.where(v >= boundary, t * torch.exp(v.clamp(min=0.0, max=40.0)), torch.zeros_like(v))
        sums = self._layer_sums(raw)
        scale = torch.where(sums > 0, layer_e / sums.clamp_min(1e-30), torch.zeros_like(sums))
        cells = raw * scale[:, self.layer_of.cpu()]
        thr = float(self.threshold)
        if thr > 0:  # the readout threshold; a deposit within rounding of it (float32 features) is a hit at it
            cells = torch.where(cells >= thr * (1 - 1e-4), cells.clamp_min(thr), torch.zeros_like(cells))
        out = torch.zeros(len(z), int(np.prod(self.shape)), dtype=torch.float32)
        out[:, self.active.cpu()] = cells.float()
        return out.reshape(len(z), *self.shape).numpy()
