r"""``MEADS``: generalised HMC over folds of chains, tuned from the other folds, no warmup schedule.

The chains are split into :math:`K` folds (chain :math:`i` in fold :math:`i \bmod K`).
Every iteration visits the folds in turn; fold :math:`k` takes one generalised
HMC step (:mod:`bnn_mcmc.kernels.ghmc`) whose step size, damping and diagonal
preconditioner are computed from the *current* states of all chains outside
fold :math:`k` (:func:`~bnn_mcmc.adaptation.meads.meads_parameters`).  While
fold :math:`k` moves the other chains are fixed, so each fold update leaves the
product target of all chains invariant (a systematic-scan Gibbs sweep), and the
sampler never stops adapting: :meth:`MEADS.warmup` only marks the draws to
discard.  The order of the fold updates is our choice among the valid ones: it
moves every chain at every iteration, at the price of :math:`K` smaller batched
potential calls per iteration; and the acceptance uniforms are drawn afresh
(Horowitz) rather than by the persistent non-reversible slice of Neal (2020) that
Hoffman & Sountsov use.

References
----------
Hoffman, M. D. & Sountsov, P. (2022). Tuning-free generalized Hamiltonian Monte Carlo.
*AISTATS*, PMLR 151, 7799–7813.
Neal, R. M. (2020). Non-reversibly updating a uniform [0, 1] value for Metropolis
accept/reject decisions. arXiv:2001.11950.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..adaptation.meads import meads_parameters
from ..kernels.batched_hmc import BatchedState
from ..kernels.ghmc import ghmc_step
from .ensemble import LockstepEnsemble


class MEADS(LockstepEnsemble):
    """MEADS over a chain axis (positions ``(C, d)``, ``C >= 3``).

    Parameters
    ----------
    initial_positions, pot_energy_func, seed, batched_pot_energy_func
        As for :class:`~bnn_mcmc.multichain.chees.ChEESHMC`.
    num_folds
        :math:`K` (default ``min(4, C // 2)``, at least 2); every fold's complement must
        hold at least 2 chains.
    max_delta_energy
        Energy errors above it are divergences.

    Examples
    --------
    >>> import torch
    >>> s = MEADS(torch.zeros(8, 2) + 0.1 * torch.randn(8, 2), lambda w: 0.5 * (w**2).sum(), seed=0)
    >>> s.warmup(50); s.simulate_chains(20)
    >>> s.samples().shape
    torch.Size([8, 20, 2])
    """

    name = "MEADS"
    minimum_chains = 3

    def __init__(
        self,
        initial_positions: Sequence[Tensor] | Tensor,
        pot_energy_func: Callable[[Tensor], Tensor],
        seed: int | None = None,
        batched_pot_energy_func: Callable[[Tensor], Tensor] | None = None,
        num_folds: int | None = None,
        max_delta_energy: float = 1000.0,
    ):
        super().__init__(initial_positions, pot_energy_func, seed, batched_pot_energy_func)
        c = self.num_chains
        k = max(2, min(4, c // 2)) if num_folds is None else num_folds
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= c:
            raise ValueError(f"num_folds must be an int in [2, {c}]; got {num_folds!r}.")
        folds = [list(range(f, c, k)) for f in range(k)]
        if c - max(len(f) for f in folds) < 2:
            raise ValueError(
                f"MEADS with {c} chains and num_folds={k} leaves fewer than 2 chains outside a "
                "fold to tune it from; use more chains or more folds."
            )
        self.num_folds, self.folds = k, folds
        self.max_delta_energy = float(max_delta_energy)
        self.momentum = torch.zeros_like(self.state.position)

    def warmup(self, num_steps: int, num_chains=-1, num_parallel: int = 1, **ignored) -> None:
        """Run ``num_steps`` transitions stored as warmup (MEADS adapts throughout)."""
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be a non-negative int; got {num_steps!r}.")
        self.require_all_chains(num_chains)
        for _ in range(num_steps):
            self.record_transition(self.transition(warmup=True), self.warmup_trace)
            self.iteration += 1

    def transition(self, warmup: bool) -> dict[str, Tensor]:
        """One lockstep transition of every chain; its per-chain statistics."""
        c = self.num_chains
        f64 = {"dtype": torch.float64}
        stats = {
            "acceptance_rate": torch.zeros(c, **f64),
            "diverging": torch.zeros(c, dtype=torch.bool),
            "energy": torch.zeros(c, **f64),
            "energy_error": torch.zeros(c, **f64),
            "n_steps": torch.ones(c, dtype=torch.int64),
            "step_size": torch.zeros(c, **f64),
            "damping": torch.zeros(c, **f64),
        }
        for fold in self.folds:
            inside = torch.zeros(c, dtype=torch.bool)
            inside[fold] = True
            rest = torch.nonzero(~inside).flatten().to(self.device)
            idx = torch.tensor(fold, device=self.device)
            params = meads_parameters(
                self.state.position[rest], self.state.grad[rest], self.iteration
            )
            sub = BatchedState(
                self.state.position[idx], self.state.potential[idx], self.state.grad[idx]
            )
            tr = ghmc_step(
                sub,
                self.momentum[idx],
                [self.generators[i] for i in fold],
                self.potential,
                params.step_size,
                params.scale,
                params.refresh,
                self.max_delta_energy,
            )
            self.state = BatchedState(
                self.state.position.index_copy(0, idx, tr.state.position),
                self.state.potential.index_copy(0, idx, tr.state.potential),
                self.state.grad.index_copy(0, idx, tr.state.grad),
            )
            self.momentum = self.momentum.index_copy(0, idx, tr.momentum)
            cpu = torch.tensor(fold)
            stats["acceptance_rate"][cpu] = tr.accept_prob.cpu()
            stats["diverging"][cpu] = tr.diverging.cpu()
            stats["energy"][cpu] = tr.energy.cpu()
            stats["energy_error"][cpu] = tr.energy_error.cpu()
            stats["step_size"][cpu] = params.step_size
            stats["damping"][cpu] = params.damping
        return stats

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue bit for bit (tensors and numbers only)."""
        state = self.base_state_dict()
        state.update(momentum=self.momentum, num_folds=self.num_folds)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        if int(state["num_folds"]) != self.num_folds:
            raise ValueError(
                f"the checkpoint has num_folds={state['num_folds']}; this sampler {self.num_folds}."
            )
        self.load_base_state_dict(state)
        self.momentum = state["momentum"]

    def save(self, path: str | Path) -> None:
        """Write :meth:`state_dict` to ``path``."""
        torch.save(self.state_dict(), Path(path))

    def load(self, path: str | Path) -> None:
        """Continue from a file written by :meth:`save`."""
        self.load_state_dict(torch.load(Path(path), weights_only=True))
