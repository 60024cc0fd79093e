r"""Nesterov dual averaging of the log step size (Hoffman & Gelman 2014, Alg. 5/6).

With :math:`H_t = \delta - \alpha_t` the gap between the target acceptance
statistic :math:`\delta` and the observed one,

.. math::

    \bar H_t &= (1 - \tfrac{1}{t + t_0}) \bar H_{t-1} + \tfrac{1}{t + t_0} H_t, \\
    \log\varepsilon_t &= \mu - \tfrac{\sqrt t}{\gamma} \bar H_t, \\
    \log\bar\varepsilon_t &= t^{-\kappa} \log\varepsilon_t
        + (1 - t^{-\kappa}) \log\bar\varepsilon_{t-1},

with :math:`\mu = \log(10\,\varepsilon_0)`.  :math:`\varepsilon_t` is used while
adapting, :math:`\bar\varepsilon_t` after.  The functions are pure and work on
floats or numpy arrays alike (one step size per chain).

References
----------
Hoffman, M. D. & Gelman, A. (2014). The No-U-Turn Sampler. *JMLR* 15, 1593–1623.
Nesterov, Y. (2009). Primal-dual subgradient methods for convex problems.
*Math. Program.* 120, 221–259.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class DualAveragingState(NamedTuple):
    """Dual averaging iterate: current and averaged log step, running gap, centre, count."""

    log_step: np.ndarray | float
    log_step_avg: np.ndarray | float
    gap_avg: np.ndarray | float
    mu: np.ndarray | float
    count: int
    gamma: float = 0.05
    t0: float = 10.0
    kappa: float = 0.75


def dual_averaging_init(step_size, gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75):
    """Start dual averaging around ``step_size`` (``mu = log(10 * step_size)``)."""
    log_step = np.log(step_size)
    return DualAveragingState(
        log_step, log_step, np.zeros_like(log_step), np.log(10.0) + log_step, 0, gamma, t0, kappa
    )


def dual_averaging_update(state: DualAveragingState, accept_stat, target: float):
    """One update with the observed acceptance statistic(s) ``accept_stat``."""
    t = state.count + 1
    eta = 1.0 / (t + state.t0)
    gap_avg = (1.0 - eta) * state.gap_avg + eta * (target - np.asarray(accept_stat, dtype=float))
    log_step = state.mu - np.sqrt(t) / state.gamma * gap_avg
    weight = t ** (-state.kappa)
    log_step_avg = weight * log_step + (1.0 - weight) * state.log_step_avg
    return state._replace(log_step=log_step, log_step_avg=log_step_avg, gap_avg=gap_avg, count=t)


def dual_averaging_final(state: DualAveragingState):
    """The adapted step size :math:`\\bar\\varepsilon = \\exp(\\log\\bar\\varepsilon_t)`."""
    return np.exp(state.log_step_avg)
