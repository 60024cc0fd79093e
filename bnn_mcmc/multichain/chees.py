r"""``ChEESHMC``: many chains of HMC in lockstep whose trajectory length is learned across chains.

Warmup adapts, from all chains at once, the step size (dual averaging of the
harmonic-mean acceptance towards 0.651), the trajectory length :math:`T`
(Adam on :math:`\log T` along the ChEES criterion) and a diagonal mass matrix
(:mod:`bnn_mcmc.adaptation.chees`).  Transition :math:`t` integrates for the
jittered length :math:`u_t T`, :math:`u_t` the van der Corput point, with the
same number of leapfrog steps for every chain (:mod:`bnn_mcmc.kernels.chees`).
After warmup every parameter is frozen and each transition is exact HMC.

References
----------
Hoffman, M. D., Radul, A. & Sountsov, P. (2021). An adaptive-MCMC scheme for setting
trajectory lengths in Hamiltonian Monte Carlo. *AISTATS*, PMLR 130, 3907–3915.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..adaptation import reasonable_step_size
from ..adaptation.chees import (
    CHEES_TARGET_ACCEPT,
    ChEESOptions,
    ChEESParameters,
    ChEESState,
    chees_final,
    chees_init,
    chees_length,
    chees_step_size,
    chees_update,
)
from ..kernels.chees import halton, lockstep_hmc_step, num_leapfrog_steps
from .ensemble import LockstepEnsemble


class ChEESHMC(LockstepEnsemble):
    """ChEES-HMC over a chain axis (positions ``(C, d)``, ``C >= 2``).

    Parameters
    ----------
    initial_positions
        ``(chains, dim)`` tensor or a list of 1-D tensors.
    pot_energy_func
        ``U(w) -> scalar``; batched by :func:`torch.func.vmap` unless it accepts
        ``(C, d)`` batches (``accepts_batches``) or ``batched_pot_energy_func`` is given.
    seed
        Root seed; chain ``i`` gets its own generator (:func:`~bnn_mcmc.multichain.chain_seeds`).
    batched_pot_energy_func
        ``U(W) -> (C,)``.
    stepsize
        Initial step size (default: the search of Hoffman & Gelman from 0.1).
    trajectory_length
        Initial :math:`T` (default: one step).
    inv_mass
        Initial diagonal inverse mass ``(d,)`` or a scalar (default 1).
    max_steps
        Cap on the leapfrog steps of one transition.
    max_delta_energy
        Energy errors above it are divergences.
    acceptance_mean
        ``'harmonic'`` (default) or ``'arithmetic'``: the chains' acceptance statistic.
    learning_rate
        Adam's learning rate on :math:`\\log T`.

    Examples
    --------
    >>> import torch
    >>> s = ChEESHMC(torch.zeros(4, 2), lambda w: 0.5 * (w ** 2).sum(), seed=1)
    >>> s.warmup(100); s.simulate_chains(50)
    >>> s.samples().shape
    torch.Size([4, 50, 2])
    """

    name = "ChEES-HMC"

    def __init__(
        self,
        initial_positions: Sequence[Tensor] | Tensor,
        pot_energy_func: Callable[[Tensor], Tensor],
        seed: int | None = None,
        batched_pot_energy_func: Callable[[Tensor], Tensor] | None = None,
        stepsize: float | None = None,
        trajectory_length: float | None = None,
        inv_mass: float | Tensor | None = None,
        max_steps: int = 1000,
        max_delta_energy: float = 1000.0,
        acceptance_mean: str = "harmonic",
        learning_rate: float = 0.025,
    ):
        super().__init__(initial_positions, pot_energy_func, seed, batched_pot_energy_func)
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive int; got {max_steps!r}.")
        if acceptance_mean not in ("harmonic", "arithmetic"):
            raise ValueError(
                f"acceptance_mean must be 'harmonic' or 'arithmetic'; got {acceptance_mean!r}."
            )
        self.max_steps, self.max_delta_energy = max_steps, float(max_delta_energy)
        self.acceptance_mean, self.learning_rate = acceptance_mean, float(learning_rate)
        if inv_mass is None:
            inv_mass = 1.0
        inv = torch.as_tensor(inv_mass, dtype=self.dtype, device=self.device)
        inv = inv.expand(self.dim).clone() if inv.ndim == 0 else inv.clone()
        if inv.shape != (self.dim,) or not bool((inv > 0).all()):
            raise ValueError(
                f"inv_mass must be a positive scalar or a positive vector of length {self.dim}."
            )
        self.step_size = float(stepsize) if stepsize is not None else None
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"stepsize must be positive; got {stepsize}.")
        self.trajectory_length = float(trajectory_length) if trajectory_length else None
        self.inv_mass = inv
        self.adaptation: ChEESState | None = None

    # ---------------------------------------------------------------- warmup
    def _search_step_size(self, start: float) -> float:
        """Hoffman & Gelman's doubling search on the mean one-step acceptance of all chains."""
        gens = []
        for s in self.seeds:
            g = torch.Generator(device=self.device)
            g.manual_seed((s + 1) % (2**63))
            gens.append(g)
        states = [g.get_state() for g in gens]

        def log_accept(eps: float) -> float:
            for g, st in zip(gens, states):
                g.set_state(st)
            tr = lockstep_hmc_step(
                self.state, gens, self.inv_mass, self.potential, eps, 1, self.max_delta_energy
            )
            mean = float(tr.accept_prob.mean())
            return math.log(mean) if mean > 0 else -math.inf

        return reasonable_step_size(log_accept, start)

    def warmup(
        self,
        num_steps: int,
        target_accept: float | None = None,
        adapt_mass: str | None = "diag",
        adapt_step_size: bool = True,
        num_chains=-1,
        num_parallel: int = 1,
    ) -> None:
        """Adapt step size, trajectory length and (``adapt_mass='diag'``) the diagonal mass.

        Raises
        ------
        ValueError
            For ``adapt_mass='dense'`` (ChEES adapts a diagonal mass here) or a bad count.
        """
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int; got {num_steps!r}.")
        if adapt_mass not in (None, "diag", "none"):
            raise ValueError(
                f"ChEES-HMC adapts a diagonal mass matrix: adapt_mass must be 'diag' or None; "
                f"got {adapt_mass!r}."
            )
        if not adapt_step_size:
            raise ValueError("ChEES-HMC always adapts the step size; adapt_step_size=False.")
        self.require_all_chains(num_chains)
        options = ChEESOptions(
            target_accept=CHEES_TARGET_ACCEPT if target_accept is None else float(target_accept),
            learning_rate=self.learning_rate,
            max_steps=self.max_steps,
            acceptance_mean=self.acceptance_mean,
            adapt_mass=adapt_mass == "diag",
        )
        step = self.step_size if self.step_size is not None else self._search_step_size(0.1)
        self.adaptation = chees_init(
            step, self.inv_mass, self.state.position, num_steps, self.trajectory_length, options
        )
        for _ in range(num_steps):
            self.record_transition(self.transition(warmup=True), self.warmup_trace)
            self.iteration += 1
        final = chees_final(self.adaptation)
        self.step_size, self.trajectory_length = final.step_size, final.trajectory_length
        self.inv_mass = final.inv_mass
        self.adaptation = None

    @property
    def parameters(self) -> ChEESParameters:
        """Step size, trajectory length and inverse mass now in use."""
        if self.adaptation is not None:
            a = self.adaptation
            return ChEESParameters(chees_step_size(a), chees_length(a), a.inv_mass)
        return ChEESParameters(self.step_size, self.trajectory_length, self.inv_mass)

    # --------------------------------------------------------------- running
    def transition(self, warmup: bool) -> dict[str, Tensor]:
        """One lockstep transition of every chain; its per-chain statistics."""
        if warmup:
            eps, length, inv_mass = self.parameters
        else:
            if self.step_size is None or self.trajectory_length is None:
                raise RuntimeError(
                    "ChEES-HMC has no step size and trajectory length yet; run warmup() first "
                    "or pass stepsize and trajectory_length."
                )
            eps, length, inv_mass = self.step_size, self.trajectory_length, self.inv_mass
        jittered = halton(self.iteration + 1) * length
        n = num_leapfrog_steps(jittered, eps, self.max_steps)
        before = self.state.position
        tr = lockstep_hmc_step(
            self.state, self.generators, inv_mass, self.potential, eps, n, self.max_delta_energy
        )
        self.state = tr.state
        if warmup:
            self.adaptation = chees_update(
                self.adaptation,
                before,
                tr.proposal,
                tr.velocity,
                tr.accept_prob,
                tr.diverging,
                min(jittered, n * eps),  # the length integrated (n may be capped)
                tr.state.position,
            )
        c = self.num_chains
        return {
            "acceptance_rate": tr.accept_prob,
            "diverging": tr.diverging,
            "energy": tr.energy,
            "energy_error": tr.energy_error,
            "n_steps": torch.full((c,), n, dtype=torch.int64),
            "step_size": torch.full((c,), eps, dtype=torch.float64),
            "trajectory_length": torch.full((c,), jittered, dtype=torch.float64),
        }

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue bit for bit (tensors and numbers only)."""
        if self.adaptation is not None:
            raise RuntimeError("checkpoint ChEES-HMC between calls, not during warmup.")
        state = self.base_state_dict()
        state.update(
            step_size=self.step_size,
            trajectory_length=self.trajectory_length,
            inv_mass=self.inv_mass,
        )
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.load_base_state_dict(state)
        self.step_size, self.trajectory_length = state["step_size"], state["trajectory_length"]
        self.inv_mass = state["inv_mass"]

    def save(self, path: str | Path) -> None:
        """Write :meth:`state_dict` to ``path`` (``torch.load(weights_only=True)`` reads it)."""
        torch.save(self.state_dict(), Path(path))

    def load(self, path: str | Path) -> None:
        """Continue from a file written by :meth:`save`."""
        self.load_state_dict(torch.load(Path(path), weights_only=True))
