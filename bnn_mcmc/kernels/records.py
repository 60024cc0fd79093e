r"""Typed records that the kernels exchange with the drivers: chain states and statistics.

A kernel is a pure step ``(state, ...) -> (state, info)``.  The state of many chains
is a :class:`ChainState` with a leading chain axis (one chain is ``C = 1``); the
single-chain specialisations of the kernels use its row view
:class:`~bnn_mcmc.kernels.potential.PotentialValue`.  The statistics of one
transition of one chain are one of the ``*Info`` records below, whatever kernel
produced them (the chain-axis kernels return one record per chain), so a driver
reads ``info.acceptance_rate`` the same way for every algorithm, and the draw
store and the ArviZ export take their field names from :meth:`stats`.

Field meanings follow Stan and BlackJAX: ``acceptance_rate`` is the Metropolis
acceptance probability :math:`\min(1, e^{-\Delta H})` (for NUTS its mean over the
new leaves of the tree), ``energy`` the Hamiltonian :math:`H = U + K` of the sample,
``energy_error`` :math:`\Delta H` of the sample against the start (``inf`` when the
proposal failed), ``n_steps`` the gradient (HMC, NUTS) or potential (MH)
evaluations of the transition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .potential import PotentialValue


@dataclass
class ChainState:
    """Points of ``C`` chains: positions ``(C, d)``, potentials ``(C,)``, gradients ``(C, d)``.

    Potentials are float64 with ``inf`` where an evaluation failed (that chain's
    gradient row is then meaningless and never used).
    """

    position: Tensor
    potential: Tensor
    grad: Tensor

    @property
    def num_chains(self) -> int:
        """``C``, the length of the chain axis."""
        return self.position.shape[0]

    def row(self, chain: int) -> PotentialValue:
        """Chain ``chain`` as the single-chain kernels' :class:`PotentialValue` (a view)."""
        value = float(self.potential[chain])
        grad = self.grad[chain] if math.isfinite(value) else None
        return PotentialValue(self.position[chain], value, grad)

    @classmethod
    def stack(cls, values: Sequence[PotentialValue]) -> ChainState:
        """The chain-axis state of single-chain points (a missing gradient becomes zeros)."""
        positions = torch.stack([v.position for v in values])
        grads = torch.stack(
            [torch.zeros_like(v.position) if v.grad is None else v.grad for v in values]
        )
        potentials = torch.tensor(
            [v.potential for v in values], dtype=torch.float64, device=positions.device
        )
        return cls(positions, potentials, grads)


class TransitionInfo(NamedTuple):
    """Fields every kernel reports (the minimum a driver needs)."""

    acceptance_rate: float
    diverging: bool
    n_steps: int


class HMCInfo(NamedTuple):
    """Statistics of one HMC transition of one chain."""

    acceptance_rate: float
    accepted: bool
    diverging: bool
    energy: float
    energy_error: float
    n_steps: int


class NUTSInfo(NamedTuple):
    """Statistics of one NUTS transition of one chain (``tree_depth`` = doublings kept)."""

    acceptance_rate: float
    diverging: bool
    energy: float
    energy_error: float
    n_steps: int
    tree_depth: int
    reached_max_tree_depth: bool


class MHInfo(NamedTuple):
    """Statistics of one random-walk Metropolis transition (``n_steps`` = 1 evaluation of U)."""

    acceptance_rate: float
    accepted: bool
    diverging: bool
    n_steps: int


#: Any of the per-chain statistics records.
Info = HMCInfo | NUTSInfo | MHInfo


def info_stats(info: Info, lp: float, step_size: float) -> dict[str, float | int | bool]:
    """The values a draw store keeps for one transition: the record's fields, ``lp``, step."""
    stats: dict[str, float | int | bool] = info._asdict()
    stats["lp"] = lp
    stats["step_size"] = step_size
    return stats
