"""The leapfrog integrator on physics: exact solution, energy error order, reversibility."""

from __future__ import annotations

import math

import pytest
import torch

from bnn_mcmc import leapfrog
from bnn_mcmc.kernels.integrators import IntegratorState, hamiltonian, integrate
from bnn_mcmc.kernels.metrics import make_metric
from bnn_mcmc.kernels.potential import Potential

OSCILLATOR = lambda w: 0.5 * (w**2).sum()  # noqa: E731


def _state(potential, position, momentum):
    value = potential.check_initial(position)
    return IntegratorState(position, momentum, value.potential, value.grad)


def test_harmonic_oscillator_endpoint():
    """w(t) = w0 cos t + p0 sin t for U = w^2/2, M = I; the error is O(eps^2)."""
    w0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    p0 = torch.tensor([0.3, 0.8], dtype=torch.float64)
    t = 2.0
    errors = []
    for n in (40, 80):
        w, p = leapfrog(w0, p0, t / n, n, 1.0, OSCILLATOR)
        exact_w = w0 * math.cos(t) + p0 * math.sin(t)
        exact_p = -w0 * math.sin(t) + p0 * math.cos(t)
        errors.append(float((w - exact_w).abs().max() + (p - exact_p).abs().max()))
    assert errors[0] < 1e-3
    assert 3.5 < errors[0] / errors[1] < 4.5  # halving eps divides the error by 4


@pytest.mark.parametrize("inv_mass", [1.0, "diag", "dense"])
def test_energy_error_is_second_order(inv_mass):
    dim = 3
    cov = torch.tensor([[1.0, 0.3, 0.0], [0.3, 2.0, 0.4], [0.0, 0.4, 0.5]], dtype=torch.float64)
    precision = torch.linalg.inv(cov)
    potential_fn = lambda w: 0.5 * w @ precision @ w  # noqa: E731
    if inv_mass == "diag":
        inv_mass = torch.tensor([0.8, 1.5, 0.6], dtype=torch.float64)
    elif inv_mass == "dense":
        inv_mass = cov.clone()
    metric = make_metric(inv_mass, dim, torch.float64, torch.device("cpu"))
    w0 = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
    p0 = torch.tensor([1.0, 0.2, -0.7], dtype=torch.float64)
    max_errors = []
    for eps in (0.05, 0.025):
        potential = Potential(potential_fn)
        state = _state(potential, w0, p0)
        h0 = hamiltonian(state, metric)
        worst = 0.0
        for _ in range(int(round(3.0 / eps))):
            state = integrate(state, eps, 1, metric, potential)
            worst = max(worst, abs(hamiltonian(state, metric) - h0))
        max_errors.append(worst)
    assert max_errors[0] < 1e-2
    assert 3.3 < max_errors[0] / max_errors[1] < 4.7


def test_time_reversibility():
    torch.manual_seed(0)
    a = torch.randn(5, 5, dtype=torch.float64)
    precision = a @ a.T + torch.eye(5, dtype=torch.float64)
    potential_fn = lambda w: 0.5 * w @ precision @ w + 0.1 * (w**4).sum()  # noqa: E731
    w0 = torch.randn(5, dtype=torch.float64)
    p0 = torch.randn(5, dtype=torch.float64)
    w1, p1 = leapfrog(w0, p0, 0.05, 30, 1.0, potential_fn)
    w2, p2 = leapfrog(w1, -p1, 0.05, 30, 1.0, potential_fn)
    torch.testing.assert_close(w2, w0, rtol=0, atol=1e-10)
    torch.testing.assert_close(-p2, p0, rtol=0, atol=1e-10)
    # and going backwards in time undoes going forwards
    w3, p3 = leapfrog(w1, p1, -0.05, 30, 1.0, potential_fn)
    torch.testing.assert_close(w3, w0, rtol=0, atol=1e-10)


def test_internal_integrator_costs_one_gradient_per_step():
    potential = Potential(OSCILLATOR)
    metric = make_metric(1.0, 4, torch.float64, torch.device("cpu"))
    zeros = torch.zeros(4, dtype=torch.float64)
    state = _state(potential, zeros + 1.0, zeros)
    before = potential.num_grad_evals
    integrate(state, 0.1, 17, metric, potential)
    assert potential.num_grad_evals - before == 17


def test_failure_mid_trajectory_returns_infinite_energy():
    def exploding(w):
        if float(w.abs().max()) > 2.0:
            return w.sum() * float("nan")
        return 0.5 * (w**2).sum()

    potential = Potential(exploding)
    metric = make_metric(1.0, 2, torch.float64, torch.device("cpu"))
    state = _state(potential, torch.zeros(2, dtype=torch.float64), torch.full((2,), 5.0).double())
    end = integrate(state, 0.5, 10, metric, potential)
    assert not end.finite


def test_leapfrog_rejects_bad_shapes():
    with pytest.raises(ValueError, match="position and momentum"):
        leapfrog(torch.zeros(3), torch.zeros(4), 0.1, 1, 1.0, OSCILLATOR)
    with pytest.raises(ValueError, match="num_steps"):
        leapfrog(torch.zeros(3), torch.zeros(3), 0.1, 0, 1.0, OSCILLATOR)
