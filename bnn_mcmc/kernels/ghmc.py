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

from .batched_hmc import BatchedPotential, BatchedState, batched_leapfrog
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
    delta = (end.potential - state.potential) + (kinetic1 - kinetic0)
    finite = torch.isfinite(delta)
    diverging = ~finite | (delta > max_delta_energy)
    safe = torch.where(diverging, torch.zeros_like(delta), delta)
    accept_prob = torch.where(diverging, torch.zeros_like(delta), torch.exp(-safe).clamp(max=1.0))
    u = torch.tensor(
        [
            float(torch.rand((), generator=g, dtype=torch.float64, device=g.device))
            for g in generators
        ],
        dtype=torch.float64,
        device=z.device,
    )
    accepted = u < accept_prob
    new = BatchedState(
        torch.where(accepted[:, None], end.position, state.position),
        torch.where(accepted, end.potential, state.potential),
        torch.where(accepted[:, None], end.grad, state.grad),
    )
    new_z = torch.where(accepted[:, None], z_end, -z)
    energy = torch.where(accepted, end.potential + kinetic1, state.potential + kinetic0)
    energy_error = torch.where(finite, delta, torch.full_like(delta, math.inf))
    return GHMCTransition(new, new_z, accept_prob, diverging, energy, energy_error)
