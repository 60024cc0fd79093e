r"""The initial step-size search of Hoffman & Gelman (2014), Algorithm 4.

Given the log acceptance ratio :math:`\log r(\varepsilon) = H_0 - H(\varepsilon)`
of one leapfrog step of size :math:`\varepsilon` from a fixed point and momentum,
let :math:`a = 1` when :math:`\log r(\varepsilon_0) > \log\theta` and :math:`a = -1`
otherwise; then :math:`\varepsilon \leftarrow 2^a \varepsilon` while
:math:`a \log r(\varepsilon) > a \log\theta`.  The first step size that crosses
the threshold is returned.  Hoffman & Gelman use :math:`\theta = 1/2`; Stan (and
this package) :math:`\theta = 0.8`.

References
----------
Hoffman, M. D. & Gelman, A. (2014). The No-U-Turn Sampler. *JMLR* 15, 1593–1623, Alg. 4.
Stan Development Team. ``base_hmc.hpp``, ``init_stepsize``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..kernels.batched_hmc import BatchedPotential, stack_metrics
from ..kernels.integrators import IntegratorState, integrate
from ..kernels.metrics import Metric
from ..kernels.potential import Potential, PotentialValue

#: Stan's acceptance threshold of the search.
SEARCH_THRESHOLD = 0.8


def reasonable_step_size(
    log_accept: Callable[[float], float],
    step_size: float,
    threshold: float = SEARCH_THRESHOLD,
    max_doublings: int = 100,
) -> float:
    """Double or halve ``step_size`` until ``log_accept`` crosses ``log(threshold)``.

    Parameters
    ----------
    log_accept
        :math:`\\varepsilon \\mapsto H_0 - H(\\varepsilon)` (``-inf`` on failure).
    step_size
        The start :math:`\\varepsilon_0`.
    threshold
        :math:`\\theta` in (0, 1).
    max_doublings
        Bound on the number of trials (reached only by degenerate potentials).
    """
    log_threshold = math.log(threshold)
    value = log_accept(step_size)
    up = value > log_threshold
    for _ in range(max_doublings):
        if (value > log_threshold) != up:
            break
        step_size = step_size * 2.0 if up else step_size * 0.5
        value = log_accept(step_size)
    return step_size


def search_step_size(
    state: PotentialValue,
    metric: Metric,
    potential: Potential,
    generator: torch.Generator,
    step_size: float,
    threshold: float = SEARCH_THRESHOLD,
) -> float:
    """:func:`reasonable_step_size` for one chain at ``state``: one momentum, one leapfrog
    step (one gradient) per trial.

    The momentum is drawn from ``generator``; the energy error is accumulated in float64.
    """
    momentum = metric.sample_momentum(generator)
    kinetic0 = float(metric.kinetic_energy(momentum))
    start = IntegratorState(state.position, momentum, state.potential, state.grad)

    def log_accept(eps: float) -> float:
        end = integrate(start, eps, 1, metric, potential)
        if not end.finite:
            return -math.inf
        delta = (end.potential - state.potential) + (
            float(metric.kinetic_energy(end.momentum)) - kinetic0
        )
        return -delta if math.isfinite(delta) else -math.inf

    return reasonable_step_size(log_accept, step_size, threshold)


def search_step_sizes(
    position: Tensor,
    potential0: Tensor,
    grad: Tensor,
    metrics: Sequence[Metric],
    generators: Sequence[torch.Generator],
    potential: BatchedPotential,
    step_sizes: Sequence[float],
    threshold: float = SEARCH_THRESHOLD,
    max_doublings: int = 100,
) -> list[float]:
    """The search of :func:`search_step_size` for ``C`` chains at once, in lockstep.

    Every chain draws its momentum from its own generator and doubles or halves its
    own step; each trial is one batched leapfrog step of the chains still searching
    (rows of finished chains are not evaluated), so a search costs as many batched
    gradients as the longest single search.  ``position`` and ``grad`` are ``(C, d)``,
    ``potential0`` is ``(C,)`` float64.
    """
    num = len(generators)
    momentum = torch.stack([m.sample_momentum(g) for m, g in zip(metrics, generators)])
    metric = stack_metrics(metrics)
    kinetic0 = metric.kinetic_energy(momentum)
    log_threshold = math.log(threshold)
    steps = [float(s) for s in step_sizes]
    up: list[bool | None] = [None] * num
    searching = list(range(num))
    for trial in range(max_doublings + 1):
        if not searching:
            break
        eps = torch.tensor(steps, dtype=position.dtype, device=position.device)[:, None]
        p = torch.addcmul(momentum, eps, grad, value=-0.5)
        w = torch.addcmul(position, eps, metric.velocity(p))
        u, g = potential.value_and_grad(w, searching)
        p = torch.addcmul(p, eps, g, value=-0.5)
        delta = (u - potential0) + (metric.kinetic_energy(p) - kinetic0)
        values = torch.where(torch.isfinite(delta), -delta, -math.inf).tolist()
        still = []
        for c in searching:
            above = values[c] > log_threshold
            if up[c] is None:
                up[c] = above
            elif above != up[c]:
                continue  # crossed: this step is the result
            if trial == max_doublings:
                continue  # out of trials: the last step tried is the result
            steps[c] = steps[c] * 2.0 if up[c] else steps[c] * 0.5
            still.append(c)
        searching = still
    return steps
