r"""What every variational posterior over flat weight vectors provides.

A variational posterior :math:`q_\phi(w)` over the flat weights :math:`w \in \mathbb R^P`
of a network is trained by maximising the evidence lower bound

.. math:: \mathcal L(\phi) = \mathbb E_{q_\phi}[\log p(\mathcal D \mid w)]
          - \mathrm{KL}(q_\phi \,\Vert\, p),

with reparameterised draws :math:`w = g_\phi(\epsilon)` (:meth:`VariationalPosterior.rsample`)
and a KL term whose gradient in :math:`\phi` is right (:meth:`VariationalPosterior.kl_term`).
Trained, :meth:`VariationalPosterior.sample` returns detached ``(n, P)`` draws: the same
container as MCMC draws, for :func:`~bnn_mcmc.bnn.predict` and the comparisons.

References
----------
Blei, D. M., Kucukelbir, A. and McAuliffe, J. D. (2017). Variational inference: a review
for statisticians. *JASA* 112(518), 859-877.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..bnn.priors import Prior
from ..checks import check_count
from ..hnets.rng import make_generator


@dataclass
class KLTerm:
    """A Monte Carlo KL term.

    Attributes
    ----------
    surrogate : Tensor
        Scalar to add to the loss: its gradient in the variational parameters is an
        estimate of :math:`\\nabla_\\phi \\mathrm{KL}(q_\\phi \\Vert p)`.
    estimate : float or None
        An estimate of the value :math:`\\mathrm{KL}(q_\\phi \\Vert p)`, or ``None`` when the
        method only estimates its gradient (SSGE).
    """

    surrogate: Tensor
    estimate: float | None


def check_prior(prior: object, dim: int) -> Prior:
    """``prior`` if it is a :class:`~bnn_mcmc.bnn.Prior` usable on ``dim`` weights."""
    if not isinstance(prior, Prior):
        raise TypeError(f"prior must be a bnn_mcmc.bnn.Prior, got {type(prior).__name__}.")
    if prior.dim is not None and prior.dim != dim:
        raise ValueError(
            f"the prior is defined on {prior.dim} weights but the posterior on {dim}; build "
            "it for this network (e.g. LayerwiseGaussianPrior.from_net(net))."
        )
    return prior


class VariationalPosterior(nn.Module):
    """Base class: a trainable distribution over flat weight vectors of length :attr:`dim`.

    Subclasses implement :meth:`rsample` and :meth:`kl_term`; :meth:`variational_parameters`
    are the parameters the ELBO optimiser updates (auxiliary networks such as an AVB
    discriminator are not among them).
    """

    dim: int

    def rsample(self, n: int, generator: torch.Generator) -> Tensor:
        """``(n, dim)`` reparameterised draws, differentiable in the variational parameters."""
        raise NotImplementedError

    def kl_term(self, w: Tensor, prior: Prior, generator: torch.Generator) -> KLTerm:
        """KL term of the negative ELBO from the reparameterised draws ``w`` (``rsample``)."""
        raise NotImplementedError

    def variational_parameters(self) -> list[nn.Parameter]:
        """The parameters :math:`\\phi` trained by the ELBO."""
        return list(self.parameters())

    def default_num_samples(self) -> int:
        """Draws per ELBO step when :class:`~bnn_mcmc.variational.TrainConfig` leaves
        ``num_samples=None`` (32 here; estimators whose accuracy depends on the dimension
        override it)."""
        return 32

    def auxiliary_state(self) -> dict | None:
        """State outside :meth:`state_dict` that training changes (an AVB discriminator),
        so that :func:`~bnn_mcmc.variational.fit_variational` can restore it with the best
        parameters; ``None`` when there is none."""
        return None

    def load_auxiliary_state(self, state: dict | None) -> None:
        """Restore an :meth:`auxiliary_state`."""

    def auxiliary_loss(self) -> float:
        """Last loss of an auxiliary network (AVB discriminator), ``nan`` if none."""
        return float("nan")

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | int | None = None) -> Tensor:
        """``n`` detached weight draws, shape ``(n, dim)`` -- the container of MCMC draws.

        Parameters
        ----------
        n : int
            Number of draws.
        generator : torch.Generator or int, optional
            Randomness (an int is a seed); ``None`` seeds a fresh generator from the OS.
        """
        check_count("n", n, 1)
        return self.rsample(n, make_generator(generator)).detach()

    def _noise(self, shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
        z = torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device)
        return z.to(like.device)
