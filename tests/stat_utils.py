"""Monte Carlo error helpers for statistical tests (ArviZ effective sample sizes)."""

from __future__ import annotations

from typing import NamedTuple

import arviz as az
import numpy as np
import torch


def as_chains(draws) -> np.ndarray:
    """``(draw, dim)`` or ``(chain, draw, dim)`` draws as a float64 ``(chain, draw, dim)`` array."""
    x = draws.detach().cpu().double().numpy() if isinstance(draws, torch.Tensor) else draws
    x = np.asarray(x, dtype=np.float64)
    return x[None] if x.ndim == 2 else x


def ess(draws) -> np.ndarray:
    """Bulk effective sample size of each coordinate (ArviZ)."""
    x = as_chains(draws)
    return az.ess(az.convert_to_dataset(x))["x"].values


def mcse_mean(draws) -> np.ndarray:
    """Monte Carlo standard error of the mean of each coordinate: sd / sqrt(ESS)."""
    x = as_chains(draws)
    return x.reshape(-1, x.shape[-1]).std(0) / np.sqrt(ess(x))


class Margins(NamedTuple):
    """How far a statistical check is from failing: ``ess_ratio`` is the smallest ESS over
    its threshold (fails below 1), ``z_mean`` / ``z_var`` the largest |z| of the means and of
    the variances in Monte Carlo standard errors (fail at the bound ``z``)."""

    ess_ratio: float
    z_mean: float
    z_var: float


def assert_moments(draws, mean, var, z: float = 5.0, min_ess: float = 50.0) -> Margins:
    """Check means and variances against the truth within ``z`` Monte Carlo standard errors.

    The variance is checked through the mean of ``(x - mean)^2``, whose MCSE comes from the
    ESS of that transformed chain. ``min_ess`` guards both ESS (of the draws and of the squares,
    which can be far smaller: HMC with a fixed path length is nearly antithetic on Gaussians)
    against a stuck chain or an unreliable MCSE.
    Returns the :class:`Margins` (``benchmarks/stat_margins.py`` tabulates them over seeds).
    """
    x = as_chains(draws)
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), x.shape[-1:])
    var = np.broadcast_to(np.asarray(var, dtype=np.float64), x.shape[-1:])
    e = ess(x)
    assert e.min() >= min_ess, f"effective sample size too small: min {e.min():.1f}"
    sq = (x - mean) ** 2
    e_sq = ess(sq)
    assert e_sq.min() >= min_ess, (
        f"effective sample size of the squares too small: min {e_sq.min():.1f}"
    )
    flat = x.reshape(-1, x.shape[-1])
    z_mean = np.abs(flat.mean(0) - mean) / mcse_mean(x)
    assert z_mean.max() < z, f"mean off by {z_mean.max():.2f} MCSE (coordinate {z_mean.argmax()})"
    z_var = np.abs(sq.reshape(-1, x.shape[-1]).mean(0) - var) / mcse_mean(sq)
    assert z_var.max() < z, f"variance off by {z_var.max():.2f} MCSE (coordinate {z_var.argmax()})"
    ratio = min(e.min(), e_sq.min()) / min_ess
    return Margins(float(ratio), float(z_mean.max()), float(z_var.max()))
