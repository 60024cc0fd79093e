r"""An estimate of the evidence lower bound itself, for logging and comparison.

The training losses do not always estimate the negative ELBO: SSGE supplies only the
*gradient* of the entropy, so its loss is the data term plus the cross-entropy
:math:`-\mathbb E_q \log p(w)` (no entropy), and an AVB loss is an ELBO only while its
discriminator is near the log density ratio.  :func:`elbo_estimate` returns

``kind='exact KL'`` (mean field)
    :math:`\frac1S\sum_s \log p(\mathcal D \mid w_s) - \mathrm{KL}(q \Vert p)` with the
    closed-form (or Monte Carlo with the known density) KL;
``kind='semi-implicit bound'`` (implicit posterior with Gaussian output perturbation)
    for :math:`q(w) = \mathbb E_u\,\mathcal N(w; m(u), \sigma^2 I)`, draws
    :math:`w_s \sim \mathcal N(m(u_{s0}), \sigma^2 I)` and :math:`K` further
    :math:`u_{s1..sK}`,

    .. math:: \mathcal L_K = \frac1S\sum_s \Big[\log p(\mathcal D, w_s)
              - \log\frac{1}{K+1}\sum_{k=0}^{K} \mathcal N(w_s; m(u_{sk}), \sigma^2 I)\Big],

    whose expectation is a lower bound on the ELBO that increases to it as
    :math:`K \to \infty` (Yin & Zhou, 2018; Molchanov et al., 2019);
``kind='unavailable'``
    otherwise (``value`` is ``nan``): a hypernetwork without perturbation, or with the
    shared perturbation, has no density that can be evaluated.

References
----------
Yin, M. and Zhou, M. (2018). Semi-implicit variational inference. *ICML*.
Molchanov, D., Kharitonov, V., Sobolev, A. and Vetrov, D. (2019). Doubly semi-implicit
variational inference. *AISTATS*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..bnn.functional import FunctionalNet, MainNetFunction, as_function
from ..bnn.likelihoods import Likelihood
from ..bnn.priors import Prior
from ..checks import check_count
from ..hnets.rng import make_generator
from .base import VariationalPosterior
from .implicit import ImplicitPosterior
from .mean_field import MeanFieldGaussian

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class ELBOEstimate:
    """An ELBO estimate.

    Attributes
    ----------
    value : float
        The estimate (``nan`` when ``kind='unavailable'``).
    se : float
        Monte Carlo standard error over the ``num_draws`` draws.
    kind : str
        ``'exact KL'``, ``'semi-implicit bound'`` or ``'unavailable'``.
    num_draws : int
        :math:`S`.
    """

    value: float
    se: float
    kind: str
    num_draws: int


@torch.no_grad()
def elbo_estimate(
    posterior: VariationalPosterior,
    net: nn.Module | FunctionalNet | MainNetFunction,
    inputs: Tensor,
    targets: Tensor,
    likelihood: Likelihood,
    prior: Prior,
    num_draws: int = 64,
    num_mixture: int = 256,
    generator: torch.Generator | int | None = None,
) -> ELBOEstimate:
    """Estimate the ELBO of ``posterior`` on the full data (see the module docstring).

    Parameters
    ----------
    posterior : VariationalPosterior
        The trained approximation.
    net, inputs, targets, likelihood, prior
        As in :func:`~bnn_mcmc.variational.fit_variational`.
    num_draws : int
        :math:`S`.
    num_mixture : int
        :math:`K` of the semi-implicit bound.
    generator : torch.Generator or int, optional
        Randomness (an int is a seed).
    """
    check_count("num_draws", num_draws, 2)
    check_count("num_mixture", num_mixture, 1)
    f = as_function(net)
    gen = make_generator(generator)
    if isinstance(posterior, MeanFieldGaussian):
        w = posterior.sample(num_draws, gen)
        ll = -likelihood.nll(f(w, inputs), targets)
        kl = posterior.kl_term(w, prior, gen).estimate
        vals = ll - kl
        kind = "exact KL"
    elif isinstance(posterior, ImplicitPosterior) and posterior.semi_implicit_parts():
        parts = posterior.semi_implicit_parts()
        was = parts.mean_net.training
        parts.mean_net.eval()
        try:
            like = next(parts.mean_net.parameters())
            u = parts.input_std * torch.randn(
                num_draws,
                num_mixture + 1,
                parts.input_size,
                generator=gen,
                dtype=like.dtype,
                device=gen.device,
            ).to(like.device)
            m = parts.mean_net(uncond_input=u.reshape(-1, parts.input_size), ret_format="flattened")
        finally:
            parts.mean_net.train(was)
        m = m.reshape(num_draws, num_mixture + 1, -1)
        eps = torch.randn(m[:, 0].shape, generator=gen, dtype=m.dtype, device=gen.device)
        w = m[:, 0] + parts.sigma * eps.to(m.device)
        dim = w.shape[-1]
        sq = (w[:, None, :] - m).square().sum(-1)  # (S, K+1)
        log_cond = -0.5 * sq / parts.sigma**2 - dim * (math.log(parts.sigma) + 0.5 * _LOG_2PI)
        log_q = torch.logsumexp(log_cond, 1) - math.log(num_mixture + 1)
        vals = -likelihood.nll(f(w, inputs), targets) + prior.log_prob(w) - log_q
        kind = "semi-implicit bound"
    else:
        return ELBOEstimate(math.nan, math.nan, "unavailable", num_draws)
    vals = vals.double()
    return ELBOEstimate(
        value=float(vals.mean()),
        se=float(vals.std() / math.sqrt(num_draws)),
        kind=kind,
        num_draws=num_draws,
    )
