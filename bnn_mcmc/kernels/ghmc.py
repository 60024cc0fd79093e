r"""Generalised HMC (Horowitz 1991) with one leapfrog step, in whitened momentum, in lockstep.

The momentum is kept whitened, :math:`z = \sigma \odot p \sim \mathcal N(0, I)`
under the mass :math:`M = \operatorname{diag}(\sigma)^{-2}`, so its
distribution does not depend on the preconditioner :math:`\sigma` and a chain may
change :math:`\sigma` between transitions.  One transition with step size
:math:`\varepsilon` and refreshment :math:`\alpha`:

1. :math:`z \leftarrow \sqrt{1 - \alpha}\, z + \sqrt{\alpha}\, \xi` with
   :math:`\xi \sim \mathcal N(0, I)`;
2. one leapfrog step of :math:`(x, p = z / \sigma)` with inverse mass :math:`\sigma^2`;
3. accept with probability :math:`\min(1, e^{-\Delta H})` (float64 energy difference; a
   non-finite one or one above ``max_delta_energy`` is a divergence, never accepted),
   else keep :math:`x` and negate :math:`z`.

Each step leaves :math:`\pi(x)\,\mathcal N(z; 0, I)` invariant; the uniforms are
drawn afresh (Horowitz's rule), one per chain from the chain's generator.

References
----------
Horowitz, A. M. (1991). A generalized guided Monte Carlo algorithm. *Phys. Lett. B* 268, 247–252.
Neal, R. M. (2011). MCMC using Hamiltonian dynamics. *Handbook of MCMC*, ch. 5, §5.5.3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .batched_hmc import BatchedPotential, BatchedState, batched_leapfrog, metropolis_in_lockstep
from .metrics import DiagMetric


class GHMCTransition(NamedTuple):
    """One GHMC transition of a batch of chains."""

    state: BatchedState
    momentum: Tensor
    accept_prob: Tensor
    diverging: Tensor
    energy: Tensor
    energy_error: Tensor


def ghmc_step(
    state: BatchedState,
    momentum: Tensor,
    generators: Sequence[torch.Generator],
    potential: BatchedPotential,
    step_size: float,
    scale: Tensor,
    refresh: float,
    max_delta_energy: float = 1000.0,
) -> GHMCTransition:
    """One GHMC transition of the chains in ``state`` (whitened ``momentum`` ``(n, d)``)."""
    noise = torch.stack(
        [
            torch.randn(state.position.shape[1], generator=g, dtype=momentum.dtype, device=g.device)
            for g in generators
        ]
    )
    z = math.sqrt(1.0 - refresh) * momentum + math.sqrt(refresh) * noise
    metric = DiagMetric(scale * scale)
    p = z / scale
    kinetic0 = 0.5 * (z.to(torch.float64) ** 2).sum(-1)
    step = torch.full(
        (state.position.shape[0], 1), step_size, dtype=state.position.dtype, device=z.device
    )
    end, p_end, _ = batched_leapfrog(state, p, step, 1, metric, potential)
    z_end = p_end * scale
    kinetic1 = 0.5 * (z_end.to(torch.float64) ** 2).sum(-1)
    # the potential's finiteness is part of the check (as in ChEES's kernel)
    d = metropolis_in_lockstep(state, end, kinetic0, kinetic1, generators, max_delta_energy)
    new_z = torch.where(d.accepted[:, None], z_end, -z)
    return GHMCTransition(d.state, new_z, d.accept_prob, d.diverging, d.energy, d.energy_error)
