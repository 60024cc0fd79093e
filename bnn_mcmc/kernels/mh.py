r"""One transition of random-walk Metropolis–Hastings.

The proposal is :math:`w' = w + s\, \xi`, :math:`\xi \sim \mathcal N(0, \Sigma)`,
with a scale :math:`s` and a proposal covariance :math:`\Sigma` given by a
:class:`~bnn_mcmc.kernels.metrics.Metric` read as :math:`\Sigma = M^{-1}`
(draw :math:`p \sim \mathcal N(0, M)` and take the velocity
:math:`M^{-1}p \sim \mathcal N(0, M^{-1})`).  The proposal is symmetric, so
:math:`w'` is accepted with probability :math:`\min(1, e^{-(U(w') - U(w))})`.
No gradient is computed and no autograd graph is kept.

References
----------
Metropolis, N. et al. (1953). Equation of state calculations by fast computing machines.
*J. Chem. Phys.* 21, 1087–1092.
Roberts, G. O., Gelman, A. & Gilks, W. R. (1997). Weak convergence and optimal scaling
of random walk Metropolis algorithms. *Ann. Appl. Probab.* 7, 110–120.
"""

from __future__ import annotations

import math

import torch

from .hmc import accept_log_prob, uniform
from .metrics import Metric
from .potential import Potential, PotentialValue
from .records import MHInfo


def mh_step(
    state: PotentialValue,
    generator: torch.Generator,
    potential: Potential,
    metric: Metric,
    scale: float,
) -> tuple[PotentialValue, MHInfo]:
    """One random-walk Metropolis transition; returns the next state and its statistics."""
    noise = metric.velocity(metric.sample_momentum(generator))
    proposal = state.position + scale * noise
    value = potential.value(proposal)
    delta = value - state.potential
    diverging = not math.isfinite(delta)
    log_accept = -math.inf if diverging else accept_log_prob(delta)
    accepted = math.log(uniform(generator)) < log_accept
    new = PotentialValue(proposal, value, None) if accepted else state
    info = MHInfo(
        acceptance_rate=math.exp(log_accept), accepted=accepted, diverging=diverging, n_steps=1
    )
    return new, info
