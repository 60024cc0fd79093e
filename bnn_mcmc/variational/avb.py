r"""Adversarial variational Bayes (AVB): the KL term of an implicit posterior by a discriminator.

A discriminator :math:`T_\psi` trained with the logistic loss to tell draws of :math:`q`
from draws of a contrast distribution :math:`c` converges to the log density ratio,

.. math:: \max_\psi\ \mathbb E_q[\log\varsigma(T_\psi(w))]
          + \mathbb E_c[\log(1 - \varsigma(T_\psi(w)))]
          \quad\Longrightarrow\quad T^*(w) = \log q(w) - \log c(w)

(:math:`\varsigma` the logistic sigmoid).  With the prior as contrast (``adaptive_contrast=
False``), :math:`\mathrm{KL}(q \Vert p) \approx \mathbb E_q[T(w)]`.

*Adaptive contrast* makes the discriminator's task easier: with :math:`\hat\mu, \hat\sigma`
the mean and standard deviation of the current draws of :math:`q` and
:math:`r(w) = \mathcal N(w; \hat\mu, \operatorname{diag}\hat\sigma^2)`,

.. math:: \mathrm{KL}(q \Vert p) = \mathbb E_q\!\left[\log\frac{q(w)}{r(w)}\right]
          + \mathbb E_q[\log r(w) - \log p(w)],

and the first term equals :math:`\mathbb E[\log \tilde q(\tilde w) - \log\mathcal N(\tilde w;
0, I)]` for the standardised :math:`\tilde w = (w - \hat\mu)/\hat\sigma` (the Jacobians
cancel), so :math:`T` is trained on :math:`\tilde w` against :math:`\mathcal N(0, I)` and the
second term is an explicit Monte Carlo average.  Gradients flow through :math:`w`,
:math:`\hat\mu` and :math:`\hat\sigma`, not into the discriminator, which is trained by its
own optimiser for ``disc_steps`` steps on every call.

Saturation
----------
When the discriminator separates the two samples almost perfectly (logistic loss near 0)
its output is no longer near the log density ratio, the "KL" it returns is not an
estimate, and the generator gets no useful gradient.  It happens when :math:`q` lives on
a low-dimensional set -- a hypernetwork without output perturbation, or one whose draws
collapsed onto a few directions -- since such draws are trivially told from a Gaussian.
The estimator counts consecutive updates whose loss is below ``saturation_loss``; after
``saturation_patience`` of them it warns once (:class:`AVBSaturationWarning`) naming the
fixes: give :math:`q` full support (:class:`~bnn_mcmc.hnets.HPerturbWrapper` with a larger
``sigma_noise``), keep ``adaptive_contrast=True``, and train the discriminator less
(fewer ``disc_steps``, lower ``lr``).  :attr:`AVB.saturated_steps` holds the count.

References
----------
Mescheder, L., Nowozin, S. and Geiger, A. (2017). Adversarial variational Bayes: unifying
variational autoencoders and generative adversarial networks. *ICML*.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..bnn.priors import Prior
from ..checks import check_count
from .base import KLTerm, make_generator

_LOG_2PI = math.log(2.0 * math.pi)


class AVBSaturationWarning(RuntimeWarning):
    """The AVB discriminator has separated :math:`q` from its contrast for many steps."""


def _discriminator(dim: int, hidden: Sequence[int], generator: torch.Generator) -> nn.Sequential:
    sizes = [dim, *hidden, 1]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        bound = 1.0 / math.sqrt(a)
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound, generator=generator)
            lin.bias.uniform_(-bound, bound, generator=generator)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class AVB:
    """Discriminator-based KL estimator for implicit posteriors.

    Parameters
    ----------
    dim : int
        Number of weights :math:`P` of the posterior.
    hidden_layers : sequence of int
        Hidden widths of the discriminator MLP (leaky-ReLU activations).
    lr : float
        Adam learning rate of the discriminator.
    disc_steps : int
        Discriminator updates per call of :meth:`kl_term`.
    adaptive_contrast : bool
        Use the moment-matched Gaussian contrast (see module docstring) instead of the
        prior.
    generator : torch.Generator or int, optional
        Randomness of the discriminator's initialisation (an int is a seed).
    saturation_loss : float
        Discriminator loss below which an update counts as saturated (a perfect
        discriminator has loss 0, a blind one :math:`2\\log 2`).
    saturation_patience : int
        Consecutive saturated updates before :class:`AVBSaturationWarning` is issued.

    Attributes
    ----------
    discriminator : nn.Sequential
        :math:`T_\\psi`.
    last_disc_loss : float
        Logistic loss of the discriminator at its last update (``nan`` before any):
        :math:`2\\log 2 \\approx 1.386` means it cannot tell the distributions apart.
    saturated_steps : int
        Current run of consecutive updates with loss below ``saturation_loss``.
    """

    def __init__(
        self,
        dim: int,
        hidden_layers: Sequence[int] = (64, 64),
        lr: float = 1e-3,
        disc_steps: int = 5,
        adaptive_contrast: bool = True,
        generator: torch.Generator | int | None = None,
        saturation_loss: float = 0.05,
        saturation_patience: int = 50,
    ) -> None:
        self.dim = check_count("dim", dim, 1)
        hidden = tuple(hidden_layers)
        for h in hidden:
            check_count("hidden_layers entries", h, 1)
        if not float(lr) > 0:
            raise ValueError(f"lr must be positive, got {lr!r}.")
        self.disc_steps = check_count("disc_steps", disc_steps, 1)
        self.adaptive_contrast = bool(adaptive_contrast)
        self.discriminator = _discriminator(dim, hidden, make_generator(generator))
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=float(lr))
        self.last_disc_loss = float("nan")
        if not 0.0 < float(saturation_loss) < 2.0 * math.log(2.0):
            raise ValueError(f"saturation_loss must lie in (0, 2 log 2), got {saturation_loss!r}.")
        self.saturation_loss = float(saturation_loss)
        self.saturation_patience = check_count("saturation_patience", saturation_patience, 1)
        self.saturated_steps = 0
        self.warned = False

    def state_dict(self) -> dict:
        """Discriminator and optimiser state (deep copies), for :meth:`load_state_dict`."""
        return {
            "discriminator": copy.deepcopy(self.discriminator.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "last_disc_loss": self.last_disc_loss,
            "saturated_steps": self.saturated_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`."""
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.last_disc_loss = float(state["last_disc_loss"])
        self.saturated_steps = int(state["saturated_steps"])

    def _track_saturation(self) -> None:
        if self.last_disc_loss < self.saturation_loss:
            self.saturated_steps += 1
        else:
            self.saturated_steps = 0
        if self.saturated_steps >= self.saturation_patience and not self.warned:
            self.warned = True
            warnings.warn(
                f"AVB's discriminator loss has stayed below {self.saturation_loss} for "
                f"{self.saturated_steps} updates (last {self.last_disc_loss:.2e}): it separates "
                "q from the contrast perfectly, so its KL is not an estimate. Give q full "
                "support (HPerturbWrapper with a larger sigma_noise), keep "
                "adaptive_contrast=True, and train the discriminator less (fewer disc_steps, "
                "lower lr).",
                AVBSaturationWarning,
                stacklevel=4,
            )

    def __repr__(self) -> str:
        return (
            f"AVB(dim={self.dim}, disc_steps={self.disc_steps}, "
            f"adaptive_contrast={self.adaptive_contrast})"
        )

    def _contrast(self, n: int, prior: Prior, generator: torch.Generator, like: Tensor) -> Tensor:
        if self.adaptive_contrast:
            z = torch.randn(
                n, self.dim, generator=generator, dtype=like.dtype, device=generator.device
            )
        else:
            z = prior.sample(generator, (n,), dim=self.dim, dtype=like.dtype)
        return z.to(like.device)

    def _train_discriminator(self, real: Tensor, prior: Prior, generator: torch.Generator) -> None:
        for _ in range(self.disc_steps):
            fake = self._contrast(real.shape[0], prior, generator, real)
            self.optimizer.zero_grad(set_to_none=True)
            loss = (
                F.softplus(-self.discriminator(real)).mean()
                + F.softplus(self.discriminator(fake)).mean()
            )
            loss.backward()
            self.optimizer.step()
        self.last_disc_loss = float(loss.detach())
        self._track_saturation()

    def kl_term(self, w: Tensor, prior: Prior, generator: torch.Generator) -> KLTerm:
        r"""Update the discriminator on ``w``, then estimate :math:`\mathrm{KL}(q \Vert p)`.

        Parameters
        ----------
        w : Tensor
            ``(S, dim)`` reparameterised draws of :math:`q`, ``S >= 2``.
        prior : Prior
            :math:`p`.
        generator : torch.Generator
            Randomness of the contrast draws.

        Returns
        -------
        KLTerm
            Surrogate and value are the same estimate.
        """
        if not isinstance(w, Tensor) or w.dim() != 2 or w.shape[1] != self.dim or w.shape[0] < 2:
            shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(f"w must have shape (S, {self.dim}) with S >= 2; got {shape}.")
        self.discriminator.to(device=w.device, dtype=w.dtype)
        if self.adaptive_contrast:
            mu = w.mean(0)
            sd = w.std(0).clamp_min(1e-8)
            x = (w - mu) / sd
            log_r = (-0.5 * x.square() - torch.log(sd) - 0.5 * _LOG_2PI).sum(-1)
            correction = (log_r - prior.log_prob(w)).mean()
        else:
            x = w
            correction = w.new_zeros(())
        with torch.enable_grad():
            self._train_discriminator(x.detach(), prior, generator)
        params = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        t = functional_call(self.discriminator, params, (x,)).squeeze(-1)
        kl = t.mean() + correction
        return KLTerm(surrogate=kl, estimate=float(kl.detach()))
