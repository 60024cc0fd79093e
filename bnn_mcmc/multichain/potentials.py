"""How a run is told its potentials: one function, one per chain, or a factory.

A plain function (or a list of them) is shipped to worker processes by
pickling (loky uses cloudpickle, so closures and lambdas work; Dask needs the
same).  When the potential holds something that should not travel — a large
dataset, a CUDA tensor, an open file — wrap a function that *builds* it in
:class:`PotentialFactory`: the factory is called with the chain's device in the
process (and on the device) where the chain runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


class PotentialFactory:
    """Marks ``build(device) -> potential`` as a factory, called where the chain runs.

    Parameters
    ----------
    build
        A picklable callable taking a :class:`torch.device` and returning the
        potential ``U(w) -> scalar tensor`` for positions on that device.

    Examples
    --------
    >>> import torch
    >>> def build(device):
    ...     x = torch.linspace(-1, 1, 40, device=device)
    ...     return lambda w: 0.5 * ((w[0] * x - x) ** 2).sum() + 0.5 * (w ** 2).sum()
    >>> factory = PotentialFactory(build)
    >>> float(factory(torch.device("cpu"))(torch.ones(1)))
    0.5
    """

    def __init__(self, build: Callable[[torch.device], Callable[[Tensor], Tensor]]):
        if not callable(build):
            raise TypeError(f"PotentialFactory needs a callable; got {type(build).__name__}.")
        self.build = build

    def __call__(self, device: torch.device) -> Callable[[Tensor], Tensor]:
        potential = self.build(torch.device(device))
        if not callable(potential):
            raise TypeError(
                "the PotentialFactory's function must return the potential (a callable); got "
                f"{type(potential).__name__}."
            )
        return potential


PotentialSpec = Callable[[Tensor], Tensor] | PotentialFactory


def per_chain_potentials(pot_energy_func, num_chains: int) -> list[PotentialSpec]:
    """One potential (or factory) per chain from a single one or a list."""
    if isinstance(pot_energy_func, Sequence) and not isinstance(pot_energy_func, str):
        if len(pot_energy_func) != num_chains:
            raise ValueError(
                f"pot_energy_func is a list of {len(pot_energy_func)} potentials for "
                f"{num_chains} chains; pass one per chain or a single one."
            )
        specs = list(pot_energy_func)
    else:
        specs = [pot_energy_func] * num_chains
    for i, spec in enumerate(specs):
        if not callable(spec):
            raise TypeError(
                f"pot_energy_func of chain {i} must be callable (w -> scalar tensor) or a "
                f"PotentialFactory; got {type(spec).__name__}."
            )
    return specs


def build_potential(spec: PotentialSpec, device: torch.device) -> Callable[[Tensor], Tensor]:
    """The potential itself: ``spec`` or, for a factory, what it builds on ``device``."""
    return spec(device) if isinstance(spec, PotentialFactory) else spec
