r"""Lockstep HMC for a batch of chains: positions of shape ``(chains, dim)``.

Every chain keeps its own generator, metric and step size; the potential is
evaluated once per leapfrog step for all chains together, either through a
user-given batched potential ``U(W) -> (chains,)`` or through
:func:`torch.func.vmap` of the single-chain potential.  Gradients come from one
reverse pass of :math:`\sum_c U(w_c)`, which gives every chain its own
:math:`\nabla U(w_c)` because the chains do not interact.

Each chain draws its random numbers in the same order as the single-chain
kernel (:func:`bnn_mcmc.kernels.hmc.hmc_step`): momentum, then the acceptance
uniform.  A batched potential may round differently from one evaluated chain by
chain (matrix products are blocked differently), so the two agree to rounding
and then in distribution, not bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .hmc import accept_log_prob, uniform
from .metrics import DenseMetric, DiagMetric, Metric, ScalarMetric
from .potential import NUMERICAL_ERRORS


@dataclass
class BatchedState:
    """Positions ``(C, dim)``, potentials ``(C,)`` (float64, ``inf`` on failure), gradients."""

    position: Tensor
    potential: Tensor
    grad: Tensor


def vmap_potential(func: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``U(W) -> (C,)`` from a single-chain ``U(w) -> scalar`` by :func:`torch.func.vmap`."""

    def batched(positions: Tensor) -> Tensor:
        return torch.func.vmap(lambda w: func(w).reshape(()))(positions)

    return batched


class BatchedPotential:
    """Counted evaluation of a batched potential with per-chain failure handling.

    A non-finite value or gradient makes that chain's potential ``inf``; a
    numerical exception (e.g. a failed Cholesky factorisation) cannot be
    attributed to one chain and makes every chain's potential ``inf`` for this
    evaluation.
    """

    def __init__(self, func: Callable[[Tensor], Tensor]):
        self.func = func
        self.num_evals = 0

    def value_and_grad(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Potentials ``(C,)`` as float64 and gradients ``(C, dim)``.

        A chain whose potential or gradient is not finite is not masked here (that
        would cost several batched operations per step): its non-finite values make
        its next momentum, hence its energy error, non-finite, and the kernels treat
        that as a divergence of that chain alone.
        """
        self.num_evals += 1
        w = positions.detach().requires_grad_(True)
        try:
            with torch.enable_grad():
                u = self.func(w)
                if u.shape != positions.shape[:1]:
                    raise ValueError(
                        f"the batched potential must return shape ({positions.shape[0]},) for "
                        f"positions of shape {tuple(positions.shape)}; got {tuple(u.shape)}."
                    )
                (grad,) = torch.autograd.grad(u.sum(), w)
        except NUMERICAL_ERRORS:
            inf = torch.full(positions.shape[:1], math.inf, dtype=torch.float64)
            return inf.to(positions.device), torch.zeros_like(positions)
        return u.detach().to(torch.float64), grad


def stack_metrics(metrics: Sequence[Metric]) -> Metric:
    """One metric acting row-wise on ``(C, dim)`` momenta from the chains' metrics.

    Raises
    ------
    ValueError
        For dense metrics (use ``adapt_mass='diag'`` with the vectorised backend).
    """
    if any(
        isinstance(m, DenseMetric) or not isinstance(m, (ScalarMetric, DiagMetric)) for m in metrics
    ):
        raise ValueError(
            "the vectorized backend supports scalar and diagonal metrics only; warm up with "
            "adapt_mass='diag' or use the 'sequential' or 'joblib' backend."
        )
    first = metrics[0]
    if all(isinstance(m, ScalarMetric) and m.inv_mass == first.inv_mass for m in metrics):
        return first
    rows = [
        m.inv_mass
        if isinstance(m, DiagMetric)
        else torch.full((m.dim,), m.inv_mass, dtype=m.dtype, device=m.device)
        for m in metrics
    ]
    return DiagMetric(torch.stack(rows))


def batched_leapfrog(
    state: BatchedState,
    momentum: Tensor,
    step: Tensor,
    num_steps: int,
    metric: Metric,
    potential: BatchedPotential,
) -> tuple[BatchedState, Tensor, Tensor]:
    """``num_steps`` leapfrog steps of per-chain size ``step`` (shape ``(C, 1)``) in lockstep.

    A chain whose potential fails gets potential ``inf`` at the end; its gradient
    count stops at the failure, as in the single-chain integrator.

    Returns
    -------
    (state, momentum, num_evals)
        End points and the number of gradient evaluations each chain used.
    """
    w, p, g = state.position, momentum, state.grad
    alive = torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
    evals = torch.zeros(w.shape[0], dtype=torch.int64, device=w.device)
    p = torch.addcmul(p, step, g, value=-0.5)
    for i in range(num_steps):
        w = torch.addcmul(w, step, metric.velocity(p))
        u, g = potential.value_and_grad(w)
        evals += alive
        alive &= torch.isfinite(u)
        p = torch.addcmul(p, step, g, value=-1.0 if i < num_steps - 1 else -0.5)
    return BatchedState(w, torch.where(alive, u, math.inf), g), p, evals


def batched_hmc_step(
    state: BatchedState,
    generators: Sequence[torch.Generator],
    metrics: Sequence[Metric],
    potential: BatchedPotential,
    step_sizes: Sequence[float],
    num_steps: int,
    max_delta_energy: float = 1000.0,
) -> tuple[BatchedState, list[dict]]:
    """One HMC transition of every chain; returns the new states and per-chain statistics.

    The statistics are those of :func:`bnn_mcmc.kernels.hmc.hmc_step`.
    """
    momentum = torch.stack([m.sample_momentum(g) for m, g in zip(metrics, generators)])
    metric = stack_metrics(metrics)
    kinetic0 = metric.kinetic_energy(momentum).to(torch.float64)
    step = torch.tensor(step_sizes, dtype=state.position.dtype, device=state.position.device)
    end, p_end, evals = batched_leapfrog(
        state, momentum, step[:, None], num_steps, metric, potential
    )
    kinetic1 = metric.kinetic_energy(p_end).to(torch.float64)
    delta = ((end.potential - state.potential) + (kinetic1 - kinetic0)).tolist()
    u0, u1 = state.potential.tolist(), end.potential.tolist()
    k0, k1, evals = kinetic0.tolist(), kinetic1.tolist(), evals.tolist()
    accepted_mask, infos = [], []
    for c, generator in enumerate(generators):
        d = delta[c] if math.isfinite(u1[c]) else math.inf
        diverging = not math.isfinite(d) or d > max_delta_energy
        log_accept = -math.inf if diverging else accept_log_prob(d)
        accepted = math.log(uniform(generator)) < log_accept
        accepted_mask.append(accepted)
        infos.append(
            {
                "acceptance_rate": math.exp(log_accept),
                "accepted": accepted,
                "diverging": diverging,
                "energy": u1[c] + k1[c] if accepted else u0[c] + k0[c],
                "energy_error": d if math.isfinite(d) else math.inf,
                "n_steps": evals[c],
            }
        )
    mask = torch.tensor(accepted_mask, device=state.position.device)
    new = BatchedState(
        torch.where(mask[:, None], end.position, state.position),
        torch.where(mask, end.potential, state.potential),
        torch.where(mask[:, None], end.grad, state.grad),
    )
    return new, infos
