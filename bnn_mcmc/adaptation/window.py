r"""Windowed warmup as ``(init, update, final)``: dual averaging inside Stan's windows.

One warmup of ``num_steps`` transitions adapts the step size by dual averaging
towards a target acceptance statistic and, optionally, the inverse mass matrix:
each slow window of the schedule (:func:`~bnn_mcmc.adaptation.adaptation_windows`)
collects the chain's positions in a Welford estimate; when a window closes the
estimate (regularised towards the identity) becomes the metric, and dual averaging
restarts from a new step-size search, because a new metric changes the scale of
good step sizes.  The functions here hold no sampler: the driver gives them the
acceptance statistic and the position after each transition, applies the metric
they return, runs the search they ask for and hands them its result.

Everything a sampler family changes is a field of :class:`WarmupPlan` (Metropolis–
Hastings uses buffers proportional to the warmup and restarts at the optimal-scaling
step instead of searching); no method is overridden.

References
----------
Hoffman, M. D. & Gelman, A. (2014). The No-U-Turn Sampler. *JMLR* 15, 1593–1623, §3.2.
Stan Development Team. *Stan Reference Manual*, "HMC algorithm parameters" (adaptation
windows); ``stan/mcmc/windowed_adaptation.hpp``.
Roberts, G. O., Gelman, A. & Gilks, W. R. (1997). Weak convergence and optimal scaling
of random walk Metropolis algorithms. *Ann. Appl. Probab.* 7, 110–120.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import numpy as np
import torch

from ..kernels.metrics import DenseMetric, DiagMetric, Metric
from .dual_averaging import (
    DualAveragingState,
    dual_averaging_final,
    dual_averaging_init,
    dual_averaging_update,
)
from .schedule import adaptation_windows
from .welford import WelfordState, welford_covariance, welford_init, welford_update


@dataclass(frozen=True)
class WarmupPlan:
    """What a sampler family sets about its warmup.

    Attributes
    ----------
    target_accept
        Default target of the acceptance statistic.
    centre
        Dual averaging shrinks :math:`\\log\\varepsilon` towards
        :math:`\\mu = \\log(\\text{centre}\\cdot\\varepsilon_0)` (Hoffman & Gelman: 10).
    buffers
        ``'stan'``: Stan's buffers (75 / 25 doubling / 50 transitions);
        ``'proportional'``: 15 % / 5 % (at least 10) / 10 % of the warmup, for kernels
        whose acceptance is a noisy 0/1 signal.
    restart
        ``'search'``: Hoffman & Gelman's step-size search from the current step at
        the start and after each window; ``'optimal_scaling'``: keep the user's step at
        the start, restart at :math:`2.38/\\sqrt d` after a window (random walk).
    """

    target_accept: float = 0.8
    centre: float = 10.0
    buffers: Literal["stan", "proportional"] = "stan"
    restart: Literal["search", "optimal_scaling"] = "search"

    def windows(self, num_steps: int) -> list[tuple[int, int]]:
        """The slow windows ``(start, end)`` of a warmup of ``num_steps`` transitions."""
        if self.buffers == "stan":
            return adaptation_windows(num_steps)
        return adaptation_windows(
            num_steps,
            init_buffer=int(0.15 * num_steps),
            term_buffer=int(0.1 * num_steps),
            base_window=max(int(0.05 * num_steps), 10),
        )

    def restart_step(self, current: float, dim: int, at_start: bool) -> float | None:
        """The step to restart from without a search, or ``None`` when a search is due."""
        if self.restart == "search":
            return None
        return current if at_start else 2.38 / math.sqrt(dim)


@dataclass
class WarmupState:
    """Progress of a (possibly interrupted) warmup; ``dual`` is ``None`` for a fixed step."""

    num_steps: int
    done: int
    target_accept: float
    adapt_mass: str | None
    windows: list[tuple[int, int]]
    dual: DualAveragingState | None
    welford: WelfordState | None


class WindowUpdate(NamedTuple):
    """What :func:`window_update` returns.

    ``closed`` is ``True`` when the transition closed a slow window; ``estimate`` is
    then that window's Welford state (``None`` or fewer than two draws keep the
    previous metric, as Stan does).  After a closed window with step-size adaptation
    the driver restarts dual averaging with :func:`window_restart`.
    """

    state: WarmupState
    closed: bool
    estimate: WelfordState | None


def dual_init(step_size: float, plan: WarmupPlan) -> DualAveragingState:
    """Dual averaging started at ``step_size`` and centred as ``plan`` says."""
    state = dual_averaging_init(step_size)
    return state._replace(mu=np.log(plan.centre * step_size))


def window_init(
    num_steps: int,
    target_accept: float,
    adapt_mass: str | None,
    step_size: float | None,
    plan: WarmupPlan,
) -> WarmupState:
    """A warmup of ``num_steps`` transitions; ``step_size=None`` keeps the step fixed.

    ``step_size`` is the start of dual averaging (after the initial search, if the
    plan asks for one).
    """
    return WarmupState(
        num_steps=num_steps,
        done=0,
        target_accept=float(target_accept),
        adapt_mass=adapt_mass,
        windows=plan.windows(num_steps) if adapt_mass else [],
        dual=None if step_size is None else dual_init(step_size, plan),
        welford=None,
    )


def window_step_size(state: WarmupState) -> float | None:
    """The step size of the next warmup transition (``None``: the fixed step)."""
    return None if state.dual is None else float(np.exp(state.dual.log_step))


def window_update(state: WarmupState, acceptance: float, position: torch.Tensor) -> WindowUpdate:
    """Record one warmup transition that ended at ``position``."""
    dual = state.dual
    if dual is not None:
        dual = dual_averaging_update(dual, acceptance, state.target_accept)
    i, done = state.done, state.done + 1
    welford = state.welford
    if any(start <= i < end for start, end in state.windows):
        if welford is None:
            welford = welford_init(position, state.adapt_mass == "dense")
        welford = welford_update(welford, position)
    closed = any(end == done for _, end in state.windows)
    estimate = welford if closed else None
    new = replace(state, done=done, dual=dual, welford=None if closed else welford)
    return WindowUpdate(new, closed, estimate)


def window_restart(state: WarmupState, step_size: float, plan: WarmupPlan) -> WarmupState:
    """Restart dual averaging at ``step_size`` (after a window closed)."""
    return replace(state, dual=dual_init(step_size, plan))


def window_final(state: WarmupState) -> float | None:
    """The adapted step size (``None`` when the step was fixed)."""
    return None if state.dual is None else float(dual_averaging_final(state.dual))


def metric_from_estimate(
    estimate: WelfordState | None, previous: Metric, dtype: torch.dtype, device: torch.device
) -> Metric:
    """The metric of a closed window; ``previous`` when it holds fewer than two draws.

    The covariance is estimated and factorised in float64 (only the factor is cast to
    the chain's ``dtype``), so a float32 chain cannot fail the Cholesky factorisation
    of a rounded estimate.
    """
    if estimate is None or estimate.count < 2:
        return previous  # Stan keeps the previous estimate
    cov = welford_covariance(estimate).to(device)
    return DenseMetric(cov, dtype=dtype) if estimate.dense else DiagMetric(cov.to(dtype))
