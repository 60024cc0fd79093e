"""Mass matrices: kinetic energy, momentum distribution, validation."""

from __future__ import annotations

import pytest
import torch

from bnn_mcmc.kernels.metrics import DenseMetric, DiagMetric, ScalarMetric, make_metric

CPU = torch.device("cpu")


def _metrics():
    cov = torch.tensor([[2.0, 0.6, 0.1], [0.6, 1.0, -0.3], [0.1, -0.3, 0.5]], dtype=torch.float64)
    diag = torch.tensor([0.5, 2.0, 1.5], dtype=torch.float64)
    return [
        (make_metric(2.5, 3, torch.float64, CPU), 2.5 * torch.eye(3, dtype=torch.float64)),
        (make_metric(diag, 3, torch.float64, CPU), torch.diag(diag)),
        (make_metric(cov, 3, torch.float64, CPU), cov),
    ]


@pytest.mark.parametrize("index", range(3))
def test_kinetic_energy_and_momentum_covariance(index):
    metric, inv_mass = _metrics()[index]
    p = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(metric.kinetic_energy(p), 0.5 * p @ inv_mass @ p)
    torch.testing.assert_close(metric.velocity(p), inv_mass @ p)
    g = torch.Generator().manual_seed(0)
    draws = metric.sample_momentum(g, (40000,))
    empirical = torch.cov(draws.T)
    mass = torch.linalg.inv(inv_mass)
    # standard error of a covariance entry ~ sqrt((s_ii s_jj + s_ij^2) / n)
    se = ((mass.diagonal()[:, None] * mass.diagonal()[None] + mass**2) / 40000).sqrt()
    assert float(((empirical - mass).abs() / se).max()) < 5


def test_batched_shapes():
    for metric, _ in _metrics():
        p = metric.sample_momentum(torch.Generator().manual_seed(1), (4, 2))
        assert p.shape == (4, 2, 3)
        assert metric.kinetic_energy(p).shape == (4, 2)


def test_types():
    metrics = [m for m, _ in _metrics()]
    assert isinstance(metrics[0], ScalarMetric)
    assert isinstance(metrics[1], DiagMetric)
    assert isinstance(metrics[2], DenseMetric)


@pytest.mark.parametrize(
    "inv_mass, message",
    [
        (torch.ones(4), "length 4, expected 3"),
        (torch.tensor([1.0, -1.0, 1.0]), "positive"),
        (torch.ones(3, 4), r"shape \(3, 4\)"),
        (torch.tensor([[1.0, 2.0, 0], [2.0, 1.0, 0], [0, 0, 1.0]]), "positive definite"),
        (torch.tensor([[1.0, 0.5, 0], [0.0, 1.0, 0], [0, 0, 1.0]]), "symmetric"),
        (-1.0, "positive"),
        (torch.ones(3, 3, 3), "dimensions"),
    ],
)
def test_bad_inv_mass(inv_mass, message):
    with pytest.raises(ValueError, match=message):
        make_metric(inv_mass, 3, torch.float32, CPU)


def test_bad_inv_mass_type():
    with pytest.raises(TypeError, match="inv_mass"):
        make_metric("identity", 3, torch.float32, CPU)
