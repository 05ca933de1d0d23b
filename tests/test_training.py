"""The shared training helpers: gradient penalty, early-stopping fit, disk cache of trained tensors."""
import numpy as np
import pytest
import torch

from calobench.training import (cached_tensors, critic_gradient_penalty, fit_early_stopping, gradient_penalty,
                                interpolates)


def test_gradient_penalty_of_a_linear_critic_is_hand_checkable():
    a = torch.tensor([3.0, 4.0])  # a linear critic's gradient is a everywhere: ||a|| = 5, penalty (5 - 1)^2
    critic = lambda x: x @ a  # noqa: E731
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    assert float(critic_gradient_penalty(critic, real, fake)) == pytest.approx(16.0)
    x_hat = interpolates(real, fake, eps=torch.full((16, 1), 0.25))
    assert torch.allclose(x_hat, 0.25 * real + 0.75 * fake) and x_hat.requires_grad
    gp = gradient_penalty(critic(x_hat) * 0.2, x_hat)  # ||0.2 a|| = 1: no penalty
    assert float(gp) == pytest.approx(0.0, abs=1e-10)
    w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))  # differentiable w.r.t. the critic's parameters
    x_hat = interpolates(real, fake)
    gradient_penalty(x_hat @ (2 * w), x_hat).backward()
    assert w.grad is not None and float(w.grad.abs().sum()) > 0


def test_fit_early_stopping_learns_restores_the_best_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]

    def fit(seed, **kw):
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 1)
        state = torch.get_rng_state()
        fit_early_stopping(net, x[:300], y[:300], x[300:], y[300:], torch.nn.MSELoss(), seed, epochs=30,
                           batch=32, lr=0.05, **kw)
        assert torch.equal(state, torch.get_rng_state())  # the caller's RNG stream is untouched
        return net

    a, b = fit(1), fit(1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with torch.no_grad():
        assert float(torch.nn.MSELoss()(a(torch.as_tensor(x[300:])), torch.as_tensor(y[300:]))) < 1e-3
    assert not a.training
    # one epoch with a huge learning rate then patience 1: the best (first) epoch's weights come back
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    best = {}

    class Spy(torch.nn.MSELoss):
        def forward(self, p, t):
            v = super().forward(p, t)
            if not torch.is_grad_enabled():
                best.setdefault("v", []).append(float(v))
            return v

    fit_early_stopping(net, x[:300], y[:300], x[300:], y[300:], Spy(), 0, epochs=10, batch=300, lr=5.0, patience=2)
    vals = best["v"]
    with torch.no_grad():
        final = float(torch.nn.MSELoss()(net(torch.as_tensor(x[300:])), torch.as_tensor(y[300:])))
    assert len(vals) < 10 and final == pytest.approx(min(vals), rel=1e-6)


def test_cached_tensors_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.arange(6.0).reshape(2, 3).t()}  # non-contiguous: stored anyway

    a = cached_tensors(tmp_path / "sub" / "net.safetensors", compute)
    b = cached_tensors(tmp_path / "sub" / "net.safetensors", compute)
    assert len(calls) == 1 and torch.equal(a["w"], b["w"])
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["net.safetensors"]  # no temp file left


def test_relu_leaky_grad_is_a_relu_forward_with_a_leaky_gradient():
    from calobench.training import ReLULeakyGrad, relu_leaky_grad

    x = torch.tensor([-2.0, -0.5, 0.0, 1.5], requires_grad=True)
    y = relu_leaky_grad(x, 0.1)
    assert torch.equal(y, torch.relu(x.detach()))
    y.backward(torch.ones(4))
    assert torch.allclose(x.grad, torch.tensor([0.1, 0.1, 0.1, 1.0]))  # leaky_relu's gradient (0.1 at 0)
    x.grad = None
    ReLULeakyGrad(0.0)(x).backward(torch.ones(4))  # slope 0: the plain ReLU
    assert torch.equal(x.grad, torch.tensor([0.0, 0.0, 0.0, 1.0]))
