r"""Mean-field Gaussian variational posterior (Bayes by backprop), the familiar yardstick.

.. math:: q_\phi(w) = \prod_{j=1}^P \mathcal N(w_j; \mu_j, \sigma_j^2), \qquad
          \sigma_j = \operatorname{softplus}(\rho_j), \qquad
          w = \mu + \sigma \odot \epsilon,\ \epsilon \sim \mathcal N(0, I).

For a Gaussian prior :math:`\mathcal N(m_j, s_j^2)`
(:class:`~bnn_mcmc.bnn.GaussianPrior`, :class:`~bnn_mcmc.bnn.LayerwiseGaussianPrior`) the KL
term is exact,

.. math:: \mathrm{KL}(q \Vert p) = \sum_j \log\frac{s_j}{\sigma_j}
          + \frac{\sigma_j^2 + (\mu_j - m_j)^2}{2 s_j^2} - \frac12 ;

for any other prior it is the Monte Carlo average of :math:`\log q(w) - \log p(w)` over the
draws (``log q`` is known in closed form).  No hypernetwork is involved.

References
----------
Blundell, C., Cornebise, J., Kavukcuoglu, K. and Wierstra, D. (2015). Weight uncertainty
in neural networks. *ICML*.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bnn.priors import GaussianPrior, LayerwiseGaussianPrior, Prior
from ..checks import check_count
from .base import KLTerm, VariationalPosterior, check_prior

_LOG_2PI = math.log(2.0 * math.pi)


def _inv_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


def gaussian_prior_moments(prior: Prior, like: Tensor) -> tuple[Tensor, Tensor] | None:
    """Per-weight prior means and standard deviations of a Gaussian prior, else ``None``."""
    if isinstance(prior, GaussianPrior):
        return like.new_full(like.shape, prior.mean), like.new_full(like.shape, prior.std)
    if isinstance(prior, LayerwiseGaussianPrior):
        stds = torch.cat(
            [like.new_full((math.prod(s),), sd) for sd, s in zip(prior.stds, prior.shapes)]
        )
        return torch.zeros_like(like), stds
    return None


class MeanFieldGaussian(VariationalPosterior):
    """Fully factorised Gaussian over flat weights.

    Parameters
    ----------
    dim : int
        Number of weights :math:`P`.
    init_mean : Tensor, optional
        Initial :math:`\\mu`, shape ``(dim,)`` (e.g. a trained network's flat weights);
        ``None`` starts from zeros.
    init_std : float
        Initial :math:`\\sigma_j` of every weight.

    Attributes
    ----------
    mean : nn.Parameter
        :math:`\\mu`.
    rho : nn.Parameter
        :math:`\\rho`, with :math:`\\sigma = \\operatorname{softplus}(\\rho)`.
    """

    def __init__(self, dim: int, init_mean: Tensor | None = None, init_std: float = 0.05):
        super().__init__()
        self.dim = check_count("dim", dim, 1)
        if not float(init_std) > 0:
            raise ValueError(f"init_std must be positive, got {init_std!r}.")
        if init_mean is None:
            init_mean = torch.zeros(dim)
        elif not isinstance(init_mean, Tensor) or init_mean.shape != (dim,):
            shape = tuple(init_mean.shape) if isinstance(init_mean, Tensor) else init_mean
            raise ValueError(f"init_mean must be a tensor of shape ({dim},), got {shape!r}.")
        self.mean = nn.Parameter(init_mean.detach().clone())
        rho0 = _inv_softplus(torch.tensor(float(init_std), dtype=self.mean.dtype))
        self.rho = nn.Parameter(rho0.expand(dim).clone())

    @property
    def std(self) -> Tensor:
        """:math:`\\sigma = \\operatorname{softplus}(\\rho)`."""
        return F.softplus(self.rho)

    def rsample(self, n: int, generator: torch.Generator) -> Tensor:
        check_count("n", n, 1)
        eps = self._noise((n, self.dim), generator, self.mean)
        return self.mean + self.std * eps

    def log_prob(self, w: Tensor) -> Tensor:
        """:math:`\\log q(w)` for ``w`` of shape ``(..., dim)``, returns ``(...)``."""
        std = self.std
        z = (w - self.mean) / std
        return (-0.5 * z.square() - torch.log(std) - 0.5 * _LOG_2PI).sum(-1)

    def kl_term(self, w: Tensor, prior: Prior, generator: torch.Generator) -> KLTerm:
        """Closed-form KL for Gaussian priors, Monte Carlo over ``w`` otherwise.

        ``generator`` is part of the shared signature and unused here.
        """
        check_prior(prior, self.dim)
        moments = gaussian_prior_moments(prior, self.mean)
        if moments is None:
            kl = (self.log_prob(w) - prior.log_prob(w)).mean()
        else:
            m, s = moments
            var = self.std.square()
            kl = (
                torch.log(s)
                - 0.5 * torch.log(var)
                + (var + (self.mean - m).square()) / (2.0 * s.square())
                - 0.5
            ).sum()
        return KLTerm(surrogate=kl, estimate=float(kl.detach()))
