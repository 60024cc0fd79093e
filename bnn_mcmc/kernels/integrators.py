r"""The leapfrog (Störmer–Verlet) integrator of Hamiltonian dynamics.

For :math:`H(w, p) = U(w) + \tfrac12 p^\top M^{-1} p` one step of size
:math:`\varepsilon` is

.. math::

    p_{1/2} = p - \tfrac{\varepsilon}{2}\nabla U(w), \qquad
    w' = w + \varepsilon M^{-1} p_{1/2}, \qquad
    p' = p_{1/2} - \tfrac{\varepsilon}{2}\nabla U(w').

It is symplectic (volume preserving) and time reversible, and its energy error
is :math:`O(\varepsilon^2)` over a fixed integration time.  The internal
integrator carries :math:`U` and :math:`\nabla U` in its state, so ``L`` steps
cost exactly ``L`` gradient evaluations; consecutive half kicks are merged.

References
----------
Leimkuhler, B. & Reich, S. (2004). *Simulating Hamiltonian Dynamics*. CUP.
Neal, R. M. (2011). MCMC using Hamiltonian dynamics. *Handbook of MCMC*, ch. 5.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .metrics import Metric, make_metric
from .potential import Potential


@dataclass
class IntegratorState:
    """Phase-space point with cached potential (float64) and its gradient."""

    position: Tensor
    momentum: Tensor
    potential: float
    grad: Tensor | None

    @property
    def finite(self) -> bool:
        """Whether the potential is finite (``False`` marks a numerical failure)."""
        return math.isfinite(self.potential)


def integrate(
    state: IntegratorState,
    step_size: float,
    num_steps: int,
    metric: Metric,
    potential: Potential,
) -> IntegratorState:
    """Run ``num_steps`` leapfrog steps from ``state``; a negative step goes back in time.

    Stops early, returning a state with ``potential = inf``, when the potential
    fails (non-finite value or numerical exception).  Costs one gradient
    evaluation per step and none for the starting point, whose gradient is
    carried in ``state``.
    """
    w, p, g = state.position, state.momentum, state.grad
    p = torch.add(p, g, alpha=-0.5 * step_size)
    for i in range(num_steps):
        w = torch.add(w, metric.velocity(p), alpha=step_size)
        value = potential.value_and_grad(w)
        if not value.finite:
            return IntegratorState(w, p, math.inf, None)
        g = value.grad
        kick = step_size if i < num_steps - 1 else 0.5 * step_size
        p = torch.add(p, g, alpha=-kick)
    return IntegratorState(w, p, value.potential, g)


def leapfrog(
    position: Tensor,
    momentum: Tensor,
    stepsize: float,
    num_steps: int,
    inv_mass: float | Tensor,
    pot_energy_func: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """Simulate Hamiltonian dynamics for ``num_steps`` leapfrog steps.

    The functional entry point of the original toolkit's API: it evaluates
    :math:`\\nabla U` at the start as well (``num_steps + 1`` gradients).  The
    samplers use :func:`integrate`, which reuses a cached gradient.

    Parameters
    ----------
    position, momentum
        1-D tensors of equal length.
    stepsize
        Leapfrog step :math:`\\varepsilon` (negative integrates backwards).
    num_steps
        Number of steps ``L >= 1``.
    inv_mass
        Scalar, diagonal (1-D) or dense (2-D) inverse mass matrix.
    pot_energy_func
        ``U(w) -> scalar tensor``.

    Returns
    -------
    (position, momentum)
        The end point of the trajectory (detached).
    """
    if position.shape != momentum.shape or position.ndim != 1:
        raise ValueError(
            "position and momentum must be 1-D tensors of the same length; got shapes "
            f"{tuple(position.shape)} and {tuple(momentum.shape)}."
        )
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer; got {num_steps}.")
    metric = make_metric(inv_mass, position.shape[0], position.dtype, position.device)
    potential = Potential(pot_energy_func)
    start = potential.check_initial(position)
    state = IntegratorState(position.detach(), momentum.detach(), start.potential, start.grad)
    end = integrate(state, float(stepsize), int(num_steps), metric, potential)
    return end.position.detach(), end.momentum.detach()


def hamiltonian(state: IntegratorState, metric: Metric) -> float:
    """:math:`H = U + K` of a state as a float64 Python number."""
    return state.potential + float(metric.kinetic_energy(state.momentum))

