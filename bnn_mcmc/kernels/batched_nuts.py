r"""Lockstep NUTS for a batch of chains: per-chain trees, masked in lockstep.

The single-chain kernel (:mod:`bnn_mcmc.kernels.nuts`) builds each subtree
leaf by leaf from level checkpoints, without recursion; that makes the tree
of every chain advance one leapfrog step per leaf.  Here all chains take that
step together through one batched potential evaluation.  Every chain doubles
its trajectory at the same time, so at any moment the live chains sit at the
same depth and leaf index; a chain whose subtree diverges or U-turns, or whose
whole trajectory has stopped, is masked: it stays where it is and its results
are ignored until the slowest chain finishes.  The cost of a transition is
therefore that of the longest tree in the batch.

Each chain draws its random numbers from its own generator in the same order
as the single-chain kernel (momentum, direction, one uniform per valid leaf,
one per accepted subtree), so with a potential that rounds identically the two
give the same draws; a batched potential usually rounds slightly differently,
and the two then agree in distribution.

References
----------
Hoffman, M. D. & Gelman, A. (2014). The No-U-Turn Sampler. *JMLR* 15, 1593–1623.
Betancourt, M. (2017). A conceptual introduction to Hamiltonian Monte Carlo. arXiv:1701.02434.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .batched_hmc import BatchedPotential, BatchedState, batched_leapfrog, stack_metrics
from .hmc import uniform
from .metrics import Metric
from .uturn import (
    SUBTREE_COMBINATION,
    TOP_COMBINATION,
    TURNING_PAIRS,
    combination,
)


def _merge_turning_rows(
    rows: tuple, sums: list[Tensor], velocities: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """Per-chain form of the single-chain kernel's merge check for ``(C, dim)`` rows.

    Returns ``(turning, rho)`` with a boolean ``(C,)`` and the merged momentum sums ``(C, dim)``.
    """
    f64 = torch.float64
    stacked = torch.stack([s.to(f64) for s in sums])
    rhos = torch.einsum("ij,jcd->icd", combination(rows, stacked), stacked)
    dots = torch.einsum("icd,jcd->cij", rhos, torch.stack([v.to(f64) for v in velocities]))
    turning = torch.stack([dots[:, i, j] <= 0 for i, j in TURNING_PAIRS]).any(0)
    return turning, rhos[0]


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask.reshape(-1, *([1] * (a.ndim - 1))), a, b)


class _Edge(NamedTuple):
    """Points of the chains' trajectories, one row per chain: w, p, v = M⁻¹p, U, ∇U."""

    w: Tensor
    p: Tensor
    v: Tensor
    u: Tensor
    g: Tensor

    def where(self, mask: Tensor, other: _Edge) -> _Edge:
        return _Edge(*(_where(mask, a, b) for a, b in zip(self, other)))


class _Subtrees(NamedTuple):
    """What :func:`_build_subtrees` returns; every field has one row per chain."""

    valid: Tensor
    diverging: Tensor
    first: _Edge
    last: _Edge
    proposal: _Edge
    proposal_kinetic: Tensor
    momentum_sum: Tensor
    log_weight: Tensor
    sum_accept: Tensor
    num_leaves: Tensor


def _log_uniforms(generators: Sequence[torch.Generator], live: list[bool], size: int, device):
    """``log U`` of one block of ``size`` float64 uniforms per live chain (0 for the others).

    Each live chain draws from its own generator exactly as the single-chain kernel
    does, so the streams stay aligned with that kernel's.
    """
    rows = [
        torch.rand(size, generator=g, dtype=torch.float64, device=g.device).to(device)
        if a
        else torch.ones(size, dtype=torch.float64, device=device)
        for g, a in zip(generators, live)
    ]
    return torch.stack(rows).log()


def batched_nuts_step(
    state: BatchedState,
    generators: Sequence[torch.Generator],
    metrics: Sequence[Metric],
    potential: BatchedPotential,
    step_sizes: Sequence[float],
    max_tree_depth: int = 10,
    max_delta_energy: float = 1000.0,
) -> tuple[BatchedState, list[dict]]:
    """One NUTS transition of every chain.

    Every per-chain quantity (energies, log weights, acceptance sums, leaf counts,
    flags) is a tensor with one entry per chain on the chains' device; the host sees
    one boolean row per leaf (which chains are still building) and one per doubling,
    never a per-chain value.  The statistics are those of
    :func:`bnn_mcmc.kernels.nuts.nuts_step`.
    """
    num_chains = len(generators)
    device = state.position.device
    f64 = torch.float64
    metric = stack_metrics(metrics)
    momentum = torch.stack([m.sample_momentum(g) for m, g in zip(metrics, generators)])
    velocity = metric.velocity(momentum)
    kinetic0 = metric.kinetic_energy(momentum, velocity)
    potential0 = state.potential.to(f64)
    root = _Edge(state.position, momentum, velocity, state.potential, state.grad)
    left = right = sample = root
    sample_kinetic = kinetic0
    momentum_sum = momentum.to(f64)
    zeros = torch.zeros(num_chains, dtype=f64, device=device)
    log_weight, sum_accept = zeros, zeros
    num_leaves = torch.zeros(num_chains, dtype=torch.long, device=device)
    depth = torch.zeros_like(num_leaves)
    diverging = torch.zeros(num_chains, dtype=torch.bool, device=device)
    active = ~diverging
    active_host = [True] * num_chains
    step = torch.tensor(step_sizes, dtype=state.position.dtype, device=device)[:, None]
    for d in range(max_tree_depth):
        if not any(active_host):
            break
        forward = torch.tensor(
            [uniform(g) < 0.5 if a else True for g, a in zip(generators, active_host)],
            device=device,
        )
        edge, far = right.where(forward, left), left.where(forward, right)
        sub = _build_subtrees(
            edge,
            torch.where(forward[:, None], step, -step),
            d,
            potential0,
            kinetic0,
            generators,
            active,
            active_host,
            potential,
            metric,
            max_delta_energy,
        )
        sum_accept = sum_accept + torch.where(active, sub.sum_accept, 0.0)
        num_leaves = num_leaves + torch.where(active, sub.num_leaves, 0)
        diverging = diverging | (active & sub.diverging)
        valid = active & sub.valid
        valid_host = valid.tolist()
        depth = depth + valid
        # the biased-progressive choice: one uniform per chain whose subtree is valid
        log_u = torch.tensor(
            [math.log(uniform(g)) if v else 0.0 for g, v in zip(generators, valid_host)],
            dtype=f64,
            device=device,
        )
        take = valid & (log_u < sub.log_weight - log_weight)
        sample = sub.proposal.where(take, sample)
        sample_kinetic = torch.where(take, sub.proposal_kinetic, sample_kinetic)
        log_weight = torch.where(valid, torch.logaddexp(log_weight, sub.log_weight), log_weight)
        turned, total = _merge_turning_rows(
            TOP_COMBINATION,
            [momentum_sum, sub.momentum_sum, sub.first.p, edge.p],
            [far.v, sub.last.v, sub.first.v, edge.v],
        )
        momentum_sum = _where(valid, total, momentum_sum)
        right = sub.last.where(valid & forward, right)
        left = sub.last.where(valid & ~forward, left)
        active = valid & ~turned
        active_host = active.tolist()
    sample_u = sample.u.to(f64)
    stats = torch.stack(
        [
            sum_accept / num_leaves.clamp(min=1),
            diverging.to(f64),
            sample_u + sample_kinetic,
            (sample_u - potential0) + (sample_kinetic - kinetic0),
            num_leaves.to(f64),
            depth.to(f64),
        ]
    ).tolist()  # the transition's one transfer of statistics to the host
    infos = [
        {
            "acceptance_rate": stats[0][c],
            "diverging": bool(stats[1][c]),
            "energy": stats[2][c],
            "energy_error": stats[3][c],
            "n_steps": int(stats[4][c]),
            "tree_depth": int(stats[5][c]),
            "reached_max_tree_depth": int(stats[5][c]) >= max_tree_depth,
        }
        for c in range(num_chains)
    ]
    return BatchedState(sample.w, sample.u, sample.g), infos


def _build_subtrees(
    edge: _Edge,
    step: Tensor,
    depth: int,
    potential0: Tensor,
    kinetic0: Tensor,
    generators: Sequence[torch.Generator],
    alive: Tensor,
    alive_host: list[bool],
    potential: BatchedPotential,
    metric: Metric,
    max_delta_energy: float,
) -> _Subtrees:
    """Extend every live chain by :math:`2^{depth}` leaves (see ``_build_subtree`` of NUTS).

    ``alive`` (a tensor) and ``alive_host`` (the same flags as a list) mark the chains
    that build; the others are carried along unchanged and never evaluated.
    """
    f64 = torch.float64
    levels = depth + 1
    start_p: list = [None] * levels
    start_v: list = [None] * levels
    start_sum: list = [None] * levels
    before_p: list = [None] * levels
    before_v: list = [None] * levels
    msum = torch.zeros_like(edge.p, dtype=f64)
    prev_p, prev_v = edge.p, edge.v
    current = first = proposal = edge
    proposal_kinetic = torch.zeros_like(kinetic0)
    log_weight = torch.full_like(kinetic0, -math.inf)
    sum_accept = torch.zeros_like(kinetic0)
    num_leaves = torch.zeros(alive.shape, dtype=torch.long, device=alive.device)
    diverging = torch.zeros_like(alive)
    log_u = _log_uniforms(generators, alive_host, 2**depth, alive.device)
    for n in range(2**depth):
        if n and not any(alive_host := alive.tolist()):  # one host transfer per leaf
            break
        rows = [c for c, a in enumerate(alive_host) if a]
        # one leapfrog step of every live chain, as batched_leapfrog with num_steps=1
        p = torch.addcmul(current.p, step, current.g, value=-0.5)
        w = torch.addcmul(current.w, step, metric.velocity(p))
        u, g = potential.value_and_grad(w, rows)
        p = torch.addcmul(p, step, g, value=-0.5)
        v = metric.velocity(p)
        kinetic = metric.kinetic_energy(p, v)
        delta = (u - potential0) + (kinetic - kinetic0)
        num_leaves = torch.where(alive, n + 1, num_leaves)
        # a leaf's acceptance term min(1, exp(-delta)), 0 for NaN; divergent leaves count too
        accept = torch.where(delta.isnan(), 0.0, torch.exp(-delta.clamp(min=0.0)))
        sum_accept = sum_accept + torch.where(alive, accept, 0.0)
        fine = torch.isfinite(u) & (delta <= max_delta_energy)  # False for NaN
        diverging = diverging | (alive & ~fine)
        alive = alive & fine
        new_log_weight = torch.logaddexp(log_weight, -delta)
        take = alive & (log_u[:, n] < -delta - new_log_weight)
        proposal_kinetic = torch.where(take, kinetic, proposal_kinetic)
        log_weight = torch.where(alive, new_log_weight, log_weight)
        leaf = _Edge(w, p, v, u, g)
        if n == 0:
            first = leaf
        proposal = leaf.where(take, proposal)
        current = leaf.where(alive, current)
        for k in range(levels):
            if n % (1 << k) == 0:
                start_p[k], start_v[k], start_sum[k] = p, v, msum
                before_p[k], before_v[k] = prev_p, prev_v
        msum = msum + p
        for k in range(1, levels):
            if (n + 1) % (1 << k):
                break
            turned, _ = _merge_turning_rows(
                SUBTREE_COMBINATION,
                [msum, start_sum[k], start_sum[k - 1], start_p[k - 1], before_p[k - 1]],
                [start_v[k], v, start_v[k - 1], before_v[k - 1]],
            )
            alive = alive & ~turned
        prev_p, prev_v = p, v
    return _Subtrees(
        alive,
        diverging,
        first,
        current,
        proposal,
        proposal_kinetic,
        msum,
        log_weight,
        sum_accept,
        num_leaves,
    )
