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
    leaf_acceptance,
    log_add,
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


class _Edge:
    """End points of the chains' trajectories: position, momentum, velocity, U, ∇U."""

    def __init__(self, w: Tensor, p: Tensor, v: Tensor, u: Tensor, g: Tensor):
        self.w, self.p, self.v, self.u, self.g = w, p, v, u, g

    def where(self, mask: Tensor, other: _Edge) -> _Edge:
        return _Edge(*(_where(mask, a, b) for a, b in zip(self.fields(), other.fields())))

    def fields(self) -> tuple[Tensor, ...]:
        return self.w, self.p, self.v, self.u, self.g


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

    The statistics are those of :func:`bnn_mcmc.kernels.nuts.nuts_step`.
    """
    num_chains = len(generators)
    device = state.position.device
    metric = stack_metrics(metrics)
    momentum = torch.stack([m.sample_momentum(g) for m, g in zip(metrics, generators)])
    velocity = metric.velocity(momentum)
    kinetic0 = metric.kinetic_energy(momentum, velocity).tolist()
    potential0 = state.potential.tolist()
    root = _Edge(state.position, momentum, velocity, state.potential, state.grad)
    left = right = sample = root
    sample_kinetic = list(kinetic0)
    momentum_sum = momentum.to(torch.float64)
    log_weight = [0.0] * num_chains
    sum_accept = [0.0] * num_chains
    num_leaves = [0] * num_chains
    depth = [0] * num_chains
    diverging = [False] * num_chains
    active = [True] * num_chains
    step = torch.tensor(step_sizes, dtype=state.position.dtype, device=device)[:, None]
    d = 0
    while d < max_tree_depth and any(active):
        forward_list = [uniform(g) < 0.5 if a else True for g, a in zip(generators, active)]
        forward = torch.tensor(forward_list, device=device)
        edge, far = right.where(forward, left), left.where(forward, right)
        signed = torch.where(forward[:, None], step, -step)
        sub = _build_subtrees(
            edge,
            signed,
            d,
            potential0,
            kinetic0,
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
            sum_accept[c] += sub["sum_accept"][c]
            num_leaves[c] += sub["num_leaves"][c]
            if not sub["valid"][c]:
                diverging[c] = sub["diverging"][c]
                active[c] = False
                continue
            valid[c] = True
            depth[c] += 1
            take[c] = math.log(uniform(generators[c])) < sub["log_weight"][c] - log_weight[c]
            if take[c]:
                sample_kinetic[c] = sub["proposal_kinetic"][c]
            log_weight[c] = log_add(log_weight[c], sub["log_weight"][c])
        valid_t = torch.tensor(valid, device=device)
        take_t = torch.tensor(take, device=device) & valid_t
        sample = sub["proposal"].where(take_t, sample)
        first, last, sub_sum = sub["first"], sub["last"], sub["momentum_sum"]
        turned_t, total = _merge_turning_rows(
            TOP_COMBINATION,
            [momentum_sum, sub_sum, first.p, edge.p],
            [far.v, last.v, first.v, edge.v],
        )
        turned = turned_t.tolist()
        momentum_sum = _where(valid_t, total, momentum_sum)
        right = last.where(valid_t & forward, right)
        left = last.where(valid_t & ~forward, left)
        for c in range(num_chains):
            if valid[c] and turned[c]:
                active[c] = False
        d += 1
    sample_u = sample.u.tolist()
    infos = []
    for c in range(num_chains):
        delta = (sample_u[c] - potential0[c]) + (sample_kinetic[c] - kinetic0[c])
        infos.append(
            {
                "acceptance_rate": sum_accept[c] / max(num_leaves[c], 1),
                "diverging": diverging[c],
                "energy": sample_u[c] + sample_kinetic[c],
                "energy_error": delta,
                "n_steps": num_leaves[c],
                "tree_depth": depth[c],
                "reached_max_tree_depth": depth[c] >= max_tree_depth,
            }
        )
    return BatchedState(sample.w, sample.u, sample.g), infos


def _build_subtrees(
    edge: _Edge,
    step: Tensor,
    depth: int,
    potential0: list[float],
    kinetic0: list[float],
    generators: Sequence[torch.Generator],
    alive: list[bool],
    potential: BatchedPotential,
    metric: Metric,
    max_delta_energy: float,
) -> dict:
    """Extend every live chain by :math:`2^{depth}` leaves (see ``_build_subtree`` of NUTS)."""
    num_chains = len(alive)
    device = edge.w.device
    levels = depth + 1
    start_p, start_v, start_sum = [None] * levels, [None] * levels, [None] * levels
    before_p, before_v = [None] * levels, [None] * levels
    msum = torch.zeros_like(edge.p, dtype=torch.float64)
    prev_p, prev_v = edge.p, edge.v
    current = edge
    first = proposal = edge
    proposal_kinetic = [0.0] * num_chains
    log_weight = [-math.inf] * num_chains
    sum_accept = [0.0] * num_chains
    num_leaves = [0] * num_chains
    diverging = [False] * num_chains
    # one block of uniforms per live chain and subtree, as the single-chain kernel draws them
    uniforms = [
        torch.rand(2**depth, generator=g, dtype=torch.float64, device=g.device).tolist()
        if a
        else None
        for g, a in zip(generators, alive)
    ]
    for n in range(2**depth):
        if not any(alive):
            break
        moved, p, _ = batched_leapfrog(
            BatchedState(current.w, current.u, current.g),
            current.p,
            step,
            1,
            metric,
            potential,
            rows=[c for c in range(num_chains) if alive[c]],
        )
        v = metric.velocity(p)
        kinetic = metric.kinetic_energy(p, v).tolist()
        u = moved.potential.tolist()
        leaf = _Edge(moved.position, p, v, moved.potential, moved.grad)
        take = [False] * num_chains
        for c in range(num_chains):
            if not alive[c]:
                continue
            num_leaves[c] = n + 1
            delta = (u[c] - potential0[c]) + (kinetic[c] - kinetic0[c])
            if not math.isfinite(u[c]) or not delta <= max_delta_energy:
                alive[c], diverging[c] = False, True
                sum_accept[c] += leaf_acceptance(delta)  # as Stan, divergent too
                continue
            sum_accept[c] += leaf_acceptance(delta)
            new_log_weight = log_add(log_weight[c], -delta)
            if math.log(uniforms[c][n]) < -delta - new_log_weight:
                take[c] = True
                proposal_kinetic[c] = kinetic[c]
            log_weight[c] = new_log_weight
        live = torch.tensor(alive, device=device)
        if n == 0:
            first = leaf
        proposal = leaf.where(torch.tensor(take, device=device), proposal)
        current = leaf.where(live, current)
        for k in range(levels):
            if n % (1 << k) == 0:
                start_p[k], start_v[k], start_sum[k] = p, v, msum
                before_p[k], before_v[k] = prev_p, prev_v
        msum = msum + p
        turned = torch.zeros(num_chains, dtype=torch.bool, device=device)
        for k in range(1, levels):
            if (n + 1) % (1 << k):
                break
            turned |= _merge_turning_rows(
                SUBTREE_COMBINATION,
                [msum, start_sum[k], start_sum[k - 1], start_p[k - 1], before_p[k - 1]],
                [start_v[k], v, start_v[k - 1], before_v[k - 1]],
            )[0]
        for c, t in enumerate(turned.tolist()):
            if t and alive[c]:
                alive[c] = False
        prev_p, prev_v = p, v
    return {
        "valid": list(alive),
        "diverging": diverging,
        "first": first,
        "last": current,
        "proposal": proposal,
        "proposal_kinetic": proposal_kinetic,
        "momentum_sum": msum,
        "log_weight": log_weight,
        "sum_accept": sum_accept,
        "num_leaves": num_leaves,
    }
