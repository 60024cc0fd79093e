r"""Adversarial variational Bayes (AVB): the KL term of an implicit posterior by a discriminator.

A discriminator :math:`T_\psi` trained with the logistic loss to tell draws of :math:`q`
from draws of a contrast distribution :math:`c` converges to the log density ratio,

.. math:: \max_\psi\ \mathbb E_q[\log\varsigma(T_\psi(w))]
          + \mathbb E_c[\log(1 - \varsigma(T_\psi(w)))]
          \quad\Longrightarrow\quad T^*(w) = \log q(w) - \log c(w)

(:math:`\varsigma` the logistic sigmoid).  With the prior as contrast (``adaptive_contrast=
False``), :math:`\mathrm{KL}(q \Vert p) \approx \mathbb E_q[T(w)]`.

*Adaptive contrast* (Mescheder et al. 2017, section 3.3) makes the discriminator's task
easier: with an invertible affine map :math:`\tilde w = A^{-1}(w - \hat\mu)` fitted to the
current draws of :math:`q` and :math:`r(w) = \mathcal N(w; \hat\mu, AA^\top)`,

.. math:: \mathrm{KL}(q \Vert p) = \mathbb E_q\!\left[\log\frac{q(w)}{r(w)}\right]
          + \mathbb E_q[\log r(w) - \log p(w)],

and the first term equals :math:`\mathbb E[\log \tilde q(\tilde w) - \log\mathcal N(\tilde w;
0, I)]` (the Jacobians cancel), so :math:`T` is trained on :math:`\tilde w` against
:math:`\mathcal N(0, I)` and the second term is an explicit Monte Carlo average.  Gradients
flow through :math:`w`, :math:`\hat\mu` and :math:`A`, not into the discriminator, which is
trained by its own optimiser for ``disc_steps`` steps on every call.  Two contrasts:

``'diagonal'`` (the paper's)
    :math:`A = \operatorname{diag}\hat\sigma`.  Its explicit term rewards every *marginal*
    standard deviation, :math:`-\sum_i\log\hat\sigma_i`, which a :math:`q` spread along a
    few shared directions earns as well as a full-rank one; only :math:`T` can tell the
    two apart, and the log ratio it must represent (the total correlation of
    :math:`q`, hundreds of nats for a rank-10 :math:`q` on 481 weights) is far beyond what
    a logistic discriminator fits from a minibatch: it saturates and :math:`q` collapses.
``'full'`` (default up to :data:`MAX_FULL_CONTRAST_DIM` weights)
    :math:`AA^\top = \hat\Sigma + \epsilon\operatorname{diag}\hat\Sigma` (Cholesky), the
    sample covariance with a ridge ``ridge`` :math:`=\epsilon` that keeps it invertible
    when there are fewer draws than weights.  The explicit term is then the Gaussian
    entropy :math:`\tfrac12\log\det\hat\Sigma`, which only a spread over many directions
    raises, and :math:`T` is left with the non-Gaussianity of :math:`q` -- a far smaller
    log ratio.  Costs a :math:`P\times P` Cholesky per step.

Gradient penalty
----------------
``gradient_penalty`` :math:`=\gamma` adds :math:`\tfrac\gamma2\cdot\tfrac12(\mathbb
E_{\tilde q}\lVert\nabla T\rVert^2 + \mathbb E_{c}\lVert\nabla T\rVert^2)` to the
discriminator's loss: the R1 and R2 penalties of Mescheder, Geiger and Nowozin (2018),
averaged.  It bounds how steep :math:`T` may be, so it cannot separate the two samples by
an arbitrarily large margin: its loss stays informative and its input gradient -- what the
generator descends -- stays smooth.  The price is a bias of :math:`T` towards
:math:`0` where the log ratio is large, so :attr:`KLTerm.estimate` is then an
underestimate.

Defaults
--------
Measured on the 1-D gap problem (40 points, MLP 1-20-20-1, 481 weights, HMLP 8-64-64 behind
an independent perturbation with :math:`\sigma = 0.01`, 600 Adam steps; effective rank of
1000 draws, NUTS about 61): the former defaults (diagonal contrast, no penalty, 64 draws)
end with discriminator loss :math:`10^{-5}`-:math:`10^{-4}` and effective rank about 10;
``'full'`` alone lifts the rank to 46 but still saturates; the penalty alone keeps the loss
near 0.1 but the rank at 10 (as do a 256-256 discriminator, one step at lr
:math:`10^{-4}`, or instance noise); both together end with loss 0.3-0.4 (no warning) and
rank 35 (128 draws) to 48 (481 draws).  That costs about 8x the former defaults' time per
step (14 s against 111 s for 600 steps, one thread), most of it the penalty's double
backward pass in the 5 discriminator steps: ``disc_steps=1`` gave the same loss and rank
(0.40, 48) in a third of the time, but a gap spread 1.4x that of 5 steps, so the default
keeps 5.  Draws per step default to
:func:`~bnn_mcmc.variational.default_num_samples` of the dimension, as for SSGE, so that
:math:`\hat\Sigma` is estimated from about as many draws as weights.

Saturation
----------
When the discriminator separates the two samples almost perfectly (logistic loss near 0)
its output is no longer near the log density ratio, the "KL" it returns is not an
estimate, and the generator gets no useful gradient.  The estimator counts consecutive
updates whose loss is below ``saturation_loss``; after ``saturation_patience`` of them it
warns once (:class:`AVBSaturationWarning`) naming the fixes: ``adaptive_contrast='full'``
with ``gradient_penalty > 0`` (the defaults up to :data:`MAX_FULL_CONTRAST_DIM` weights),
full support for :math:`q`
(:class:`~bnn_mcmc.hnets.HPerturbWrapper`), more draws per step.
:attr:`AVB.saturated_steps` holds the count.

References
----------
Mescheder, L., Nowozin, S. and Geiger, A. (2017). Adversarial variational Bayes: unifying
variational autoencoders and generative adversarial networks. *ICML*.
Mescheder, L., Geiger, A. and Nowozin, S. (2018). Which training methods for GANs actually
converge? *ICML* (R1/R2 gradient penalties).
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


CONTRASTS = ("full", "diagonal", "prior")
MAX_FULL_CONTRAST_DIM = 4096
"""Largest dimension for which ``adaptive_contrast='auto'`` picks ``'full'`` (a
:math:`P \times P` covariance and its Cholesky factor per step); above it, ``'diagonal'``."""


def _parse_contrast(value: bool | str, dim: int) -> str:
    if value == "auto":
        return "full" if dim <= MAX_FULL_CONTRAST_DIM else "diagonal"
    if value is True:
        return "diagonal"
    if value is False:
        return "prior"
    if isinstance(value, str) and value in CONTRASTS:
        return value
    raise ValueError(
        f"adaptive_contrast must be 'auto' or one of {CONTRASTS} (or True for 'diagonal', "
        f"False for 'prior'); got {value!r}."
    )


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
    adaptive_contrast : {'auto', 'full', 'diagonal', 'prior'} or bool
        Contrast distribution (see the module docstring): a Gaussian with the draws' mean
        and covariance (``'full'``), mean and marginal standard deviations
        (``'diagonal'``, also ``True``), or the prior itself (``'prior'``, also ``False``).
        ``'auto'`` is ``'full'`` up to :data:`MAX_FULL_CONTRAST_DIM` weights and
        ``'diagonal'`` above.  The attribute holds the resolved choice.
    generator : torch.Generator or int, optional
        Randomness of the discriminator's initialisation (an int is a seed).
    saturation_loss : float
        Discriminator loss below which an update counts as saturated (a perfect
        discriminator has loss 0, a blind one :math:`2\\log 2`).
    saturation_patience : int
        Consecutive saturated updates before :class:`AVBSaturationWarning` is issued.
    gradient_penalty : float
        :math:`\\gamma \\ge 0` of the R1/R2 penalty on the discriminator (0 switches it off).
    ridge : float
        :math:`\\epsilon > 0` added to the diagonal of the sample covariance, relative to
        it, for ``adaptive_contrast='full'``.

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
        adaptive_contrast: bool | str = "auto",
        generator: torch.Generator | int | None = None,
        saturation_loss: float = 0.05,
        saturation_patience: int = 50,
        gradient_penalty: float = 1.0,
        ridge: float = 1e-3,
    ) -> None:
        self.dim = check_count("dim", dim, 1)
        if not float(gradient_penalty) >= 0:
            raise ValueError(f"gradient_penalty must be >= 0, got {gradient_penalty!r}.")
        if not float(ridge) > 0:
            raise ValueError(f"ridge must be positive, got {ridge!r}.")
        self.gradient_penalty = float(gradient_penalty)
        self.ridge = float(ridge)
        hidden = tuple(hidden_layers)
        for h in hidden:
            check_count("hidden_layers entries", h, 1)
        if not float(lr) > 0:
            raise ValueError(f"lr must be positive, got {lr!r}.")
        self.disc_steps = check_count("disc_steps", disc_steps, 1)
        self.adaptive_contrast = _parse_contrast(adaptive_contrast, self.dim)
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
                "q from the contrast perfectly, so its KL is not an estimate and q tends to "
                "collapse onto a few directions. Use adaptive_contrast='full' with "
                "gradient_penalty > 0 (the defaults up to 4096 weights), give q full support "
                "(HPerturbWrapper "
                "with a larger sigma_noise), and use more draws per step.",
                AVBSaturationWarning,
                stacklevel=4,
            )

    def __repr__(self) -> str:
        return (
            f"AVB(dim={self.dim}, disc_steps={self.disc_steps}, "
            f"adaptive_contrast={self.adaptive_contrast!r}, "
            f"gradient_penalty={self.gradient_penalty})"
        )

    def _contrast(self, n: int, prior: Prior, generator: torch.Generator, like: Tensor) -> Tensor:
        if self.adaptive_contrast != "prior":
            z = torch.randn(
                n, self.dim, generator=generator, dtype=like.dtype, device=generator.device
            )
        else:
            z = prior.sample(generator, (n,), dim=self.dim, dtype=like.dtype)
        return z.to(like.device)

    def _train_discriminator(self, real: Tensor, prior: Prior, generator: torch.Generator) -> None:
        gamma = self.gradient_penalty
        for _ in range(self.disc_steps):
            fake = self._contrast(real.shape[0], prior, generator, real)
            self.optimizer.zero_grad(set_to_none=True)
            r = real.detach().requires_grad_(gamma > 0)
            c = fake.detach().requires_grad_(gamma > 0)
            t_real, t_fake = self.discriminator(r), self.discriminator(c)
            loss = F.softplus(-t_real).mean() + F.softplus(t_fake).mean()
            total = loss
            if gamma > 0:
                g_real, g_fake = torch.autograd.grad(
                    t_real.sum() + t_fake.sum(), (r, c), create_graph=True
                )
                penalty = g_real.square().sum(-1).mean() + g_fake.square().sum(-1).mean()
                total = loss + 0.25 * gamma * penalty
            total.backward()
            self.optimizer.step()
        self.last_disc_loss = float(loss.detach())
        self._track_saturation()

    def _whiten(self, w: Tensor) -> tuple[Tensor, Tensor]:
        r"""Full contrast: whitened draws and :math:`\log r(w)` of each draw."""
        mu = w.mean(0)
        c = w - mu
        cov = c.T @ c / (w.shape[0] - 1)
        diag = torch.diag(cov.diagonal().clamp_min(torch.finfo(w.dtype).tiny))
        ridge = self.ridge
        for _ in range(6):
            chol, info = torch.linalg.cholesky_ex(cov + ridge * diag)
            if int(info) == 0:
                break
            ridge *= 10.0
        else:
            raise ValueError(
                "the covariance of q's draws is not positive definite even with a ridge of "
                f"{ridge:g}; use adaptive_contrast='diagonal' or give q full support."
            )
        x = torch.linalg.solve_triangular(chol, c.T, upper=False).T
        log_r = (-0.5 * x.square() - 0.5 * _LOG_2PI).sum(-1) - torch.log(chol.diagonal()).sum()
        return x, log_r

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
        if self.adaptive_contrast == "full":
            x, log_r = self._whiten(w)
            correction = (log_r - prior.log_prob(w)).mean()
        elif self.adaptive_contrast == "diagonal":
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
