"""Training helpers models and metrics share: the WGAN-GP gradient penalty, calibrations of a generator's
output (a factor per condition, a quantile map), an early-stopping supervised trainer, and a disk cache
for trained networks. Public API (``calobench.training``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


# -- WGAN-GP (Gulrajani et al. 2017) ------------------------------------------
def interpolates(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """Random points on the lines between real and fake samples (``eps`` ~ U(0, 1) per sample
    unless given), with gradients enabled: the points the penalty is evaluated at."""
    if eps is None:
        eps = torch.rand(len(real), *[1] * (real.dim() - 1), device=real.device)
    return (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)


def gradient_penalty(scores: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """mean((||d scores / d x_hat||_2 - 1)^2), differentiable (create_graph) for the critic's step."""
    grad, = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def critic_gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The penalty of ``critic`` at random interpolates of ``real`` and ``fake``."""
    x_hat = interpolates(real, fake)
    return gradient_penalty(critic(x_hat), x_hat)


# -- generator outputs -----------------------------------------------------------
def relu_leaky_grad(x: torch.Tensor, slope: float) -> torch.Tensor:
    """relu(x) forward (switched-off cells are exactly zero, as in sparse showers), the gradient of a
    leaky ReLU with ``slope`` below zero backward: an output cell the network has switched off still
    learns whether it should carry energy. ``slope`` 0 is the plain ReLU."""
    if not slope:
        return torch.relu(x)
    leaky = torch.nn.functional.leaky_relu(x, slope)
    return leaky + (torch.relu(x) - leaky).detach()


class ReLULeakyGrad(torch.nn.Module):
    """``relu_leaky_grad`` as a layer."""

    def __init__(self, slope: float = 0.0):
        super().__init__()
        self.slope = slope

    def forward(self, x):
        return relu_leaky_grad(x, self.slope)


# -- calibrations of a generator's output ------------------------------------------
MAX_KNOTS = 16  # condition values a ResponseCalibration keeps a factor for


class ResponseCalibration(torch.nn.Module):
    """Scale factors of a generator's output as a function of one positive condition (the energy),
    found by the model on validation showers and set with ``set``: ``factor(c)`` interpolates log k
    linearly in log c between the calibrated values and is constant beyond them. Buffers only: it
    travels with the weights (a net of the model) and has no parameters."""

    def __init__(self):
        super().__init__()
        self.register_buffer("log_energy", torch.zeros(MAX_KNOTS))
        self.register_buffer("log_factor", torch.zeros(MAX_KNOTS))
        self.register_buffer("n", torch.zeros((), dtype=torch.long))

    def factor(self, energy: torch.Tensor) -> torch.Tensor:
        n = int(self.n)
        if n == 0:
            return torch.ones_like(energy)
        xp, fp = self.log_energy[:n].cpu().numpy(), self.log_factor[:n].cpu().numpy()
        k = np.exp(np.interp(np.log(energy.detach().cpu().double().numpy()), xp, fp))
        return torch.as_tensor(k, dtype=energy.dtype, device=energy.device)

    def set(self, energies, factors) -> None:
        from .errors import CalobenchError

        n = len(energies)
        if not 0 < n <= MAX_KNOTS:
            raise CalobenchError(f"response calibration: {n} calibration points (1 to {MAX_KNOTS} supported)")
        if any(not np.isfinite(f) or f <= 0 for f in factors):
            raise CalobenchError("response calibration: every factor must be positive and finite")
        self.log_energy.zero_(), self.log_factor.zero_()
        self.log_energy[:n] = torch.log(torch.as_tensor(energies, dtype=torch.float32))
        self.log_factor[:n] = torch.log(torch.as_tensor(factors, dtype=torch.float32))
        self.n.fill_(n)


def hat_weights(x, knots) -> list:
    """Hat functions of ``x`` at ``knots`` (increasing): one array per knot, 1 at its knot, 0 at the
    neighbours, flat beyond the ends; they sum to 1 (linear interpolation between knots)."""
    return [np.interp(x, knots, np.eye(len(knots))[k]) for k in range(len(knots))]


class QuantileCalibration(torch.nn.Module):
    """A per-shower scalar v of generated showers (a total, a ratio to a mean) moved to the same quantile of
    the real showers' v at the same condition c (a positive one, the energy): the quantiles of v in ``bins``
    quantile bins of the real c, on both samples; a generated v is mapped through its bin's generated
    quantiles onto the real ones, the maps of the two nearest bins interpolated in log c (the end bins' beyond
    them). Values beyond the generated extremes map onto the real extremes. Found by the model on validation
    showers and set with ``set``; until then ``mapped`` is the identity. Buffers only: it travels with the
    weights (a net of the model)."""

    LEVELS = 41  # quantile levels 0, 2.5 %, ..., 100 %

    def __init__(self, bins: int = 5):
        super().__init__()
        self.register_buffer("log_energy", torch.zeros(bins, dtype=torch.float64))
        self.register_buffer("q_real", torch.zeros(bins, self.LEVELS, dtype=torch.float64))
        self.register_buffer("q_generated", torch.zeros(bins, self.LEVELS, dtype=torch.float64))
        self.register_buffer("active", torch.zeros((), dtype=torch.bool))

    def set(self, real: tuple, generated: tuple) -> None:
        """``real``, ``generated``: (c, v) arrays of each sample."""
        from .errors import CalobenchError

        (e_real, v_real), (e_gen, v_gen) = real, generated
        bins = self.log_energy.numel()
        edges = np.quantile(e_real, np.linspace(0, 1, bins + 1))
        levels = np.linspace(0, 1, self.LEVELS)
        for k in range(bins):
            mr = (e_real >= edges[k]) & (e_real <= edges[k + 1])
            mg = (e_gen >= edges[k]) & (e_gen <= edges[k + 1])
            if not mr.any() or not mg.any():
                raise CalobenchError("quantile calibration: an empty bin of the condition (too few validation showers "
                                     "for its bins)")
            self.log_energy[k] = float(np.log(e_real[mr]).mean())
            self.q_real[k] = torch.as_tensor(np.quantile(v_real[mr], levels))
            self.q_generated[k] = torch.as_tensor(np.quantile(v_gen[mg], levels))
        self.active.fill_(True)

    def mapped(self, energy, value) -> np.ndarray:
        """The real-quantile values v' of generated showers with these conditions and values v."""
        value = np.asarray(value, np.float64)
        if not bool(self.active):
            return value
        levels = np.linspace(0, 1, self.LEVELS)
        tie = levels * 1e-12  # quantiles may tie; np.interp needs increasing abscissae
        knots = self.log_energy.cpu().numpy()
        qr, qg = self.q_real.cpu().numpy(), self.q_generated.cpu().numpy()
        per_bin = np.stack([np.interp(np.interp(value, qg[k] + tie, levels), levels, qr[k])
                            for k in range(len(knots))])  # [bins, N]
        log_e = np.log(np.asarray(energy, np.float64))
        return (np.stack(hat_weights(log_e, knots)) * per_bin).sum(0)


# -- supervised training with early stopping --------------------------------------
def fit_early_stopping(net: torch.nn.Module, x_train, y_train, x_val, y_val, loss_fn, seed: int = 0,
                       epochs: int = 40, batch: int = 256, lr: float = 1e-3, patience: int = 4,
                       min_delta: float = 1e-5, one_cycle: bool = False, device="cpu",
                       generator: torch.Generator | None = None, val_batch: int | None = None) -> torch.nn.Module:
    """Adam on mini-batches; after each epoch the validation loss picks the best weights, which are
    restored at the end; stops after ``patience`` epochs without an improvement of ``min_delta``.
    ``one_cycle``: a one-cycle learning rate peaking at ``lr`` over all epochs, no early stop.
    Seeded through its own generator (the caller's RNG streams are untouched); returns ``net`` in
    eval mode."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(x_train), torch.as_tensor(y_train)
    xv, yv = torch.as_tensor(x_val), torch.as_tensor(y_val)
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = None
    if one_cycle:
        patience = epochs
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * -(-len(xt) // batch))
    best, best_state, bad, loss = np.inf, None, 0, None
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = loss_fn(net(xt[idx].to(device)), yt[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        net.eval()
        with torch.no_grad():
            if len(xv):
                step = val_batch or len(xv)
                pred = torch.cat([net(xv[i : i + step].to(device)).cpu() for i in range(0, len(xv), step)])
                v = float(loss_fn(pred, yv))
            else:
                v = float(loss)
        if v < best - min_delta:
            best, bad, best_state = v, 0, {k: t.detach().clone() for k, t in net.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return net.eval()


# -- trained networks cached on disk ---------------------------------------------
def cached_tensors(path, compute) -> dict:
    """The tensors stored at ``path`` (safetensors), or ``compute()``'s, written there atomically
    first. For networks that are expensive to train and deterministic given what ``path`` names
    (dataset key, seed, version): ``net.load_state_dict(cached_tensors(path, lambda: train().state_dict()))``."""
    from safetensors.torch import load_file, save_file

    from .io import atomic_path

    path = Path(path)
    if path.exists():
        return load_file(str(path))
    tensors = {k: v.detach().cpu().contiguous() for k, v in compute().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return tensors
