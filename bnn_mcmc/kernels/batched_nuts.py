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
as the single-chain kernel (momentum, direction, one block of uniforms per
subtree, one uniform per accepted subtree), and every energy, weight and U-turn
product is computed by the same float64 row-wise operations, so one chain
through this kernel equals :func:`bnn_mcmc.kernels.nuts.nuts_step` bit for bit
(tested); with several chains each row's arithmetic is independent of the
others, and only the batched potential may round differently from a chain
evaluated alone.

Per-chain quantities live in tensors on the chains' device; the host reads one
boolean row per leaf (which chains still build, to skip finished rows) and one
per doubling (for the generators), never a per-chain float.

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

from .batched_hmc import BatchedPotential, BatchedState, stack_metrics
from .hmc import uniform
from .metrics import Metric
from .records import NUTSInfo
from .uturn import (
    SUBTREE_COMBINATION,
    TOP_COMBINATION,
    TURNING_PAIRS,
    combination,
    leaf_acceptance,
    log_add,
)


def _merge_turning_rows(
    rows: tuple, sums: list[Tensor], velocities: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """Per-chain form of the single-chain kernel's merge check for float64 ``(C, dim)`` rows.

    Returns ``(turning, rho)`` with a boolean ``(C,)`` and the merged momentum sums ``(C, dim)``.
    Seven tensor operations whatever the number of chains.
    """
    stacked = torch.stack(sums)
    rhos = torch.einsum("ij,jcd->icd", combination(rows, stacked), stacked)
    dots = torch.einsum("icd,jcd->cij", rhos, torch.stack(velocities))
    i, j = _turning_index(dots.device)
    return (dots[:, i, j] <= 0).any(-1), rhos[0]


def _turning_index(device: torch.device) -> tuple[Tensor, Tensor]:
    key = ("turning-index", device)
    if key not in _INDEX:
        pairs = torch.tensor(TURNING_PAIRS, device=device)
        _INDEX[key] = (pairs[:, 0], pairs[:, 1])
    return _INDEX[key]


_INDEX: dict = {}


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


class _Point(NamedTuple):
    """A candidate sample of every chain: position, U, ∇U (no momentum needed)."""

    w: Tensor
    u: Tensor
    g: Tensor

    def where(self, mask: Tensor, other: _Point) -> _Point:
        return _Point(*(_where(mask, a, b) for a, b in zip(self, other)))


class _Subtrees(NamedTuple):
    """What :func:`_build_subtrees` returns: tensors have one row per chain, lists one entry."""

    valid: list[bool]
    diverging: list[bool]
    first: _Edge
    last: _Edge
    proposal: _Point
    proposal_kinetic: list[float]
    momentum_sum: Tensor
    log_weight: list[float]
    sum_accept: list[float]
    num_leaves: list[int]


def batched_nuts_step(
    state: BatchedState,
    generators: Sequence[torch.Generator],
    metrics: Sequence[Metric],
    potential: BatchedPotential,
    step_sizes: Sequence[float],
    max_tree_depth: int = 10,
    max_delta_energy: float = 1000.0,
) -> tuple[BatchedState, list[NUTSInfo]]:
    """One NUTS transition of every chain.

    Vectors (positions, momenta, gradients, momentum sums) are ``(C, dim)`` tensors on
    the chains' device; the per-chain scalars that drive the tree (energy errors, log
    weights, acceptance sums) come to the host in one transfer per leaf for all chains
    and are combined there with the single-chain kernel's own float64 arithmetic, so
    every chain's draws equal those of :func:`bnn_mcmc.kernels.nuts.nuts_step` bit for
    bit whenever the batched potential rounds as the single-chain one.
    """
    num_chains = len(generators)
    device = state.position.device
    f64 = torch.float64
    metric = stack_metrics(metrics)
    momentum = torch.stack([m.sample_momentum(g) for m, g in zip(metrics, generators)])
    velocity = metric.velocity(momentum)
    kinetic0_t = 0.5 * (momentum.to(f64) * velocity.to(f64)).sum(-1)
    potential0_t = state.potential.to(f64)
    kinetic0, potential0 = kinetic0_t.tolist(), potential0_t.tolist()
    root = _Edge(state.position, momentum, velocity, state.potential, state.grad)
    left = right = root
    sample = _Point(root.w, root.u, root.g)
    sample_kinetic = list(kinetic0)
    momentum_sum = momentum.to(f64)
    log_weight = [0.0] * num_chains
    sum_accept = [0.0] * num_chains
    num_leaves = [0] * num_chains
    depth = [0] * num_chains
    diverging = [False] * num_chains
    active = [True] * num_chains
    step = torch.tensor(step_sizes, dtype=state.position.dtype, device=device)[:, None]
    for d in range(max_tree_depth):
        if not any(active):
            break
        forward_host = [uniform(g) < 0.5 if a else True for g, a in zip(generators, active)]
        forward = torch.tensor(forward_host, device=device)
        edge, far = right.where(forward, left), left.where(forward, right)
        sub = _build_subtrees(
            edge,
            torch.where(forward[:, None], step, -step),
            d,
            (potential0_t, kinetic0_t),
            generators,
            list(active),
            potential,
            metric,
            max_delta_energy,
        )
        valid, take = [False] * num_chains, [False] * num_chains
        for c in range(num_chains):
            if not active[c]:
                continue
            sum_accept[c] += sub.sum_accept[c]
            num_leaves[c] += sub.num_leaves[c]
            if not sub.valid[c]:
                diverging[c] = sub.diverging[c]
                active[c] = False
                continue
            valid[c] = True
            depth[c] += 1
            take[c] = math.log(uniform(generators[c])) < sub.log_weight[c] - log_weight[c]
            if take[c]:
                sample_kinetic[c] = sub.proposal_kinetic[c]
            log_weight[c] = log_add(log_weight[c], sub.log_weight[c])
        valid_t = torch.tensor(valid, device=device)
        sample = sub.proposal.where(torch.tensor(take, device=device), sample)
        turned, total = _merge_turning_rows(
            TOP_COMBINATION,
            [momentum_sum, sub.momentum_sum, sub.first.p.to(f64), edge.p.to(f64)],
            [x.to(f64) for x in (far.v, sub.last.v, sub.first.v, edge.v)],
        )
        momentum_sum = _where(valid_t, total, momentum_sum)
        right = sub.last.where(valid_t & forward, right)
        left = sub.last.where(valid_t & ~forward, left)
        for c, t in enumerate(turned.tolist()):  # one transfer per doubling
            if valid[c] and t:
                active[c] = False
    sample_u = sample.u.tolist()
    infos = []
    for c in range(num_chains):
        delta = (sample_u[c] - potential0[c]) + (sample_kinetic[c] - kinetic0[c])
        infos.append(
            NUTSInfo(
                acceptance_rate=sum_accept[c] / max(num_leaves[c], 1),
                diverging=diverging[c],
                energy=sample_u[c] + sample_kinetic[c],
                energy_error=delta,
                n_steps=num_leaves[c],
                tree_depth=depth[c],
                reached_max_tree_depth=depth[c] >= max_tree_depth,
            )
        )
    return BatchedState(sample.w, sample.u, sample.g), infos


def _build_subtrees(
    edge: _Edge,
    step: Tensor,
    depth: int,
    start_energy: tuple[Tensor, Tensor],
    generators: Sequence[torch.Generator],
    alive: list[bool],
    potential: BatchedPotential,
    metric: Metric,
    max_delta_energy: float,
) -> _Subtrees:
    """Extend every live chain by :math:`2^{depth}` leaves (see ``_build_subtree`` of NUTS).

    ``alive`` marks the chains that build; the others are carried along unchanged and
    never evaluated.  ``start_energy`` is ``(U_0, K_0)`` of the transition, ``(C,)``
    float64 tensors.
    """
    num_chains = len(alive)
    device = edge.w.device
    f64 = torch.float64
    potential0, kinetic0 = start_energy
    levels = depth + 1
    start_p: list = [None] * levels
    start_v: list = [None] * levels
    start_sum: list = [None] * levels
    before_p: list = [None] * levels
    before_v: list = [None] * levels
    msum = torch.zeros_like(edge.p, dtype=f64)
    prev_p, prev_v = edge.p.to(f64), edge.v.to(f64)
    current = first = edge
    proposal = _Point(edge.w, edge.u, edge.g)
    proposal_kinetic = [0.0] * num_chains
    log_weight = [-math.inf] * num_chains
    sum_accept = [0.0] * num_chains
    num_leaves = [0] * num_chains
    diverging = [False] * num_chains
    no_turn = torch.zeros(num_chains, dtype=torch.bool, device=device)
    # one block of uniforms per live chain and subtree, as the single-chain kernel draws them
    uniforms = [
        torch.rand(2**depth, generator=g, dtype=f64, device=g.device).tolist() if a else None
        for g, a in zip(generators, alive)
    ]
    for n in range(2**depth):
        rows = [c for c in range(num_chains) if alive[c]]
        if not rows:
            break
        # one leapfrog step of every live chain (the arithmetic of batched_leapfrog)
        p = torch.addcmul(current.p, step, current.g, value=-0.5)
        w = torch.addcmul(current.w, step, metric.velocity(p))
        u, g = potential.value_and_grad(w, rows)
        p = torch.addcmul(p, step, g, value=-0.5)
        v = metric.velocity(p)
        # float64 copies (no-ops for float64 chains) for the energy and the U-turn sums
        p64, v64 = p.to(f64), v.to(f64)
        kinetic_t = 0.5 * (p64 * v64).sum(-1)
        delta_t = (u - potential0) + (kinetic_t - kinetic0)
        for k in range(levels):
            if n % (1 << k) == 0:
                start_p[k], start_v[k], start_sum[k] = p64, v64, msum
                before_p[k], before_v[k] = prev_p, prev_v
        msum = msum + p64
        turned_t = no_turn
        for k in range(1, levels):
            if (n + 1) % (1 << k):
                break
            turned_t = (
                turned_t
                | _merge_turning_rows(
                    SUBTREE_COMBINATION,
                    [msum, start_sum[k], start_sum[k - 1], start_p[k - 1], before_p[k - 1]],
                    [start_v[k], v64, start_v[k - 1], before_v[k - 1]],
                )[0]
            )
        prev_p, prev_v = p64, v64
        # the leaf's one transfer to the host, for all chains together
        deltas, kinetic, turned = torch.stack((delta_t, kinetic_t, turned_t.to(f64))).tolist()
        take = [False] * num_chains
        for c in rows:
            num_leaves[c] = n + 1
            delta = deltas[c]
            sum_accept[c] += leaf_acceptance(delta)  # as Stan, divergent leaves too
            if not delta <= max_delta_energy:  # also NaN, and U = inf
                alive[c], diverging[c] = False, True
                continue
            new_log_weight = log_add(log_weight[c], -delta)
            if math.log(uniforms[c][n]) < -delta - new_log_weight:
                take[c] = True
                proposal_kinetic[c] = kinetic[c]
            log_weight[c] = new_log_weight
            if turned[c]:
                alive[c] = False
        leaf = _Edge(w, p, v, u, g)
        if n == 0:
            first = leaf
        proposal = _Point(w, u, g).where(torch.tensor(take, device=device), proposal)
        # no masking needed: a chain that stopped is never evaluated again, and its end
        # points are used only if its subtree is valid, which it then is not
        current = leaf
    return _Subtrees(
        list(alive),
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
