r"""MCMC chain starts drawn from a trained approximation.

A trained :class:`~bnn_mcmc.variational.ImplicitPosterior`, mean field or
:class:`~bnn_mcmc.variational.DeepEnsemble` puts each chain in a region of high posterior
mass, which shortens warm-up, and spreads the chains over the modes the approximation
found (``R-hat`` stays meaningful only if the starts are over-dispersed relative to the
posterior, so prefer ensembles or wide approximations)::

    q = ImplicitPosterior(...); fit_variational(q, ...)
    sampler = MultiChainHMC(starts_from(q, 4, generator=0), potential, chain_type="nuts")
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..checks import check_count
from ..hnets.rng import make_generator
from .ensemble import DeepEnsemble


def starts_from(
    approximation,
    num_chains: int,
    generator: torch.Generator | int | None = None,
    extra: Tensor | None = None,
) -> Tensor:
    """``(num_chains, dim)`` starting positions for :class:`~bnn_mcmc.MultiChainHMC`.

    Parameters
    ----------
    approximation
        Anything with ``sample(n, generator)`` returning ``(n, dim)`` weight draws
        (variational posteriors); a :class:`DeepEnsemble` gives distinct members while
        ``num_chains`` does not exceed its size.
    num_chains : int
        Number of chains.
    generator : torch.Generator or int, optional
        Randomness of the draws (an int is a seed).
    extra : Tensor, optional
        The likelihood's own parameters appended to every start (``(k,)``) or per chain
        (``(num_chains, k)``), for potentials that include them.
    """
    check_count("num_chains", num_chains, 1)
    gen = make_generator(generator)
    if isinstance(approximation, DeepEnsemble) and num_chains <= len(approximation):
        idx = torch.randperm(len(approximation), generator=gen)[:num_chains]
        starts = approximation.members[idx].clone()
    elif callable(getattr(approximation, "sample", None)):
        starts = approximation.sample(num_chains, gen)
    else:
        raise TypeError(
            f"{type(approximation).__name__} has no sample(n, generator); pass a trained "
            "variational posterior or a DeepEnsemble."
        )
    if extra is not None:
        extra = extra.to(starts.dtype)
        if extra.dim() == 1:
            extra = extra.expand(num_chains, -1)
        if extra.shape[0] != num_chains:
            raise ValueError(f"extra must have shape (k,) or ({num_chains}, k).")
        starts = torch.cat([starts, extra], 1)
    return starts.detach()
