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
from typing import NamedTuple

import torch
from torch import Tensor

from .hmc import accept_log_prob, uniform
from .metrics import DenseMetric, DiagMetric, Metric, ScalarMetric
from .potential import NUMERICAL_ERRORS
from .records import ChainState, HMCInfo

#: The chain-axis state under its earlier name (see :class:`~bnn_mcmc.kernels.records.ChainState`).
BatchedState = ChainState


def vmap_potential(func: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``U(W) -> (C,)`` from a single-chain ``U(w) -> scalar`` by :func:`torch.func.vmap`."""

    def batched(positions: Tensor) -> Tensor:
        return torch.func.vmap(lambda w: func(w).reshape(()))(positions)

    return batched


class BatchedPotential:
    """Counted evaluation of a batched potential with per-chain failure handling.

    A non-finite value makes that chain's potential ``inf``.  A numerical
    exception (e.g. a failed Cholesky factorisation) in a batched evaluation
    re-evaluates that step chain by chain, so only the chains that fail get
    ``U = inf``.  Only the rows asked for are evaluated (finished or masked
    chains are never evaluated at leftover positions), and :attr:`row_evals`
    counts the evaluations of each row.
    """

    def __init__(self, func: Callable[[Tensor], Tensor], num_chains: int | None = None):
        self.func = func
        self.num_evals = 0
        self.row_evals: list[int] = [0] * (num_chains or 0)

    def _count(self, rows: Sequence[int]) -> None:
        for r in rows:
            if r >= len(self.row_evals):
                self.row_evals.extend([0] * (r + 1 - len(self.row_evals)))
            self.row_evals[r] += 1

    def _evaluate(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        w = positions.detach().requires_grad_(True)
        with torch.enable_grad():
            u = self.func(w)
            if u.shape != positions.shape[:1]:
                raise ValueError(
                    f"the batched potential must return shape ({positions.shape[0]},) for "
                    f"positions of shape {tuple(positions.shape)}; got {tuple(u.shape)}."
                )
            (grad,) = torch.autograd.grad(u.sum(), w)
        return u.detach().to(torch.float64), grad

    def _evaluate_rows_alone(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        values, grads = [], []
        for c in range(positions.shape[0]):
            try:
                u, g = self._evaluate(positions[c : c + 1])
            except NUMERICAL_ERRORS:
                u = torch.full((1,), math.inf, dtype=torch.float64, device=positions.device)
                g = torch.zeros_like(positions[c : c + 1])
            values.append(u)
            grads.append(g)
        return torch.cat(values), torch.cat(grads)

    def value_and_grad(
        self, positions: Tensor, rows: Sequence[int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Potentials ``(C,)`` as float64 and gradients ``(C, dim)``.

        With ``rows`` only those rows are evaluated; the others get ``U = inf`` and a
        zero gradient.  A chain whose potential or gradient is not finite is not
        masked here (that would cost several batched operations per step): its
        non-finite values make its next momentum, hence its energy error,
        non-finite, and the kernels treat that as a divergence of that chain alone.
        """
        num = positions.shape[0]
        subset = rows is not None and len(rows) < num
        index = list(range(num)) if rows is None else list(rows)
        if not index:  # every chain has stopped: nothing to evaluate
            return (
                torch.full((num,), math.inf, dtype=torch.float64, device=positions.device),
                torch.zeros_like(positions),
            )
        self.num_evals += 1
        self._count(index)
        idx = torch.tensor(index, dtype=torch.long, device=positions.device) if subset else None
        x = positions[idx] if subset else positions
        try:
            u, g = self._evaluate(x)
        except NUMERICAL_ERRORS:
            u, g = self._evaluate_rows_alone(x)
        u = torch.where(torch.isfinite(u), u, math.inf)
        if not subset:
            return u, g
        full_u = torch.full((num,), math.inf, dtype=torch.float64, device=positions.device)
        full_g = torch.zeros_like(positions)
        return full_u.index_copy(0, idx, u), full_g.index_copy(0, idx, g)


def stack_metrics(metrics: Sequence[Metric]) -> Metric:
    """One metric acting row-wise on ``(C, dim)`` momenta from the chains' metrics.

    Scalar metrics with one value stay scalar; scalar and diagonal ones stack into a
    ``(C, dim)`` diagonal; if any chain has a dense metric, all become dense
    ``(C, dim, dim)`` (a diagonal as its diagonal matrix), applied by a batched product.

    Raises
    ------
    ValueError
        For other metrics (e.g. Kronecker-factored ones).
    """
    if not all(isinstance(m, (ScalarMetric, DiagMetric, DenseMetric)) for m in metrics):
        raise ValueError(
            "the vectorized backend supports scalar, diagonal and dense metrics; warm up with "
            "adapt_mass='diag' or 'dense', or use the 'sequential' or 'joblib' backend for "
            "other metrics (e.g. inv_mass='fisher')."
        )
    first = metrics[0]
    if all(isinstance(m, ScalarMetric) and m.inv_mass == first.inv_mass for m in metrics):
        return first
    if any(isinstance(m, DenseMetric) for m in metrics):
        return RowDenseMetric(torch.stack([_as_matrix(m) for m in metrics]))
    rows = [
        m.inv_mass
        if isinstance(m, DiagMetric)
        else torch.full((m.dim,), m.inv_mass, dtype=m.dtype, device=m.device)
        for m in metrics
    ]
    return DiagMetric(torch.stack(rows))


def _as_matrix(metric: Metric) -> Tensor:
    if isinstance(metric, DenseMetric):
        return metric.inv_mass
    if isinstance(metric, DiagMetric):
        return torch.diag(metric.inv_mass)
    return metric.inv_mass * torch.eye(metric.dim, dtype=metric.dtype, device=metric.device)


class RowDenseMetric(Metric):
    """Dense inverse mass matrices, one per row: ``(C, dim, dim)`` for momenta ``(C, dim)``.

    Only :meth:`velocity` (and so the kinetic energy) is batched; momenta are drawn
    by each chain's own metric with its own generator.
    """

    def __init__(self, inv_mass: Tensor):
        self._m = inv_mass
        self.dim = inv_mass.shape[-1]
        self.dtype, self.device = inv_mass.dtype, inv_mass.device

    def velocity(self, momentum: Tensor) -> Tensor:
        return (momentum.unsqueeze(-2) @ self._m).squeeze(-2)

    @property
    def inv_mass(self) -> Tensor:
        return self._m

    def to(self, device):
        return RowDenseMetric(self._m.to(device))


def batched_leapfrog(
    state: BatchedState,
    momentum: Tensor,
    step: Tensor,
    num_steps: int,
    metric: Metric,
    potential: BatchedPotential,
    rows: Sequence[int] | None = None,
) -> tuple[BatchedState, Tensor, Tensor]:
    """``num_steps`` leapfrog steps of per-chain size ``step`` (shape ``(C, 1)``) in lockstep.

    A chain whose potential fails gets potential ``inf`` at the end; its gradient
    count stops at the failure, as in the single-chain integrator.  Only the chains
    in ``rows`` (default: all) are evaluated; the others come back with ``U = inf``.

    Returns
    -------
    (state, momentum, num_evals)
        End points and the number of gradient evaluations each chain used.
    """
    w, p, g = state.position, momentum, state.grad
    num = w.shape[0]
    alive = list(range(num)) if rows is None else list(rows)
    evals = [0] * num
    p = torch.addcmul(p, step, g, value=-0.5)
    for i in range(num_steps):
        w = torch.addcmul(w, step, metric.velocity(p))
        # failed chains are not evaluated again: their rows come back as U = inf
        u, g = potential.value_and_grad(w, alive)
        for c in alive:
            evals[c] += 1
        finite = torch.isfinite(u)
        if int(finite.sum()) != len(alive):  # one host transfer per step for all chains
            flags = finite.tolist()
            alive = [c for c in alive if flags[c]]
        p = torch.addcmul(p, step, g, value=-1.0 if i < num_steps - 1 else -0.5)
    return BatchedState(w, u, g), p, torch.tensor(evals, device=w.device)


def batched_hmc_step(
    state: BatchedState,
    generators: Sequence[torch.Generator],
    metrics: Sequence[Metric],
    potential: BatchedPotential,
    step_sizes: Sequence[float],
    num_steps: int,
    max_delta_energy: float = 1000.0,
) -> tuple[BatchedState, list[HMCInfo]]:
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
            HMCInfo(
                acceptance_rate=math.exp(log_accept),
                accepted=accepted,
                diverging=diverging,
                energy=u1[c] + k1[c] if accepted else u0[c] + k0[c],
                energy_error=d if math.isfinite(d) else math.inf,
                n_steps=evals[c],
            )
        )
    mask = torch.tensor(accepted_mask, device=state.position.device)
    new = BatchedState(
        torch.where(mask[:, None], end.position, state.position),
        torch.where(mask, end.potential, state.potential),
        torch.where(mask[:, None], end.grad, state.grad),
    )
    return new, infos


class BatchedDecision(NamedTuple):
    """A Metropolis decision of every chain: see :func:`metropolis_in_lockstep`."""

    state: BatchedState
    accepted: Tensor
    accept_prob: Tensor
    diverging: Tensor
    energy: Tensor
    energy_error: Tensor


def metropolis_in_lockstep(
    start: BatchedState,
    end: BatchedState,
    kinetic0: Tensor,
    kinetic1: Tensor,
    generators: Sequence[torch.Generator],
    max_delta_energy: float,
) -> BatchedDecision:
    r"""Accept each chain's proposal ``end`` with probability :math:`\min(1, e^{-\Delta H})`.

    :math:`\Delta H = (U_1 - U_0) + (K_1 - K_0)` in float64; a non-finite or too large
    :math:`\Delta H` is a divergence, never accepted (its ``energy_error`` is ``inf``).
    Each chain draws one float64 uniform from its own generator.
    """
    delta = (end.potential - start.potential) + (kinetic1 - kinetic0)
    finite = torch.isfinite(delta) & torch.isfinite(end.potential)
    diverging = ~finite | (delta > max_delta_energy)
    safe = torch.where(diverging, torch.zeros_like(delta), delta)
    accept_prob = torch.where(diverging, torch.zeros_like(delta), torch.exp(-safe).clamp(max=1.0))
    u = torch.tensor(
        [
            float(torch.rand((), generator=g, dtype=torch.float64, device=g.device))
            for g in generators
        ],
        dtype=torch.float64,
        device=start.position.device,
    )
    accepted = u < accept_prob
    new = BatchedState(
        torch.where(accepted[:, None], end.position, start.position),
        torch.where(accepted, end.potential, start.potential),
        torch.where(accepted[:, None], end.grad, start.grad),
    )
    energy = torch.where(accepted, end.potential + kinetic1, start.potential + kinetic0)
    energy_error = torch.where(finite, delta, torch.full_like(delta, math.inf))
    return BatchedDecision(new, accepted, accept_prob, diverging, energy, energy_error)
