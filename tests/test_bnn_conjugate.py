"""End to end: conjugate Bayesian linear regression as a network, sampled with NUTS.

A network without hidden layers, ``f(x) = W x + b``, with prior ``N(0, s^2 I)`` and known
noise precision ``tau`` has the Gaussian posterior

    Sigma = (tau Phi^T Phi + I / s^2)^{-1},   mu = tau Sigma Phi^T y,   Phi = [X, 1].

NUTS through ``nn_pot_energy`` must reproduce mean and covariance within Monte Carlo
standard errors (MCSE from ArviZ's ESS).
"""

import arviz as az
import numpy as np
import torch

from bnn_mcmc.bnn import MLP, GaussianLikelihood, GaussianPrior, nn_pot_energy
from bnn_mcmc.samplers import NUTS

TAU, PRIOR_STD, N = 4.0, 1.5, 30


def _mcse(series: np.ndarray) -> float:
    ess = float(az.ess(series[None, :]))
    return float(series.std(ddof=1) / np.sqrt(ess))


Z_BOUND = 4.0


def conjugate_z(seed: int = 0) -> float:
    """Largest |z| (in MCSE) of the posterior means and covariance entries from one NUTS run."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 2, generator=g, dtype=torch.float64)
    w_true = torch.tensor([0.8, -1.2], dtype=torch.float64)
    y = (x @ w_true + 0.3)[:, None] + torch.randn(N, 1, generator=g, dtype=torch.float64) / 2

    net = MLP(2, 1, hidden_layers=())  # flat layout [W (1x2), b]
    U = nn_pot_energy(net, x, y, likelihood=GaussianLikelihood(TAU), prior=GaussianPrior(PRIOR_STD))
    phi = torch.cat([x, torch.ones(N, 1, dtype=torch.float64)], dim=1)
    cov = torch.linalg.inv(TAU * phi.T @ phi + torch.eye(3, dtype=torch.float64) / PRIOR_STD**2)
    mean = TAU * cov @ phi.T @ y[:, 0]

    s = NUTS(torch.zeros(3, dtype=torch.float64), U, seed=seed)
    s.warmup(300)
    s.simulate_chain(1000)
    draws = s.samples().numpy()
    assert draws.shape == (1000, 3)

    mu, sigma = mean.numpy(), cov.numpy()
    z = [abs(draws[:, j].mean() - mu[j]) / _mcse(draws[:, j]) for j in range(3)]
    centred = draws - mu
    for i in range(3):
        for j in range(i, 3):
            prod = centred[:, i] * centred[:, j]
            z.append(abs(prod.mean() - sigma[i, j]) / _mcse(prod))
    return float(max(z))


def test_nuts_through_nn_pot_energy_matches_closed_form():
    z = conjugate_z()
    assert z < Z_BOUND, f"a mean or covariance entry is {z:.2f} MCSE off"
