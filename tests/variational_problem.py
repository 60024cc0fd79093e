"""Conjugate Bayesian linear regression as a network: a fixture module (no tests of its own).

``y = x^T w + b + noise`` with noise precision ``tau`` and prior ``N(0, alpha^2 I)`` on
``(w, b)``; the network is ``MLP(2, 1, hidden_layers=())`` whose flat weights are
``[w_1, w_2, b]``.  Posterior ``N(m, S)`` with ``S^{-1} = I/alpha^2 + tau Phi^T Phi`` and
``m = tau S Phi^T y``, ``Phi = [x, 1]``; the predictive of ``f(x*)`` is
``N(phi*^T m, phi*^T S phi*)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bnn_mcmc.bnn import MLP, GaussianLikelihood, GaussianPrior


@dataclass
class Problem:
    net: MLP
    likelihood: GaussianLikelihood
    prior: GaussianPrior
    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    post_mean: torch.Tensor
    post_cov: torch.Tensor
    post_prec: torch.Tensor

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)

    def predictive(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form mean and variance of f(x) under the posterior."""
        phi = self.features(x)
        return phi @ self.post_mean, (phi @ self.post_cov * phi).sum(1)

    def exact_draws(self, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        chol = torch.linalg.cholesky(self.post_cov)
        return self.post_mean + torch.randn(n, 3, generator=g) @ chol.T


def make_problem(n: int = 40, tau: float = 4.0, alpha: float = 1.0, seed: int = 0) -> Problem:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    w_true, b_true = torch.tensor([0.7, -0.4]), 0.3
    y = x @ w_true + b_true + torch.randn(n, generator=g) / math.sqrt(tau)
    # test inputs span in-range and far out-of-range points along one direction
    x_test = torch.linspace(-4, 4, 21)[:, None] * torch.tensor([1.0, -0.5])
    y_test = x_test @ w_true + b_true + torch.randn(21, generator=g) / math.sqrt(tau)
    phi = torch.cat([x, torch.ones(n, 1)], 1)
    prec = torch.eye(3) / alpha**2 + tau * phi.T @ phi
    cov = torch.linalg.inv(prec)
    mean = tau * cov @ phi.T @ y
    return Problem(
        net=MLP(2, 1, hidden_layers=(), no_weights=True),
        likelihood=GaussianLikelihood(tau),
        prior=GaussianPrior(alpha),
        x=x,
        y=y[:, None],
        x_test=x_test,
        y_test=y_test[:, None],
        post_mean=mean,
        post_cov=cov,
        post_prec=prec,
    )
