r"""What the lockstep ensemble samplers (ChEES-HMC, MEADS) share: chains as one ``(C, d)`` state.

Unlike :class:`~bnn_mcmc.multichain.MultiChainHMC`, whose chains are independent
single-chain samplers, these samplers tune their parameters *across* chains, so
the chains live in one object: positions ``(C, d)``, one batched potential
``U(W) -> (C,)`` evaluated once per leapfrog step for all chains, one
``torch.Generator`` per chain (seeded by :func:`~bnn_mcmc.multichain.chain_seeds`).
:class:`ChainView` exposes each chain with the read-outs of a single-chain
sampler (``samples()``, ``stats``, ``warmup_trajectory``, ``warmup_stats``), so
:func:`bnn_mcmc.to_inference_data` and :func:`bnn_mcmc.diagnostics.summary`
work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..kernels.batched_hmc import BatchedPotential, BatchedState, vmap_potential
from .seeds import chain_seeds


def stack_positions(
    initial_positions: Sequence[Tensor] | Tensor, minimum: int, name: str
) -> Tensor:
    """The starts as one ``(C, d)`` tensor; raises ValueError for fewer than ``minimum`` chains."""
    if isinstance(initial_positions, Tensor):
        positions = initial_positions
    else:
        rows = list(initial_positions)
        if not rows or not all(isinstance(r, Tensor) for r in rows):
            raise ValueError(
                "initial_positions must be a (chains, dim) tensor or a list of tensors."
            )
        positions = torch.stack([r.reshape(-1) for r in rows])
    if positions.ndim != 2:
        raise ValueError(
            f"initial_positions must have shape (chains, dim); got {tuple(positions.shape)}."
        )
    if positions.shape[0] < minimum:
        raise ValueError(
            f"{name} tunes its parameters across chains and needs at least {minimum} chains; "
            f"got {positions.shape[0]}: pass more initial_positions (e.g. 4 or more), or use "
            "chain_type='nuts' for a single chain."
        )
    if not torch.is_floating_point(positions) or not bool(torch.isfinite(positions).all()):
        raise ValueError("initial_positions must be finite floating-point tensors.")
    return positions.detach().clone()


def batched_function(
    pot_energy_func: Callable[[Tensor], Tensor],
    batched_pot_energy_func: Callable[[Tensor], Tensor] | None,
    positions: Tensor,
) -> Callable[[Tensor], Tensor]:
    """``U(W) -> (C,)``: the batched function given, the potential itself when it
    accepts batches (``accepts_batches``, as :func:`bnn_mcmc.bnn.nn_pot_energy`'s), or
    :func:`torch.func.vmap` of it.  Checked once on ``positions``.

    Raises
    ------
    ValueError
        When the result cannot be evaluated on a ``(C, d)`` batch or has the wrong shape.
    """
    if batched_pot_energy_func is not None:
        func = batched_pot_energy_func
    elif not callable(pot_energy_func):
        raise TypeError(
            f"pot_energy_func must be callable (w -> scalar); got {type(pot_energy_func).__name__}."
        )
    elif getattr(pot_energy_func, "accepts_batches", False):
        func = pot_energy_func
    else:
        func = vmap_potential(pot_energy_func)
    try:
        with torch.no_grad():
            value = func(positions)
    except Exception as err:  # noqa: BLE001 - reported with the fix
        raise ValueError(
            "the potential could not be evaluated on a (chains, dim) batch "
            f"({type(err).__name__}: {err}); pass batched_pot_energy_func (U(W) -> (chains,)) "
            "or a potential torch.func.vmap can batch (no .item(), no in-place ops on w)."
        ) from err
    if not isinstance(value, Tensor) or tuple(value.shape) != (positions.shape[0],):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"the batched potential must return shape ({positions.shape[0]},) for positions of "
            f"shape {tuple(positions.shape)}; got {shape}."
        )
    return func


@dataclass
class Trace:
    """Draws ``(C, d)`` and per-transition statistics ``(C,)`` appended step by step."""

    draws: list[Tensor] = field(default_factory=list)
    stats: dict[str, list[Tensor]] = field(default_factory=dict)

    def append(self, positions: Tensor, stats: dict[str, Tensor]) -> None:
        """Store one transition of every chain (copied to CPU)."""
        self.draws.append(positions.detach().to("cpu", copy=True))
        for k, v in stats.items():
            self.stats.setdefault(k, []).append(v.detach().to("cpu", copy=True))

    def chain_draws(self, c: int, dim: int, dtype: torch.dtype) -> Tensor:
        """Chain ``c``'s draws ``(n, d)``."""
        if not self.draws:
            return torch.empty((0, dim), dtype=dtype)
        return torch.stack([d[c] for d in self.draws])

    def chain_stats(self, c: int) -> dict[str, Tensor]:
        """Chain ``c``'s statistics, each ``(n,)``."""
        return {k: torch.stack([v[c] for v in vs]) for k, vs in self.stats.items()}

    def state_dict(self) -> dict:
        """Tensors only (``torch.load(weights_only=True)`` reads it back)."""
        return {
            "draws": torch.stack(self.draws) if self.draws else torch.empty(0),
            "stats": {k: torch.stack(v) for k, v in self.stats.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> Trace:
        """Inverse of :meth:`state_dict`."""
        draws = list(state["draws"].unbind(0)) if state["draws"].numel() else []
        return cls(draws, {k: list(v.unbind(0)) for k, v in state["stats"].items()})


class ChainView:
    """One chain of an ensemble, read like a single-chain sampler."""

    def __init__(self, ensemble: LockstepEnsemble, index: int):
        self._ensemble, self.index = ensemble, index

    def samples(self) -> Tensor:
        """The chain's draws after warmup, ``(n, d)``."""
        e = self._ensemble
        return e.trace.chain_draws(self.index, e.dim, e.dtype)

    @property
    def stats(self) -> dict[str, Tensor]:
        """Per-transition statistics after warmup."""
        return self._ensemble.trace.chain_stats(self.index)

    @property
    def warmup_trajectory(self) -> Tensor:
        """The chain's warmup draws, ``(n, d)``."""
        e = self._ensemble
        return e.warmup_trace.chain_draws(self.index, e.dim, e.dtype)

    @property
    def warmup_stats(self) -> dict[str, Tensor]:
        """Per-transition statistics of the warmup."""
        return self._ensemble.warmup_trace.chain_stats(self.index)

    @property
    def num_states(self) -> int:
        """Stored draws after warmup."""
        return len(self._ensemble.trace.draws)

    @property
    def num_grad_evals(self) -> int:
        """Gradient evaluations of this chain."""
        return int(self._ensemble.grad_evals[self.index])

    @property
    def acceptance_probability(self) -> float:
        """Mean acceptance probability after warmup."""
        stats = self.stats
        if "acceptance_rate" not in stats:
            return float("nan")
        return float(stats["acceptance_rate"].mean())


class LockstepEnsemble:
    """State, seeds, storage and read-outs common to ChEES-HMC and MEADS.

    Subclasses implement ``transition(warmup: bool) -> dict[str, Tensor]`` that moves
    :attr:`state` and returns the statistics of the transition (each ``(C,)``).
    """

    name = "ensemble"
    minimum_chains = 2

    def __init__(
        self,
        initial_positions: Sequence[Tensor] | Tensor,
        pot_energy_func: Callable[[Tensor], Tensor],
        seed: int | None = None,
        batched_pot_energy_func: Callable[[Tensor], Tensor] | None = None,
    ):
        positions = stack_positions(initial_positions, self.minimum_chains, self.name)
        self.num_chains, self.dim = positions.shape
        self.dtype, self.device = positions.dtype, positions.device
        self.seed, self.seeds = chain_seeds(seed, self.num_chains)
        self.generators = []
        for s in self.seeds:
            g = torch.Generator(device=self.device)
            g.manual_seed(s)
            self.generators.append(g)
        self.potential = BatchedPotential(
            batched_function(pot_energy_func, batched_pot_energy_func, positions)
        )
        u, g = self.potential.value_and_grad(positions)
        if not bool(torch.isfinite(u).all()):
            bad = torch.nonzero(~torch.isfinite(u)).flatten().tolist()
            raise ValueError(
                f"the potential is not finite at the initial positions of chains {bad}; "
                "start the chains where U(w) is finite."
            )
        self.state = BatchedState(positions, u, g)
        self.grad_evals = torch.ones(self.num_chains, dtype=torch.int64)
        self.trace, self.warmup_trace = Trace(), Trace()
        self.iteration = 0
        self.chains = [ChainView(self, i) for i in range(self.num_chains)]

    # ---------------------------------------------------------------- running
    def transition(self, warmup: bool) -> dict[str, Tensor]:
        """Move every chain once (adapting when ``warmup``); the statistics, each ``(C,)``."""
        raise NotImplementedError

    def record_transition(self, stats: dict[str, Tensor], store: Trace) -> None:
        """Add ``lp``, count the gradients and store the state and ``stats`` in ``store``."""
        stats["lp"] = -self.state.potential
        self.grad_evals += stats["n_steps"].to(torch.int64).cpu()
        store.append(self.state.position, stats)

    def simulate_chains(self, num_states: int, num_chains=-1, num_parallel: int = 1) -> None:
        """Add ``num_states`` transitions to every chain (``num_chains`` must be -1:
        the chains move together)."""
        if isinstance(num_states, bool) or not isinstance(num_states, int) or num_states < 0:
            raise ValueError(f"num_states must be a non-negative int; got {num_states!r}.")
        self.require_all_chains(num_chains)
        for _ in range(num_states):
            self.record_transition(self.transition(warmup=False), self.trace)
            self.iteration += 1

    def require_all_chains(self, num_chains) -> None:
        """Raise ValueError unless ``num_chains`` selects every chain (-1 or all indices)."""
        if num_chains == -1:
            return
        if isinstance(num_chains, Sequence) and not isinstance(num_chains, str):
            if sorted(num_chains) == list(range(self.num_chains)):
                return
        raise ValueError(
            "the chains of a lockstep ensemble move together; pass num_chains=-1 (all); got "
            f"{num_chains!r}."
        )

    # -------------------------------------------------------------- read-outs
    @property
    def num_grad_evals(self) -> int:
        """Gradient evaluations of all chains together."""
        return int(self.grad_evals.sum())

    def samples(self) -> Tensor:
        """Draws after warmup, ``(chains, draws, dim)``."""
        return torch.stack([c.samples() for c in self.chains])

    @property
    def avg_acceptance_probability(self) -> float:
        """Mean acceptance probability of all chains after warmup."""
        return sum(c.acceptance_probability for c in self.chains) / self.num_chains

    def to_inference_data(self, **kwargs):
        """All chains as ArviZ ``InferenceData``; see :func:`bnn_mcmc.to_inference_data`."""
        from ..diagnostics.inference_data import to_inference_data

        return to_inference_data(self, **kwargs)

    def summary(self, **kwargs):
        """Convergence report; see :func:`bnn_mcmc.diagnostics.summary`."""
        from ..diagnostics.summary import summary

        return summary(self, **kwargs)

    # ------------------------------------------------------------ checkpoints
    def base_state_dict(self) -> dict:
        """State, generators, counters and draws (what every ensemble checkpoints)."""
        return {
            "position": self.state.position,
            "potential": self.state.potential,
            "grad": self.state.grad,
            "generators": [g.get_state() for g in self.generators],
            "grad_evals": self.grad_evals,
            "trace": self.trace.state_dict(),
            "warmup_trace": self.warmup_trace.state_dict(),
            "iteration": self.iteration,
            "seed": self.seed,
        }

    def load_base_state_dict(self, state: dict) -> None:
        """Restore :meth:`base_state_dict`."""
        self.state = BatchedState(state["position"], state["potential"], state["grad"])
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s)
        self.grad_evals = state["grad_evals"].clone()
        self.trace = Trace.from_state_dict(state["trace"])
        self.warmup_trace = Trace.from_state_dict(state["warmup_trace"])
        self.iteration = int(state["iteration"])
