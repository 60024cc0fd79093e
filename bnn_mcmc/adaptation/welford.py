r"""Welford's streaming mean and (co)variance, with Stan's regularisation.

For draws :math:`x_1, \dots, x_n` the update

.. math::

    \delta = x_n - m_{n-1}, \quad m_n = m_{n-1} + \delta / n, \quad
    S_n = S_{n-1} + \delta \odot (x_n - m_n)

(outer product :math:`\delta (x_n - m_n)^\top` for a dense estimate) gives
the unbiased estimate :math:`S_n / (n - 1)` without storing the draws and
without the cancellation of the naive formula.  As in Stan, the estimate used
as inverse mass matrix is shrunk towards :math:`10^{-3} I`:

.. math:: \hat\Sigma = \tfrac{n}{n+5} \tfrac{S_n}{n-1} + 10^{-3}\,\tfrac{5}{n+5}\, I.

Positions may carry leading batch dimensions (one estimate per chain).

References
----------
Welford, B. P. (1962). Note on a method for calculating corrected sums of squares
and products. *Technometrics* 4, 419–420.
Stan Development Team. *Stan Reference Manual*, "HMC algorithm parameters".
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class WelfordState(NamedTuple):
    """Running count, mean and sum of squared deviations (diagonal or matrix)."""

    count: int
    mean: Tensor
    m2: Tensor
    dense: bool


def welford_init(position: Tensor, dense: bool) -> WelfordState:
    """An empty estimate shaped like ``position`` (``(..., dim)``), in float64."""
    mean = torch.zeros_like(position, dtype=torch.float64)
    m2 = mean.unsqueeze(-1) * mean.unsqueeze(-2) if dense else torch.zeros_like(mean)
    return WelfordState(0, mean, m2, dense)


def welford_update(state: WelfordState, position: Tensor) -> WelfordState:
    """Add one draw (or one per chain)."""
    x = position.detach().to(torch.float64)
    count = state.count + 1
    delta = x - state.mean
    mean = state.mean + delta / count
    after = x - mean
    if state.dense:
        m2 = state.m2 + delta.unsqueeze(-1) * after.unsqueeze(-2)
    else:
        m2 = state.m2 + delta * after
    return WelfordState(count, mean, m2, state.dense)


def welford_covariance(state: WelfordState, regularize: bool = True) -> Tensor:
    """The (co)variance estimate; ``regularize`` applies Stan's shrinkage.

    Raises
    ------
    ValueError
        With fewer than two draws.
    """
    n = state.count
    if n < 2:
        raise ValueError(f"a covariance needs at least 2 draws; got {n}.")
    cov = state.m2 / (n - 1)
    if not regularize:
        return cov
    shrink = 1e-3 * 5.0 / (n + 5.0)
    cov = cov * (n / (n + 5.0))
    if state.dense:
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        return cov + shrink * eye
    return cov + shrink
