r"""One transition of the No-U-Turn Sampler: multinomial, iterative, generalised U-turn.

The trajectory doubles (forwards or backwards in time, at random) until the
generalised no-U-turn criterion fails or the tree reaches ``max_tree_depth``.
A sub-trajectory with momentum sum :math:`\rho` and end velocities
:math:`v^- = M^{-1}p^-`, :math:`v^+ = M^{-1}p^+` keeps going while
:math:`\rho \cdot v^- > 0` and :math:`\rho \cdot v^+ > 0` (Betancourt 2013);
as in Stan, every merge also checks the two trees extended by one state of
the other, which catches U-turns that a merge hides.

The sample is drawn *multinomially*, with weights :math:`e^{-(H - H_0)}`:
uniformly-progressive inside a new subtree, biased-progressive when it joins
the trajectory (Betancourt 2017, App. A).  All weights are handled as
log-weights of energy *differences* in float64, so a constant added to
:math:`U` changes nothing and nothing underflows (the original slice sampler
computed :math:`e^{-H}` in float32 and stopped rejecting on BNN energies).

Subtrees are built leaf by leaf without recursion: when leaf ``n`` (0-based)
closes the balanced subtrees of sizes :math:`2^k` that end at it
(:math:`(n + 1) \bmod 2^k = 0`), their criteria are checked from momenta and
partial momentum sums stored when each subtree began.  This is the form that
can be batched across chains.

A leaf whose energy error exceeds ``max_delta_energy`` (1000 by default), or
whose potential fails, ends the transition as *divergent*; the subtree it
belongs to is discarded.

References
----------
Hoffman, M. D. & Gelman, A. (2014). The No-U-Turn Sampler. *JMLR* 15, 1593–1623.
Betancourt, M. (2017). A conceptual introduction to Hamiltonian Monte Carlo. arXiv:1701.02434.
Phan, D., Pradhan, N. & Jankowiak, M. (2019). Composable effects for flexible and
accelerated probabilistic programming in NumPyro. arXiv:1912.11554.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .hmc import uniform
from .integrators import IntegratorState, integrate
from .metrics import Metric
from .potential import Potential, PotentialValue
from .records import NUTSInfo
from .uturn import (
    SUBTREE_COMBINATION,
    TOP_COMBINATION,
    TURNING_PAIRS,
    combination,
    leaf_acceptance,
    log_add,
)


@dataclass
class Leaf:
    """A point of the trajectory with its velocity and Hamiltonian offset."""

    state: IntegratorState
    velocity: Tensor
    kinetic: float


@dataclass
class Subtree:
    """What the trajectory needs to know of a freshly built subtree."""

    first: Leaf | None
    last: Leaf | None
    proposal: Leaf | None
    momentum_sum: Tensor | None
    log_weight: float
    sum_accept: float
    num_leaves: int
    valid: bool
    diverging: bool


_F64 = torch.empty((), dtype=torch.float64)


def _merge_turning(rows: tuple, sums: list[Tensor], velocities: list[Tensor]) -> tuple:
    r"""Generalised U-turn criteria of a merge of two trees A (earlier) and B (later).

    ``velocities`` are ``(v at A's outer end, v at B's outer end, v at B's inner end,
    v at A's inner end)``.  The merged tree (momentum sum :math:`\rho`) turns when
    :math:`\rho \cdot v_{A,out} \le 0` or :math:`\rho \cdot v_{B,out} \le 0`;
    Stan's extra checks apply the same test to A extended by B's inner state and to
    B extended by A's inner state.  All six dot products come from one matrix
    product.  Returns ``(turning, rho)``.
    """
    # in float64: at 10^6 weights float32 dot products lose the sign of small criteria
    rhos = combination(rows, _F64) @ torch.stack([s.to(torch.float64) for s in sums])
    d = (rhos @ torch.stack([v.to(torch.float64) for v in velocities]).T).tolist()
    return any(d[i][j] <= 0 for i, j in TURNING_PAIRS), rhos[0]


def _build_subtree(
    edge: Leaf,
    step_size: float,
    depth: int,
    potential0: float,
    kinetic0: float,
    generator: torch.Generator,
    potential: Potential,
    metric: Metric,
    max_delta_energy: float,
) -> Subtree:
    """Extend from ``edge`` by :math:`2^{depth}` leapfrog steps of ``step_size``."""
    levels = depth + 1
    # per level k: momentum, velocity, partial momentum sum before the start leaf of the
    # current subtree of size 2**k, and the momentum/velocity of the leaf before it.
    start_p: list = [None] * levels
    start_v: list = [None] * levels
    start_sum: list = [None] * levels
    before_p: list = [None] * levels
    before_v: list = [None] * levels
    momentum_sum = torch.zeros_like(edge.state.momentum, dtype=torch.float64)
    prev_p, prev_v, prev_kinetic = edge.state.momentum, edge.velocity, edge.kinetic
    prev_p64 = prev_p.to(torch.float64)
    current = edge.state
    first = proposal = None
    log_weight, sum_accept = -math.inf, 0.0
    num_leaves = 2**depth
    # the uniforms of the multinomial choices inside this subtree, drawn in one block
    uniforms = torch.rand(
        num_leaves, generator=generator, dtype=torch.float64, device=generator.device
    ).tolist()
    for n in range(num_leaves):
        current = integrate(current, step_size, 1, metric, potential)
        if not current.finite:
            return Subtree(None, None, None, None, log_weight, sum_accept, n + 1, False, True)
        p = current.momentum
        velocity = metric.velocity(p)
        # energies and U-turn products in float64, by the same row-wise products as the
        # batched kernel (so one chain through either gives the same bits)
        p64, v64 = p.to(torch.float64), velocity.to(torch.float64)
        if n % 2:
            # closes a two-leaf subtree [n-1, n] with rho = p_{n-1} + p_n; since M^{-1} is
            # symmetric, p_{n-1}.v_n = p_n.v_{n-1}, so one product gives the kinetic energy
            # and both U-turn dot products (Stan's extra checks coincide at this size).
            pv, cross = torch.stack(((p64 * v64).sum(-1), (prev_p64 * v64).sum(-1))).tolist()
            kinetic = 0.5 * pv
            pair_turning = cross + pv <= 0 or 2.0 * prev_kinetic + cross <= 0
        else:
            kinetic = float(0.5 * (p64 * v64).sum(-1))
            pair_turning = False
        delta = (current.potential - potential0) + (kinetic - kinetic0)
        if not delta <= max_delta_energy:  # also catches NaN
            sum_accept += leaf_acceptance(delta)  # as Stan, divergent leaves too
            return Subtree(None, None, None, None, log_weight, sum_accept, n + 1, False, True)
        leaf = Leaf(current, velocity, kinetic)
        if first is None:
            first = leaf
        sum_accept += leaf_acceptance(delta)
        new_log_weight = log_add(log_weight, -delta)
        if math.log(uniforms[n]) < -delta - new_log_weight:
            proposal = leaf
        log_weight = new_log_weight
        for k in range(levels):
            if n % (1 << k) == 0:
                start_p[k], start_v[k], start_sum[k] = p, velocity, momentum_sum
                before_p[k], before_v[k] = prev_p, prev_v
        momentum_sum = momentum_sum + p
        if pair_turning:
            return Subtree(None, None, None, None, log_weight, sum_accept, n + 1, False, False)
        for k in range(2, levels):
            if (n + 1) % (1 << k):
                break
            # subtree [s, n] of size 2**k with halves [s, mid) and [mid, n]
            turning, _ = _merge_turning(
                SUBTREE_COMBINATION,
                [momentum_sum, start_sum[k], start_sum[k - 1], start_p[k - 1], before_p[k - 1]],
                [start_v[k], velocity, start_v[k - 1], before_v[k - 1]],
            )
            if turning:
                return Subtree(None, None, None, None, log_weight, sum_accept, n + 1, False, False)
        prev_p, prev_v, prev_kinetic, prev_p64 = p, velocity, kinetic, p64
    return Subtree(
        first, leaf, proposal, momentum_sum, log_weight, sum_accept, num_leaves, True, False
    )


def nuts_step(
    state: PotentialValue,
    generator: torch.Generator,
    potential: Potential,
    metric: Metric,
    step_size: float,
    max_tree_depth: int = 10,
    max_delta_energy: float = 1000.0,
) -> tuple[PotentialValue, NUTSInfo]:
    """One NUTS transition from ``state`` (position with cached ``U`` and ``∇U``).

    Returns
    -------
    (state, info)
        The next state and the statistics ``acceptance_rate`` (mean of
        :math:`\\min(1, e^{-\\Delta H})` over all new leaves), ``diverging``,
        ``energy`` (:math:`H` of the sample), ``energy_error``, ``n_steps``,
        ``tree_depth`` and ``reached_max_tree_depth``.
    """
    momentum = metric.sample_momentum(generator)
    velocity = metric.velocity(momentum)
    kinetic0 = float(metric.kinetic_energy(momentum, velocity))
    potential0 = state.potential
    start = IntegratorState(state.position, momentum, potential0, state.grad)
    root = Leaf(start, velocity, kinetic0)
    left = right = sample = root
    momentum_sum = momentum.to(torch.float64)
    log_weight = 0.0
    sum_accept, num_leaves, depth = 0.0, 0, 0
    diverging = False
    while depth < max_tree_depth:
        forward = uniform(generator) < 0.5
        edge, far = (right, left) if forward else (left, right)
        sub = _build_subtree(
            edge,
            step_size if forward else -step_size,
            depth,
            potential0,
            kinetic0,
            generator,
            potential,
            metric,
            max_delta_energy,
        )
        sum_accept += sub.sum_accept
        num_leaves += sub.num_leaves
        if not sub.valid:
            diverging = sub.diverging
            break
        depth += 1
        if math.log(uniform(generator)) < sub.log_weight - log_weight:
            sample = sub.proposal
        log_weight = log_add(log_weight, sub.log_weight)
        turned, momentum_sum = _merge_turning(
            TOP_COMBINATION,
            [momentum_sum, sub.momentum_sum, sub.first.state.momentum, edge.state.momentum],
            [far.velocity, sub.last.velocity, sub.first.velocity, edge.velocity],
        )
        if forward:
            right = sub.last
        else:
            left = sub.last
        if turned:
            break
    chosen = sample.state
    new = PotentialValue(chosen.position, chosen.potential, chosen.grad)
    delta = (chosen.potential - potential0) + (sample.kinetic - kinetic0)
    info = NUTSInfo(
        acceptance_rate=sum_accept / max(num_leaves, 1),
        diverging=diverging,
        energy=chosen.potential + sample.kinetic,
        energy_error=delta,
        n_steps=num_leaves,
        tree_depth=depth,
        reached_max_tree_depth=depth >= max_tree_depth,
    )
    return new, info
