r"""A deep ensemble of MAP fits, the non-implicit baseline posterior-like object.

:math:`M` networks are fitted from independent random initialisations to the maximum of
the log posterior (:func:`~bnn_mcmc.optim.map.find_map`); the ensemble is then used as the
uniform mixture of point masses :math:`\frac1M\sum_j \delta_{w_j}` (Lakshminarayanan et
al., 2017; read as a posterior approximation by Wilson & Izmailov, 2020).  It is the
baseline implicit hypernetwork posteriors have to beat.

References
----------
Lakshminarayanan, B., Pritzel, A. and Blundell, C. (2017). Simple and scalable predictive
uncertainty estimation using deep ensembles. *NeurIPS*.
Wilson, A. G. and Izmailov, P. (2020). Bayesian deep learning and a probabilistic
perspective of generalization. *NeurIPS*.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..bnn.likelihoods import Likelihood
from ..bnn.priors import Prior
from ..checks import check_count
from ..diagnostics.region_compare import Cost
from ..hnets.rng import make_generator
from ..optim.map import find_map


@dataclass(frozen=True)
class DeepEnsemble:
    """:math:`M` flat weight vectors used as an equally weighted posterior.

    Attributes
    ----------
    members : Tensor
        ``(M, dim)``.
    cost : Cost
        Wall time and gradient evaluations (members times steps) of the fit.
    """

    members: Tensor
    cost: Cost = Cost()

    def __post_init__(self) -> None:
        if not isinstance(self.members, Tensor) or self.members.dim() != 2:
            raise ValueError("members must be a (M, dim) tensor of flat weight vectors.")

    @property
    def dim(self) -> int:
        """Length of a member."""
        return self.members.shape[1]

    def __len__(self) -> int:
        return self.members.shape[0]

    def sample(self, n: int, generator: torch.Generator | int | None = None) -> Tensor:
        """``n`` members drawn uniformly with replacement, shape ``(n, dim)``.

        For a comparison pass :attr:`members` itself (every member once).
        """
        check_count("n", n, 1)
        gen = make_generator(generator)
        idx = torch.randint(0, len(self), (n,), generator=gen)
        return self.members[idx].clone()


def fit_deep_ensemble(
    net: nn.Module,
    likelihood: Likelihood,
    prior: Prior,
    inputs: Tensor,
    targets: Tensor,
    num_members: int = 10,
    steps: int = 2000,
    optimizer: str = "adam",
    lr: float | None = None,
    generator: torch.Generator | int | None = None,
) -> DeepEnsemble:
    """Fit ``num_members`` MAP networks from independent random initialisations.

    Parameters
    ----------
    net : nn.Module
        The network (not changed).
    likelihood, prior
        The model, as for :func:`~bnn_mcmc.optim.map.find_map`.
    inputs, targets : Tensor
        The training data (full batch).
    num_members : int
        :math:`M`.
    steps, optimizer, lr
        Passed to :func:`~bnn_mcmc.optim.map.find_map`.
    generator : torch.Generator or int, optional
        Randomness of the initialisations.
    """
    check_count("num_members", num_members, 2)
    start = time.perf_counter()
    members = find_map(
        net,
        likelihood,
        prior,
        (inputs, targets),
        optimizer=optimizer,
        steps=steps,
        num_chains=num_members,
        generator=make_generator(generator),
        lr=lr,
    )
    cost = Cost(wall_time_s=time.perf_counter() - start, grad_evals=float(num_members * steps))
    return DeepEnsemble(members=members.detach(), cost=cost)
