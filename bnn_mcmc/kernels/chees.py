r"""The ChEES-HMC transition: HMC with one step size and one number of steps for all chains.

Every chain draws its momentum :math:`p \sim \mathcal N(0, M)` from its own
generator, all chains take the same :math:`L` leapfrog steps of the same size
:math:`\varepsilon` (no chain waits for another, no masked work) and each
accepts its proposal with probability

.. math:: a_c = \min\bigl(1, e^{-\Delta H_c}\bigr), \qquad
          \Delta H_c = \bigl(U(x'_c) - U(x_c)\bigr) + \bigl(K(p'_c) - K(p_c)\bigr),

with the energy difference formed in float64.  A non-finite :math:`\Delta H_c`
(NaN or inf potential, overflow) or one above ``max_delta_energy`` is a
divergence of chain :math:`c` alone: :math:`a_c = 0`.

With :math:`\varepsilon`, :math:`L` and :math:`M` fixed, this is exact HMC for
every chain.  ChEES draws the trajectory length of transition :math:`t` as
:math:`u_t T` with :math:`u_t` the :func:`halton` (van der Corput, base 2)
point: a deterministic sequence, so every transition is an exact HMC kernel and
their composition leaves the target invariant.

References
----------
Hoffman, M. D., Radul, A. & Sountsov, P. (2021). An adaptive-MCMC scheme for setting
trajectory lengths in Hamiltonian Monte Carlo. *AISTATS*, PMLR 130, 3907–3915.
Neal, R. M. (2011). MCMC using Hamiltonian dynamics. *Handbook of MCMC*, ch. 5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .batched_hmc import BatchedPotential, BatchedState, batched_leapfrog, metropolis_in_lockstep
from .metrics import DiagMetric


class LockstepTransition(NamedTuple):
    """One lockstep HMC transition of ``C`` chains (tensors of leading size ``C``)."""

    state: BatchedState
    proposal: Tensor
    velocity: Tensor
    accept_prob: Tensor
    accepted: Tensor
    diverging: Tensor
    energy: Tensor
    energy_error: Tensor
    num_steps: int


def halton(index: int, base: int = 2) -> float:
    """The ``index``-th point (``index >= 1``) of the van der Corput sequence in ``(0, 1)``.

    >>> [halton(i) for i in range(1, 5)]
    [0.5, 0.25, 0.75, 0.125]
    """
    if index < 1:
        raise ValueError(f"halton index must be >= 1; got {index}.")
    result, f = 0.0, 1.0
    while index > 0:
        f /= base
        result += f * (index % base)
        index //= base
    return result


def num_leapfrog_steps(length: float, step_size: float, max_steps: int) -> int:
    """:math:`\\min(L_{max}, \\max(1, \\lceil \\text{length} / \\varepsilon \\rceil))`."""
    if not math.isfinite(length / step_size):
        return max_steps
    return int(min(max_steps, max(1, math.ceil(length / step_size))))


def lockstep_hmc_step(
    state: BatchedState,
    generators: Sequence[torch.Generator],
    inv_mass: Tensor,
    potential: BatchedPotential,
    step_size: float,
    num_steps: int,
    max_delta_energy: float = 1000.0,
) -> LockstepTransition:
    """One HMC transition of every chain with a common step size and number of steps.

    Parameters
    ----------
    state
        Positions ``(C, d)``, float64 potentials ``(C,)`` and gradients.
    generators
        One per chain: momentum, then acceptance uniform, in that order.
    inv_mass
        Diagonal inverse mass matrix ``(d,)`` shared by the chains.
    potential
        The batched potential.
    step_size, num_steps
        :math:`\\varepsilon` and :math:`L`.
    max_delta_energy
        Energy errors above it count as divergences.
    """
    metric = DiagMetric(inv_mass.to(state.position.dtype))
    momentum = torch.stack([metric.sample_momentum(g) for g in generators])
    kinetic0 = metric.kinetic_energy(momentum)
    step = torch.full(
        (state.position.shape[0], 1),
        step_size,
        dtype=state.position.dtype,
        device=state.position.device,
    )
    end, p_end, _ = batched_leapfrog(state, momentum, step, num_steps, metric, potential)
    velocity = metric.velocity(p_end)
    kinetic1 = metric.kinetic_energy(p_end, velocity)
    d = metropolis_in_lockstep(state, end, kinetic0, kinetic1, generators, max_delta_energy)
    return LockstepTransition(
        d.state,
        end.position,
        velocity,
        d.accept_prob,
        d.accepted,
        d.diverging,
        d.energy,
        d.energy_error,
        num_steps,
    )
