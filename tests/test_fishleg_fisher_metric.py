"""inv_mass='fisher': the sampler fits a FishLeg Kronecker metric from nn_pot_energy's spec."""

import logging

import pytest
import torch
from torch import nn

from bnn_mcmc.bnn import GaussianLikelihood, GaussianPrior, nn_pot_energy
from bnn_mcmc.kernels.kron_metric import KroneckerMetric
from bnn_mcmc.optim.fisher_metric import prior_precision
from bnn_mcmc.samplers import NUTS

pytestmark = pytest.mark.usefixtures("float64_default")


def _problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 3, generator=g) @ torch.tensor(
        [[2.0, 1.0, 0.0], [0.0, 0.5, 0.3], [0.0, 0.0, 0.2]]
    )
    y = X @ torch.tensor([[1.0], [-1.0], [0.5]]) + 0.5 * torch.randn(60, 1, generator=g)
    tau, std = 4.0, 0.5
    U = nn_pot_energy(
        nn.Linear(3, 1), X, y, likelihood=GaussianLikelihood(tau), prior=GaussianPrior(std)
    )
    Xt = torch.cat([X, torch.ones(60, 1)], 1)
    return U, torch.linalg.inv(tau * Xt.T @ Xt + torch.eye(4) / std**2)


def test_spec_and_prior_precision():
    U, _ = _problem()
    assert isinstance(U.spec.net, nn.Linear) and U.spec.data_scale == 1.0
    assert prior_precision(U.spec.log_prior, torch.zeros(4)) == pytest.approx(4.0)


def test_fisher_inv_mass_is_the_gauss_newton_posterior_covariance(caplog):
    """Linear-Gaussian model: F + prior precision is the exact posterior precision, so the
    fitted metric must be close to the posterior covariance (20 % relative Frobenius
    error), much closer than the unit metric or the best scalar one."""
    U, cov = _problem()
    with caplog.at_level(logging.WARNING):
        s = NUTS(torch.zeros(4), U, inv_mass="fisher", seed=0)
    assert "inv_mass='fisher'" in caplog.text
    assert isinstance(s.metric, KroneckerMetric)
    dense = s.metric.to_dense()
    err = float(torch.linalg.norm(dense - cov) / torch.linalg.norm(cov))
    scalar = cov.trace() / 4 * torch.eye(4)
    err_scalar = float(torch.linalg.norm(scalar - cov) / torch.linalg.norm(cov))
    assert err < 0.2 and err < 0.5 * err_scalar


def test_fisher_inv_mass_clear_errors():
    with pytest.raises(ValueError, match="nn_pot_energy"):
        NUTS(torch.zeros(2), lambda w: (w**2).sum(), inv_mass="fisher", seed=0)
    U, _ = _problem()
    with pytest.raises(ValueError, match="only string"):
        NUTS(torch.zeros(4), U, inv_mass="fisherr", seed=0)


def test_multichain_passes_fisher_through(caplog):
    from bnn_mcmc.multichain import MultiChainHMC

    U, cov = _problem()
    with caplog.at_level(logging.WARNING):
        m = MultiChainHMC(torch.zeros(2, 4), U, chain_type="nuts", seed=0, inv_mass="fisher")
    assert caplog.text.count("inv_mass='fisher': fitted") >= 1
    for chain in m.chains:
        assert isinstance(chain.metric, KroneckerMetric)
        assert (
            float(torch.linalg.norm(chain.metric.to_dense() - cov) / torch.linalg.norm(cov)) < 0.2
        )
