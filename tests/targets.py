"""Gaussian targets with known moments for sampler tests."""

from __future__ import annotations

import torch


def gaussian_potential(cov: torch.Tensor):
    """``U(w) = 1/2 w^T cov^{-1} w`` for a zero-mean Gaussian with covariance ``cov``."""
    precision = torch.linalg.inv(cov)
    return lambda w: 0.5 * w @ precision @ w


def iid_target(dim: int = 10):
    cov = torch.eye(dim, dtype=torch.float64)
    return gaussian_potential(cov), cov


def correlated_target(rho: float = 0.95):
    cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)
    return gaussian_potential(cov), cov


def ill_conditioned_target(dim: int = 100):
    std = torch.logspace(-2, 0, dim, dtype=torch.float64)
    return (lambda w: 0.5 * ((w / std) ** 2).sum()), torch.diag(std**2)
