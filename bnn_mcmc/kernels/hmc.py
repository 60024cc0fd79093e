r"""One transition of Hamiltonian Monte Carlo with a fixed number of leapfrog steps.

A momentum :math:`p \sim \mathcal N(0, M)` is drawn, the leapfrog integrator
runs ``L`` steps, and the end point is accepted with probability
:math:`\min(1, e^{-\Delta H})`, :math:`\Delta H = H(w', p') - H(w, p)`.
Energy differences are formed as :math:`(U' - U) + (K' - K)` in float64, so
adding a constant to :math:`U` does not change a decision.  A non-finite
energy, or :math:`\Delta H` above ``max_delta_energy``, is a divergence: the
proposal is rejected and the transition flagged.

References
----------
Duane, S., Kennedy, A. D., Pendleton, B. J. & Roweth, D. (1987). Hybrid Monte Carlo.
*Phys. Lett. B* 195, 216–222.
Neal, R. M. (2011). MCMC using Hamiltonian dynamics. *Handbook of MCMC*, ch. 5.
"""

from __future__ import annotations

import math

import torch

from .integrators import IntegratorState, integrate
from .metrics import Metric
from .potential import Potential, PotentialValue
from .records import HMCInfo


def uniform(generator: torch.Generator) -> float:
    """One U(0, 1) draw in float64 from ``generator`` (on the generator's device)."""
    return float(torch.rand((), generator=generator, dtype=torch.float64, device=generator.device))


def accept_log_prob(delta_energy: float) -> float:
    """:math:`\\log \\min(1, e^{-\\Delta H})`, with ``-inf`` for a non-finite ``delta_energy``."""
    if math.isnan(delta_energy):
        return -math.inf
    return min(0.0, -delta_energy)


def hmc_step(
    state: PotentialValue,
    generator: torch.Generator,
    potential: Potential,
    metric: Metric,
    step_size: float,
    num_steps: int,
    max_delta_energy: float = 1000.0,
) -> tuple[PotentialValue, HMCInfo]:
    """One HMC transition from ``state`` (position with cached ``U`` and ``∇U``).

    Returns
    -------
    (state, info)
        The next state and the transition statistics as a
        :class:`~bnn_mcmc.kernels.records.HMCInfo`.
    """
    momentum = metric.sample_momentum(generator)
    kinetic0 = float(metric.kinetic_energy(momentum))
    evals0 = potential.num_grad_evals
    start = IntegratorState(state.position, momentum, state.potential, state.grad)
    end = integrate(start, step_size, num_steps, metric, potential)
    if end.finite:
        kinetic1 = float(metric.kinetic_energy(end.momentum))
        delta = (end.potential - state.potential) + (kinetic1 - kinetic0)
    else:
        kinetic1, delta = math.inf, math.inf
    diverging = not math.isfinite(delta) or delta > max_delta_energy
    log_accept = -math.inf if diverging else accept_log_prob(delta)
    accepted = math.log(uniform(generator)) < log_accept
    if accepted:
        new = PotentialValue(end.position, end.potential, end.grad)
        energy = end.potential + kinetic1
    else:
        new = state
        energy = state.potential + kinetic0
    info = HMCInfo(
        acceptance_rate=math.exp(log_accept),
        accepted=accepted,
        diverging=diverging,
        energy=energy,
        energy_error=delta if math.isfinite(delta) else math.inf,
        n_steps=potential.num_grad_evals - evals0,
    )
    return new, info
