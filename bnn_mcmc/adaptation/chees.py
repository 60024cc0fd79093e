r"""ChEES warmup as pure functions: trajectory length, step size and diagonal mass across chains.

The *ChEES* criterion (change in the estimator of the expected square) of a
trajectory length :math:`T` is

.. math:: \mathrm{ChEES}(T) = \tfrac14\,\mathbb E\Bigl[\bigl(\lVert x' - \bar x\rVert^2
          - \lVert x - \bar x\rVert^2\bigr)^2\Bigr],

with :math:`x` a draw, :math:`x'` its HMC proposal and :math:`\bar x` the mean
of the target.  With the jittered length :math:`t = u T` the proposal moves as
:math:`\partial x' / \partial \log T = t\, v'` (:math:`v' = M^{-1} p'` the end
velocity), so one chain's gradient with respect to :math:`\log T` is

.. math:: g_c = t\,\bigl(\lVert x'_c - \bar x'\rVert^2 - \lVert x_c - \bar x\rVert^2\bigr)\,
          (x'_c - \bar x')^\top v'_c,

the means taken across chains.  The estimate used is the acceptance-weighted
mean :math:`\hat g = \sum_c a_c g_c / \sum_c a_c` over the non-divergent chains
(a rejected proposal does not move the chain, so it contributes in proportion
to :math:`a_c`).  :math:`\log T` follows Adam *ascent* on :math:`\hat g`
(learning rate 0.025, :math:`\beta_1 = 0`, :math:`\beta_2 = 0.95`, the
defaults used below), is kept between one leapfrog step of the current step size
and ``max_steps`` steps of the larger of the current step size and the one the dual
averaging last restarted from, and its
running average :math:`\overline{\log T}_t = t^{-\kappa} \log T_t + (1 -
t^{-\kappa}) \overline{\log T}_{t-1}` (:math:`\kappa = 0.75`, as the step size's)
is the length kept after warmup.

The step size follows dual averaging (:mod:`bnn_mcmc.adaptation.dual_averaging`)
of one acceptance statistic for all chains towards 0.651, the optimum for
HMC of Beskos et al. (2013).  The statistic is the **harmonic mean** of the
non-divergent chains' acceptance probabilities (default; it is dominated by the
worst chains, so one step size safe for every chain is found) or their
arithmetic mean (``acceptance_mean='arithmetic'``); it is 0 when every chain
diverged.

The diagonal inverse mass matrix is the variance of the draws of *all* chains
in Stan's slow windows (:func:`~bnn_mcmc.adaptation.adaptation_windows`), pooled
from per-chain Welford estimates and shrunk as in Stan
(:func:`~bnn_mcmc.adaptation.welford_covariance`); at the end of each window the
dual averaging restarts at the current step size.

References
----------
Hoffman, M. D., Radul, A. & Sountsov, P. (2021). An adaptive-MCMC scheme for setting
trajectory lengths in Hamiltonian Monte Carlo. *AISTATS*, PMLR 130, 3907–3915.
Kingma, D. P. & Ba, J. (2015). Adam: a method for stochastic optimization. *ICLR*.
Beskos, A., Pillai, N., Roberts, G., Sanz-Serna, J. & Stuart, A. (2013). Optimal tuning
of the hybrid Monte Carlo algorithm. *Bernoulli* 19, 1501–1534.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .dual_averaging import (
    DualAveragingState,
    dual_averaging_final,
    dual_averaging_init,
    dual_averaging_update,
)
from .schedule import adaptation_windows
from .welford import WelfordState, welford_covariance, welford_init, welford_update

#: Acceptance target of ChEES-HMC (Hoffman, Radul & Sountsov 2021; Beskos et al. 2013).
CHEES_TARGET_ACCEPT = 0.651


class ChEESOptions(NamedTuple):
    """Fixed settings of the ChEES warmup."""

    target_accept: float = CHEES_TARGET_ACCEPT
    learning_rate: float = 0.025
    beta1: float = 0.0
    beta2: float = 0.95
    max_steps: int = 1000
    acceptance_mean: str = "harmonic"
    adapt_mass: bool = True
    kappa: float = 0.75


class AdamState(NamedTuple):
    """First and second moment of the gradient and the count of Adam (scalar parameter)."""

    m: float = 0.0
    v: float = 0.0
    count: int = 0


class ChEESState(NamedTuple):
    """The ChEES warmup iterate."""

    dual: DualAveragingState
    adam: AdamState
    log_length: float
    log_length_avg: float
    count: int
    inv_mass: Tensor
    welford: WelfordState | None
    windows: tuple[tuple[int, int], ...]
    options: ChEESOptions


class ChEESParameters(NamedTuple):
    """What ChEES warmup fixes for sampling."""

    step_size: float
    trajectory_length: float
    inv_mass: Tensor


def adam_ascent(state: AdamState, grad: float, options: ChEESOptions) -> tuple[AdamState, float]:
    """One Adam step *up* the gradient: returns the new moments and the parameter increment."""
    count = state.count + 1
    m = options.beta1 * state.m + (1.0 - options.beta1) * grad
    v = options.beta2 * state.v + (1.0 - options.beta2) * grad * grad
    m_hat = m / (1.0 - options.beta1**count)
    v_hat = v / (1.0 - options.beta2**count)
    return AdamState(m, v, count), options.learning_rate * m_hat / (math.sqrt(v_hat) + 1e-8)


def chees_gradient(
    positions: Tensor,
    proposals: Tensor,
    velocity: Tensor,
    accept_prob: Tensor,
    diverging: Tensor,
    length: float,
) -> float:
    """Acceptance-weighted estimate of :math:`\\partial\\,\\mathrm{ChEES} / \\partial \\log T`.

    ``positions`` are the chains' states before the transition, ``proposals`` and
    ``velocity`` the ends of their trajectories (``(C, d)``), ``length`` the jittered
    trajectory length :math:`t` used.  Returns 0 with fewer than two usable chains.
    """
    ok = ~diverging
    if int(ok.sum()) < 2:
        return 0.0
    weight = accept_prob[ok].to(torch.float64)
    if float(weight.sum()) <= 0.0:
        return 0.0
    x0 = positions[ok].to(torch.float64)
    x1 = proposals[ok].to(torch.float64)
    v1 = velocity[ok].to(torch.float64)
    c0 = x0 - x0.mean(0)
    c1 = x1 - x1.mean(0)
    per_chain = length * ((c1 * c1).sum(-1) - (c0 * c0).sum(-1)) * (c1 * v1).sum(-1)
    value = float((weight * per_chain).sum() / weight.sum())
    return value if math.isfinite(value) else 0.0


def ensemble_acceptance(accept_prob: Tensor, diverging: Tensor, kind: str) -> float:
    """The chains' common acceptance statistic: harmonic or arithmetic mean (see module)."""
    ok = ~diverging
    if not bool(ok.any()):
        return 0.0
    a = accept_prob[ok].to(torch.float64)
    if kind == "arithmetic":
        return float(a.mean())
    if bool((a <= 0.0).any()):
        return 0.0
    return float(1.0 / (1.0 / a).mean())


def chees_init(
    step_size: float,
    inv_mass: Tensor,
    positions: Tensor,
    num_warmup: int,
    trajectory_length: float | None = None,
    options: ChEESOptions = ChEESOptions(),
) -> ChEESState:
    """Start ChEES warmup at ``step_size`` and ``trajectory_length`` (default: one step).

    Raises
    ------
    ValueError
        For a non-positive step size or trajectory length, or an unknown ``acceptance_mean``.
    """
    if not (step_size > 0.0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be positive and finite; got {step_size}.")
    length = step_size if trajectory_length is None else float(trajectory_length)
    if not (length > 0.0 and math.isfinite(length)):
        raise ValueError(f"trajectory_length must be positive and finite; got {length}.")
    if options.acceptance_mean not in ("harmonic", "arithmetic"):
        raise ValueError(
            f"acceptance_mean must be 'harmonic' or 'arithmetic'; got {options.acceptance_mean!r}."
        )
    if not 0.0 < options.target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1); got {options.target_accept}.")
    windows = tuple(adaptation_windows(num_warmup)) if options.adapt_mass else ()
    welford = welford_init(positions, dense=False) if windows else None
    return ChEESState(
        dual_averaging_init(step_size),
        AdamState(),
        math.log(length),
        math.log(length),
        0,
        inv_mass,
        welford,
        windows,
        options,
    )


def chees_step_size(state: ChEESState) -> float:
    """The step size of the next warmup transition."""
    return float(math.exp(state.dual.log_step))


def chees_length(state: ChEESState) -> float:
    """The (un-jittered) trajectory length :math:`T` of the next warmup transition."""
    return math.exp(state.log_length)


def _pooled_variance(welford: WelfordState) -> Tensor:
    """Variance of the draws of all chains from per-chain Welford estimates ``(C, d)``."""
    n, chains = welford.count, welford.mean.shape[0]
    grand = welford.mean.mean(0)
    m2 = welford.m2.sum(0) + n * ((welford.mean - grand) ** 2).sum(0)
    return welford_covariance(WelfordState(n * chains, grand, m2, False))


def chees_update(
    state: ChEESState,
    positions: Tensor,
    proposals: Tensor,
    velocity: Tensor,
    accept_prob: Tensor,
    diverging: Tensor,
    length: float,
    new_positions: Tensor,
) -> ChEESState:
    """Adapt after one warmup transition of all chains.

    Parameters
    ----------
    positions, new_positions
        The chains' states before and after the transition, ``(C, d)``.
    proposals, velocity, accept_prob, diverging
        The trajectories' ends, end velocities, acceptance probabilities and divergences.
    length
        The jittered trajectory length used.
    """
    opt = state.options
    t = state.count
    stat = ensemble_acceptance(accept_prob, diverging, opt.acceptance_mean)
    dual = dual_averaging_update(state.dual, stat, opt.target_accept)
    grad = chees_gradient(positions, proposals, velocity, accept_prob, diverging, length)
    adam, increment = adam_ascent(state.adam, grad, opt)
    log_length = state.log_length + increment
    # at least one step (a transition always takes one), at most max_steps of them; the
    # upper bound uses the larger of the current step size and the one dual averaging last
    # restarted from (mu = log(10 eps)), so a dip of the noisy warmup step size does not
    # cut the learned length (the kernel caps the steps of a transition anyway)
    log_step = float(dual.log_step)
    anchor = max(log_step, float(dual.mu) - math.log(10.0))
    log_length = min(max(log_length, log_step), math.log(opt.max_steps) + anchor)
    weight = (t + 1) ** (-opt.kappa)
    log_length_avg = weight * log_length + (1.0 - weight) * state.log_length_avg
    welford, inv_mass = state.welford, state.inv_mass
    for start, end in state.windows:
        if start <= t < end:
            welford = welford_update(welford, new_positions)
            if t == end - 1:
                if welford.count >= 2:
                    inv_mass = _pooled_variance(welford).to(inv_mass.dtype)
                    dual = dual_averaging_init(float(math.exp(dual.log_step)))
                welford = welford_init(new_positions, dense=False)
            break
    return state._replace(
        dual=dual,
        adam=adam,
        log_length=log_length,
        log_length_avg=log_length_avg,
        count=t + 1,
        inv_mass=inv_mass,
        welford=welford,
    )


def chees_final(state: ChEESState) -> ChEESParameters:
    """The step size, trajectory length and inverse mass fixed for sampling."""
    step = float(dual_averaging_final(state.dual)) if state.dual.count else chees_step_size(state)
    return ChEESParameters(step, math.exp(state.log_length_avg), state.inv_mass)
