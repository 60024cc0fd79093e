"""The vectorised backend: all selected chains advance together through one batched potential.

Each lockstep transition stacks the chains' positions into ``(chains, dim)``,
runs the batched kernel (:mod:`bnn_mcmc.kernels.batched_hmc` or
:mod:`bnn_mcmc.kernels.batched_nuts`) and hands each chain its new state and
statistics, which the chain stores, counts, adapts on (during warmup) and
checkpoints exactly as after one of its own transitions.  Chains therefore
stay ordinary single-chain samplers: they can be continued by any backend.
The step-size searches of warmup (at its start and after each closed window) run
for all chains together too (:func:`search_in_lockstep`), and dense metrics
stack into one row-wise batched product.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..adaptation.step_size import search_step_sizes
from ..kernels.batched_hmc import BatchedPotential, BatchedState, batched_hmc_step
from ..kernels.batched_nuts import batched_nuts_step
from ..kernels.potential import PotentialValue
from ..samplers import HMC, NUTS, Sampler


def check_vectorizable(chains: Sequence[Sampler]) -> None:
    """Raise ValueError unless the chains can share lockstep transitions."""
    first = chains[0]
    if not isinstance(first, (HMC, NUTS)):
        raise ValueError(
            "the vectorized backend runs chain_type 'hmc' or 'nuts'; use the 'sequential' "
            "or 'joblib' backend for Metropolis-Hastings."
        )
    for c in chains:
        if type(c) is not type(first) or c.state.position.device != first.state.position.device:
            raise ValueError(
                "the vectorized backend needs chains of one type on one device; use "
                "devices=None or another backend."
            )
        if isinstance(c, HMC) and c.num_steps != first.num_steps:
            raise ValueError("the vectorized backend needs the same num_steps for every chain.")
        if isinstance(c, NUTS) and c.max_tree_depth != first.max_tree_depth:
            raise ValueError("the vectorized backend needs one max_tree_depth for every chain.")
        if c.delta_max != first.delta_max:
            raise ValueError(
                "the vectorized backend needs one delta_max for every chain; got "
                f"{c.delta_max} and {first.delta_max}."
            )


def check_batched_potential(func: Callable[[Tensor], Tensor], chains: Sequence[Sampler]) -> None:
    """One comparison of ``batched_pot_energy_func`` with each chain's own potential.

    The batched potential and its gradient are evaluated once at the chains'
    current positions and compared with the :math:`U` and :math:`\nabla U`
    each chain holds there (from its 1-D potential), within ``1e-4`` relative
    for float32 and ``1e-8`` for float64.  A batched function that computes
    something else would otherwise sample another distribution without
    notice.  The evaluation is counted in each chain's ``num_grad_evals``.
    """
    positions = torch.stack([c.position for c in chains]).requires_grad_(True)
    values = func(positions)
    if not isinstance(values, Tensor) or tuple(values.shape) != (len(chains),):
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(
            f"batched_pot_energy_func must return a ({len(chains)},) tensor for a "
            f"({len(chains)}, dim) batch; got {shape}."
        )
    (grads,) = torch.autograd.grad(values.sum(), positions)
    rtol = 1e-8 if positions.dtype == torch.float64 else 1e-4
    for k, c in enumerate(chains):
        c.count_grad_evals(1)
        u, v = c.potential_energy, float(values[k])
        grad = c.state.grad
        same_u = abs(v - u) <= rtol * (1.0 + abs(u)) or (v != v and u != u)
        same_grad = grad is None or bool(
            torch.allclose(grads[k].detach(), grad, rtol=rtol, atol=rtol, equal_nan=True)
        )
        if not (same_u and same_grad):
            what = f"U = {u:.8g} from the 1-D potential and {v:.8g} from the batched one"
            if same_u:
                what = "the same U but different gradients"
            raise ValueError(
                f"batched_pot_energy_func disagrees with the single-chain potential: chain {k} "
                f"has {what} at its position. Both must compute the same U; fix the batched "
                "function (or omit it: the 1-D potential is then batched with torch.func.vmap)."
            )


def _lockstep(chains: Sequence[Sampler], potential: BatchedPotential) -> None:
    """One transition of every chain in ``chains`` (all in the same phase)."""
    steps = [c.next_step_size() for c in chains]
    state = BatchedState(
        torch.stack([c.state.position for c in chains]),
        torch.tensor([c.state.potential for c in chains], dtype=torch.float64),
        torch.stack([c.state.grad for c in chains]),
    )
    state.potential = state.potential.to(state.position.device)
    generators = [c.generator for c in chains]
    metrics = [c.metric for c in chains]
    first = chains[0]
    if isinstance(first, HMC):
        new, infos = batched_hmc_step(
            state, generators, metrics, potential, steps, first.num_steps, first.delta_max
        )
    else:
        new, infos = batched_nuts_step(
            state,
            generators,
            metrics,
            potential,
            steps,
            first.max_tree_depth,
            first.delta_max,
        )
    potentials = new.potential.tolist()
    restarting = []
    for i, (c, info) in enumerate(zip(chains, infos)):
        point = PotentialValue(new.position[i], potentials[i], new.grad[i])
        if c.complete_transition(point, info, steps[i], info.n_steps, restart=False):
            restarting.append(c)
    if restarting:  # windows closed: one batched step-size search for those chains
        current = [c.current_step_size for c in restarting]
        for c, step in zip(restarting, search_in_lockstep(restarting, potential, current)):
            c.restart_warmup(step)


def search_in_lockstep(
    chains: Sequence[Sampler], potential: BatchedPotential, step_sizes: Sequence[float]
) -> list[float]:
    """Hoffman & Gelman's step-size search for every chain at once, from ``step_sizes``.

    Each chain draws its momentum from its own generator (as its own search would);
    the trial steps of all chains share batched evaluations, and each evaluation is
    counted in the chain's ``num_grad_evals``.
    """
    before = list(potential.row_evals) + [0] * max(0, len(chains) - len(potential.row_evals))
    found = search_step_sizes(
        torch.stack([c.state.position for c in chains]),
        torch.tensor(
            [c.state.potential for c in chains],
            dtype=torch.float64,
            device=chains[0].state.position.device,
        ),
        torch.stack([c.state.grad for c in chains]),
        [c.metric for c in chains],
        [c.generator for c in chains],
        potential,
        step_sizes,
    )
    for i, c in enumerate(chains):
        c.count_grad_evals(potential.row_evals[i] - before[i])
    return found


def run_vectorized(chains: Sequence[Sampler], batched_func: Callable[[Tensor], Tensor]) -> None:
    """Finish every chain's recorded warmup, then its pending transitions, in lockstep."""
    check_vectorizable(chains)
    potential = BatchedPotential(batched_func)
    for phase in ("warmup", "sampling"):
        started = [c for c in chains if c.phase == phase]
        bars = {id(c): c.progress_bar(c.pending_transitions, phase) for c in started}
        while active := [c for c in started if c.phase == phase]:
            _lockstep(active, potential)
            for c in active:
                if bars[id(c)] is not None:
                    bars[id(c)].update()
        for c in chains:
            if phase == "sampling" or c.warmup_pending:
                c.finish_phase()
            if bars.get(id(c)) is not None:
                bars[id(c)].close()
