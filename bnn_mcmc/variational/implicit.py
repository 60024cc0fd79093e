r"""Implicit variational posterior: base noise through a hypernetwork.

.. math:: z \sim \mathcal N(0, \sigma_z^2 I_n), \qquad w = h_\phi(z) \in \mathbb R^P,

where :math:`h_\phi` is any hypernetwork of :mod:`bnn_mcmc.hnets` with an unconditional
input of size :math:`n` and flattened output of size :math:`P` -- typically an
:class:`~bnn_mcmc.hnets.HMLP`, wrapped in an :class:`~bnn_mcmc.hnets.HPerturbWrapper`
(:math:`w = h(z_{1:n}) + \sigma\,z'`) so that :math:`q` has a density on all of
:math:`\mathbb R^P`.  A batch of draws is one batched pass through the hypernetwork.

With an :class:`~bnn_mcmc.hnets.HPerturbWrapper`, ``noise_std`` scales only the input of
the wrapped network: the perturbation keeps the wrapper's ``sigma_noise``.  With
``perturbation='shared'`` the same entries are input and perturbation, so ``noise_std``
must be 1 there (set the wrapper's ``sigma_noise`` instead).  With
``perturbation='independent'``, :math:`q(w \mid z_{1:n}) = \mathcal N(h(z_{1:n}),
\sigma^2 I)` is semi-implicit and :func:`~bnn_mcmc.variational.elbo_estimate` gives a
lower bound on the ELBO.

The density of :math:`q` is unknown, so its KL term comes from an estimator:
:class:`~bnn_mcmc.variational.SSGE` (score of :math:`q` by spectral Stein estimation) or
:class:`~bnn_mcmc.variational.AVB` (log density ratio by a discriminator).

References
----------
Krueger, D. et al. (2017). Bayesian hypernetworks. arXiv:1710.04759.
Henning, C. et al. (2018). Approximating the predictive distribution via adversarially-
trained hypernetworks. *NeurIPS Bayesian Deep Learning workshop*.
Shi, J., Sun, S. and Zhu, J. (2018). A spectral approach to gradient estimation for
implicit distributions. *ICML*.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..bnn.priors import Prior
from ..checks import check_count
from ..hnets.perturb_wrapper import HPerturbWrapper
from .avb import AVB
from .base import KLTerm, VariationalPosterior, check_prior
from .ssge import SSGE, default_num_samples


class SemiImplicitParts(NamedTuple):
    """:math:`w = m(u) + \\sigma\\,\\epsilon` with :math:`u \\sim \\mathcal N(0, s^2 I_n)`.

    Attributes
    ----------
    mean_net : nn.Module
        :math:`m`, called as ``mean_net(uncond_input=u, ret_format='flattened')``.
    input_size : int
        :math:`n`.
    input_std : float
        :math:`s`.
    sigma : float
        :math:`\\sigma`.
    """

    mean_net: nn.Module
    input_size: int
    input_std: float
    sigma: float


class FewSSGEDrawsWarning(RuntimeWarning):
    """SSGE is used with fewer draws than half the number of weights."""


class ImplicitPosterior(VariationalPosterior):
    """:math:`w = h_\\phi(z)` with Gaussian base noise :math:`z`.

    Parameters
    ----------
    hnet : nn.Module
        A hypernetwork with ``uncond_in_size`` (the noise size :math:`n`, a positive int),
        ``cond_in_size == 0``, ``num_outputs`` (:math:`P`) and
        ``forward(uncond_input=z, ret_format='flattened')`` returning ``(B, P)``.
    estimator : SSGE or AVB
        How the KL term is estimated.  An :class:`AVB` estimator must be built for
        ``dim = hnet.num_outputs``.
    noise_std : float
        :math:`\\sigma_z`.

    Attributes
    ----------
    dim : int
        :math:`P`.
    noise_dim : int
        :math:`n`.
    """

    def __init__(self, hnet: nn.Module, estimator: SSGE | AVB, noise_std: float = 1.0):
        super().__init__()
        if not isinstance(hnet, nn.Module):
            raise TypeError(f"hnet must be a hypernetwork module, got {type(hnet).__name__}.")
        noise_dim = getattr(hnet, "uncond_in_size", None)
        if isinstance(noise_dim, bool) or not isinstance(noise_dim, int) or noise_dim < 1:
            raise ValueError(
                f"hnet must take base noise as its unconditional input; its uncond_in_size is "
                f"{noise_dim!r}. Build it with uncond_in_size=n (e.g. HMLP(shapes, "
                "uncond_in_size=n, cond_in_size=0))."
            )
        if getattr(hnet, "cond_in_size", 0) != 0:
            raise ValueError(
                f"hnet has cond_in_size={hnet.cond_in_size}; an implicit posterior takes only "
                "noise, so build the hypernetwork with cond_in_size=0."
            )
        if not isinstance(estimator, (SSGE, AVB)):
            raise TypeError(
                f"estimator must be an SSGE or AVB instance, got {type(estimator).__name__}."
            )
        self.dim = check_count("hnet.num_outputs", int(hnet.num_outputs), 1)
        if isinstance(estimator, AVB) and estimator.dim != self.dim:
            raise ValueError(
                f"the AVB estimator is built for dim={estimator.dim} but the hypernetwork "
                f"outputs {self.dim} weights; use AVB(dim={self.dim})."
            )
        if not float(noise_std) > 0:
            raise ValueError(f"noise_std must be positive, got {noise_std!r}.")
        self._input_size = noise_dim
        if isinstance(hnet, HPerturbWrapper) and hnet.hnet_uncond_in_size is not None:
            if hnet.perturbation == "shared" and float(noise_std) != 1.0:
                raise ValueError(
                    f"noise_std={noise_std} would also scale HPerturbWrapper's perturbation "
                    "(with perturbation='shared' the same entries are input and noise); "
                    "keep noise_std=1 and set the wrapper's sigma_noise, or use "
                    "perturbation='independent'."
                )
            if hnet.perturbation == "independent":
                self._input_size = hnet.hnet_uncond_in_size
        self._warned_few_draws = False
        self.hnet = hnet
        self.noise_dim = noise_dim
        self.noise_std = float(noise_std)
        # AVB is not an nn.Module, so its discriminator is not among this module's
        # parameters: it is trained by the estimator's own optimiser
        self.estimator = estimator

    def rsample(self, n: int, generator: torch.Generator) -> Tensor:
        check_count("n", n, 1)
        like = next(self.hnet.parameters())
        z = self._noise((n, self.noise_dim), generator, like)
        if self.noise_std != 1.0:  # scale the hypernetwork's input, not a perturbation
            k = self._input_size
            z = torch.cat([self.noise_std * z[:, :k], z[:, k:]], 1)
        w = self.hnet(uncond_input=z, ret_format="flattened")
        if w.shape != (n, self.dim):
            raise ValueError(
                f"hnet returned shape {tuple(w.shape)} for {n} noise draws; expected "
                f"({n}, {self.dim}) with ret_format='flattened'."
            )
        return w

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | int | None = None) -> Tensor:
        """``n`` detached draws, taken with the hypernetwork in eval mode (no dropout,
        running batch-norm statistics, so ``sample(1)`` works); the mode is restored."""
        was_training = self.hnet.training
        self.hnet.eval()
        try:
            return super().sample(n, generator)
        finally:
            self.hnet.train(was_training)

    def kl_term(self, w: Tensor, prior: Prior, generator: torch.Generator) -> KLTerm:
        """The estimator's KL term for the draws ``w`` (see :class:`SSGE`, :class:`AVB`).

        Warns (:class:`FewSSGEDrawsWarning`, once) when SSGE gets fewer than ``dim / 2``
        draws: its entropy gradient is then shrunk by about ``M / (M + dim)``.
        """
        check_prior(prior, self.dim)
        if isinstance(self.estimator, SSGE) and 2 * w.shape[0] < self.dim:
            if not self._warned_few_draws:
                self._warned_few_draws = True
                warnings.warn(
                    f"SSGE with {w.shape[0]} draws on {self.dim} weights underestimates the "
                    f"entropy gradient about {(self.dim + w.shape[0]) / w.shape[0]:.0f}-fold, "
                    "so q collapses; leave TrainConfig(num_samples=None) (SSGE's default "
                    f"{default_num_samples(self.dim)}) or use more draws.",
                    FewSSGEDrawsWarning,
                    stacklevel=3,
                )
        return self.estimator.kl_term(w, prior, generator)

    def default_num_samples(self) -> int:
        """:func:`~bnn_mcmc.variational.ssge.default_num_samples` of ``dim`` for both
        estimators: SSGE's entropy gradient and AVB's covariance contrast both need about
        as many draws as weights."""
        return default_num_samples(self.dim)

    def auxiliary_state(self) -> dict | None:
        if isinstance(self.estimator, AVB):
            return self.estimator.state_dict()
        return None

    def load_auxiliary_state(self, state: dict | None) -> None:
        if state is not None and isinstance(self.estimator, AVB):
            self.estimator.load_state_dict(state)

    def auxiliary_loss(self) -> float:
        if isinstance(self.estimator, AVB):
            return self.estimator.last_disc_loss
        return float("nan")

    def semi_implicit_parts(self) -> SemiImplicitParts | None:
        """The Gaussian conditional of an ``HPerturbWrapper(perturbation='independent')``
        (without handlers) with ``sigma_noise > 0``; ``None`` otherwise."""
        h = self.hnet
        if (
            isinstance(h, HPerturbWrapper)
            and h.perturbation == "independent"
            and h.hnet_uncond_in_size is not None
            and h.sigma_noise
        ):
            return SemiImplicitParts(
                h.internal_hnet, self._input_size, self.noise_std, h.sigma_noise
            )
        return None
