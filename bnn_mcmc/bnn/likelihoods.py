r"""Observation models :math:`p(y \mid f(x; w))` for Bayesian neural networks.

Every likelihood shares one interface:

* :meth:`Likelihood.log_prob` -- :math:`\log p(y_i \mid f_i)` per data point, shape
  ``(..., n)`` for predictions of shape ``(..., n, k)`` (leading dimensions index weight
  draws), normalising constants included so that WAIC / LOO / ELPD values are right;
* :meth:`Likelihood.nll` -- :math:`-\sum_i \log p(y_i \mid f_i)` (sum over data points);
* :meth:`Likelihood.draw` -- samples :math:`y \sim p(y \mid f)`;
* :meth:`Likelihood.mean` -- :math:`\mathbb E[y \mid f]`, used by the posterior predictive;
* :attr:`Likelihood.num_extra_params` -- number of parameters of the likelihood itself
  (e.g. a learned noise log-scale) that live at the **end** of the flat position vector
  sampled by MCMC.  They are passed as ``extra`` (shape ``(..., num_extra_params)``) and
  carry their own prior, :meth:`Likelihood.extra_log_prior`.

Predictions have shape ``(..., n, k)`` where ``n`` is the number of data points and ``k``
the network's output size; targets have shape ``(n, d)`` (or ``(n,)`` when ``d == 1``) for
real-valued models and ``(n,)`` integer labels for the categorical model.

References
----------
Bishop, C. M. (2006). *Pattern Recognition and Machine Learning*, ch. 3-4.
Vehtari, A., Gelman, A. and Gabry, J. (2017). Practical Bayesian model evaluation using
leave-one-out cross-validation and WAIC. *Statistics and Computing* 27, 1413-1432.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_LOG_2PI = math.log(2.0 * math.pi)


def _check_preds(preds: Tensor) -> None:
    if not isinstance(preds, Tensor):
        raise TypeError(f"preds must be a torch.Tensor, got {type(preds).__name__}.")
    if preds.dim() < 2:
        raise ValueError(
            "preds must have shape (..., n, k) (data points, network outputs); "
            f"got shape {tuple(preds.shape)}."
        )


def _check_targets_tensor(preds: Tensor, targets: Tensor) -> None:
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}.")
    if targets.device != preds.device:
        raise ValueError(
            f"targets are on device {targets.device} but predictions on {preds.device}; "
            "move them with targets.to(preds.device)."
        )
    if targets.shape[0] != preds.shape[-2]:
        raise ValueError(
            f"targets have {targets.shape[0]} data points but predictions have "
            f"{preds.shape[-2]} (preds shape {tuple(preds.shape)}, targets shape "
            f"{tuple(targets.shape)})."
        )


def _real_targets(preds: Tensor, targets: Tensor, out_dim: int) -> Tensor:
    """Validate real-valued targets and return them with shape ``(n, out_dim)``."""
    _check_preds(preds)
    _check_targets_tensor(preds, targets)
    if not targets.is_floating_point():
        raise TypeError(
            f"targets of a real-valued likelihood must be floating point, got {targets.dtype}; "
            "use targets.to(torch.get_default_dtype())."
        )
    if targets.dim() == 1 and out_dim == 1:
        targets = targets.unsqueeze(-1)
    if targets.dim() != 2 or targets.shape[1] != out_dim:
        raise ValueError(
            f"targets must have shape (n, {out_dim})"
            + (" or (n,)" if out_dim == 1 else "")
            + f" to fit predictions of shape {tuple(preds.shape)}; got {tuple(targets.shape)}."
        )
    return targets.to(preds.dtype)


def _randn(shape: torch.Size, generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal draws on the generator's device, returned on ``like``'s device."""
    z = torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device)
    return z.to(like.device)


def _split_extra(extra: Tensor | None, num: int, preds: Tensor) -> Tensor:
    """Check ``extra`` of shape ``(..., num)`` against the batch dims of ``preds``."""
    if extra is None:
        raise ValueError(
            f"this likelihood has {num} parameter(s) of its own; pass them as extra= "
            "(the last entries of the flat position vector)."
        )
    if extra.shape[-1:] != (num,) or extra.shape[:-1] != preds.shape[:-2]:
        raise ValueError(
            f"extra must have shape {tuple(preds.shape[:-2]) + (num,)} to fit predictions of "
            f"shape {tuple(preds.shape)}; got {tuple(extra.shape)}."
        )
    return extra


class Likelihood:
    """Base class: an observation model :math:`p(y \\mid f)` with the shared interface.

    Subclasses implement :meth:`prepare_targets`, :meth:`_log_prob`, :meth:`draw` and
    :meth:`mean`.  Public methods validate their arguments; :meth:`_log_prob` does not and
    is used by :func:`bnn_mcmc.bnn.potential.nn_pot_energy` after validating once.
    """

    num_extra_params: int = 0

    def prepare_targets(self, preds: Tensor, targets: Tensor) -> Tensor:
        """Validate ``targets`` against ``preds`` and return them in canonical shape/dtype."""
        raise NotImplementedError

    def _log_prob(self, preds: Tensor, targets: Tensor, extra: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _nll_sum(self, preds: Tensor, targets: Tensor, extra: Tensor | None) -> Tensor:
        """Unchecked NLL summed over data points, shape ``preds.shape[:-2]``.

        Subclasses override it with a cheaper closed form where one exists (it is the
        data term of every potential evaluation).
        """
        return -self._log_prob(preds, targets, extra).sum(-1)

    def _check_extra(self, preds: Tensor, extra: Tensor | None) -> None:
        if self.num_extra_params == 0 and extra is not None:
            raise ValueError(
                f"{type(self).__name__} has no parameters of its own; do not pass extra=."
            )
        if self.num_extra_params > 0:
            _split_extra(extra, self.num_extra_params, preds)

    def log_prob(self, preds: Tensor, targets: Tensor, extra: Tensor | None = None) -> Tensor:
        r"""Per-data-point log-likelihood :math:`\log p(y_i \mid f_i)`.

        Parameters
        ----------
        preds : Tensor
            Network outputs of shape ``(..., n, k)``.
        targets : Tensor
            Observations for the ``n`` data points.
        extra : Tensor, optional
            The likelihood's own parameters, shape ``(..., num_extra_params)``.

        Returns
        -------
        Tensor
            Shape ``(..., n)``.
        """
        self._check_extra(preds, extra)
        return self._log_prob(preds, self.prepare_targets(preds, targets), extra)

    def nll(self, preds: Tensor, targets: Tensor, extra: Tensor | None = None) -> Tensor:
        r"""Negative log-likelihood summed over data points, :math:`-\sum_i \log p(y_i|f_i)`.

        Returns a tensor of shape ``(...)`` (a scalar for unbatched predictions).
        """
        return -self.log_prob(preds, targets, extra).sum(-1)

    def draw(
        self, preds: Tensor, generator: torch.Generator, extra: Tensor | None = None
    ) -> Tensor:
        """Sample :math:`y \\sim p(y \\mid f)` for every prediction."""
        raise NotImplementedError

    def mean(self, preds: Tensor, extra: Tensor | None = None) -> Tensor:
        r"""Expected observation :math:`\mathbb E[y \mid f]` for every prediction."""
        raise NotImplementedError

    def extra_log_prior(self, extra: Tensor) -> Tensor:
        """Log prior density of the likelihood's own parameters, shape ``extra.shape[:-1]``.

        Zero when the likelihood has no parameters (``extra`` has a last dimension of 0).
        """
        return extra.new_zeros(extra.shape[:-1])

    def sample_extra(
        self,
        generator: torch.Generator,
        sample_shape: tuple[int, ...] = (),
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw the likelihood's own parameters from their prior, shape ``(*s, num_extra)``."""
        return torch.empty(*sample_shape, 0, dtype=dtype)


class GaussianLikelihood(Likelihood):
    r"""Gaussian noise of known precision :math:`\tau`: :math:`y \sim \mathcal N(f, 1/\tau)`.

    .. math:: \log p(y \mid f) = \tfrac{d}{2}\log\tau - \tfrac{d}{2}\log 2\pi
              - \tfrac{\tau}{2}\lVert y - f\rVert^2

    per data point with ``d`` outputs.  The constant is kept (unlike the original
    toolkit's potential), so values are proper log-densities.

    Parameters
    ----------
    tau_pred : float
        Noise precision :math:`\tau = 1/\sigma^2`, must be positive.
    """

    def __init__(self, tau_pred: float = 1.0) -> None:
        tau_pred = float(tau_pred)
        if not tau_pred > 0:
            raise ValueError(f"tau_pred must be a positive precision, got {tau_pred}.")
        self.tau_pred = tau_pred
        self._const = 0.5 * (math.log(tau_pred) - _LOG_2PI)

    def prepare_targets(self, preds: Tensor, targets: Tensor) -> Tensor:
        return _real_targets(preds, targets, preds.shape[-1])

    def _log_prob(self, preds: Tensor, targets: Tensor, extra: Tensor | None) -> Tensor:
        sq = (targets - preds).square().sum(-1)
        return preds.shape[-1] * self._const - 0.5 * self.tau_pred * sq

    def _nll_sum(self, preds, targets, extra):
        diff2 = (targets - preds).square()
        sq = diff2.sum() if preds.dim() == 2 else diff2.sum((-2, -1))
        return 0.5 * self.tau_pred * sq - preds.shape[-1] * preds.shape[-2] * self._const

    def draw(self, preds, generator, extra=None):
        self._check_extra(preds, extra)
        return preds + _randn(preds.shape, generator, preds) / math.sqrt(self.tau_pred)

    def mean(self, preds, extra=None):
        self._check_extra(preds, extra)
        return preds


class HeteroscedasticGaussianLikelihood(Likelihood):
    r"""Gaussian whose mean and log-variance are both predicted by the network.

    With outputs :math:`(\mu, s) \in \mathbb R^{2d}` (first half mean, second half
    :math:`s = \log\sigma^2`),

    .. math:: \log p(y \mid \mu, s) = -\tfrac12 \sum_j \left[ \log 2\pi + s_j
              + (y_j - \mu_j)^2 e^{-s_j} \right].

    References
    ----------
    Nix, D. A. and Weigend, A. S. (1994). Estimating the mean and variance of the target
    probability distribution. *IEEE ICNN*.
    """

    def _halves(self, preds: Tensor) -> tuple[Tensor, Tensor]:
        k = preds.shape[-1]
        if k % 2:
            raise ValueError(
                "HeteroscedasticGaussianLikelihood needs an even number of network outputs "
                f"(mean and log-variance halves); got {k}."
            )
        return preds[..., : k // 2], preds[..., k // 2 :]

    def prepare_targets(self, preds, targets):
        _check_preds(preds)
        return _real_targets(preds, targets, self._halves(preds)[0].shape[-1])

    def _log_prob(self, preds, targets, extra):
        mu, log_var = self._halves(preds)
        terms = _LOG_2PI + log_var + (targets - mu).square() * torch.exp(-log_var)
        return -0.5 * terms.sum(-1)

    def draw(self, preds, generator, extra=None):
        self._check_extra(preds, extra)
        mu, log_var = self._halves(preds)
        return mu + _randn(mu.shape, generator, mu) * torch.exp(0.5 * log_var)

    def mean(self, preds, extra=None):
        self._check_extra(preds, extra)
        return self._halves(preds)[0]


class LearnedNoiseGaussianLikelihood(Likelihood):
    r"""Gaussian with an unknown noise scale sampled as part of the position.

    The last entry of the flat position is :math:`\rho = \log\sigma`, with prior
    :math:`\rho \sim \mathcal N(m_\rho, s_\rho^2)`:

    .. math:: \log p(y \mid f, \rho) = -d\rho - \tfrac d2 \log 2\pi
              - \tfrac{1}{2} e^{-2\rho} \lVert y - f\rVert^2 .

    Parameters
    ----------
    log_scale_prior_mean, log_scale_prior_std : float
        Mean :math:`m_\rho` and standard deviation :math:`s_\rho > 0` of the Gaussian prior
        on the noise log-scale.
    """

    num_extra_params = 1

    def __init__(self, log_scale_prior_mean: float = 0.0, log_scale_prior_std: float = 1.0):
        if not log_scale_prior_std > 0:
            raise ValueError(f"log_scale_prior_std must be positive, got {log_scale_prior_std}.")
        self.log_scale_prior_mean = float(log_scale_prior_mean)
        self.log_scale_prior_std = float(log_scale_prior_std)

    def prepare_targets(self, preds, targets):
        return _real_targets(preds, targets, preds.shape[-1])

    @staticmethod
    def _log_scale(extra: Tensor) -> Tensor:
        return extra[..., 0].unsqueeze(-1)  # (..., 1) broadcasts over the n data points

    def _log_prob(self, preds, targets, extra):
        rho = self._log_scale(extra)
        d = preds.shape[-1]
        sq = (targets - preds).square().sum(-1)
        return -d * rho - 0.5 * d * _LOG_2PI - 0.5 * sq * torch.exp(-2.0 * rho)

    def draw(self, preds, generator, extra=None):
        self._check_extra(preds, extra)
        sigma = torch.exp(self._log_scale(extra)).unsqueeze(-1)
        return preds + _randn(preds.shape, generator, preds) * sigma

    def mean(self, preds, extra=None):
        self._check_extra(preds, extra)
        return preds

    def extra_log_prior(self, extra):
        z = (extra[..., 0] - self.log_scale_prior_mean) / self.log_scale_prior_std
        return -0.5 * z.square() - math.log(self.log_scale_prior_std) - 0.5 * _LOG_2PI

    def sample_extra(self, generator, sample_shape=(), dtype=None):
        z = torch.randn(*sample_shape, 1, generator=generator, dtype=dtype, device=generator.device)
        return self.log_scale_prior_mean + self.log_scale_prior_std * z


class CategoricalLikelihood(Likelihood):
    r"""Categorical distribution over ``C`` classes with logits ``f`` (softmax link).

    .. math:: \log p(y = c \mid f) = f_c - \log\sum_{c'} e^{f_{c'}}

    Targets are integer class labels of shape ``(n,)`` with values in ``[0, C)``.
    """

    def prepare_targets(self, preds, targets):
        _check_preds(preds)
        _check_targets_tensor(preds, targets)
        if targets.is_floating_point() or targets.dtype == torch.bool:
            raise TypeError(
                f"classification targets must be integer class labels, got {targets.dtype}; "
                "use targets.long() (or targets.argmax(-1) for one-hot targets)."
            )
        if targets.dim() != 1:
            raise ValueError(
                f"classification targets must have shape (n,), got {tuple(targets.shape)}; "
                "use targets.view(-1)."
            )
        num_classes = preds.shape[-1]
        if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
            raise ValueError(
                f"class labels must lie in [0, {num_classes}) for {num_classes} network "
                f"outputs; got labels in [{int(targets.min())}, {int(targets.max())}]."
            )
        return targets.long()

    def _log_prob(self, preds, targets, extra):
        log_p = torch.log_softmax(preds, dim=-1)
        index = targets.expand(preds.shape[:-1]).unsqueeze(-1)
        return log_p.gather(-1, index).squeeze(-1)

    def _nll_sum(self, preds, targets, extra):
        if preds.dim() == 2:
            return F.cross_entropy(preds, targets, reduction="sum")
        return super()._nll_sum(preds, targets, extra)

    def draw(self, preds, generator, extra=None):
        self._check_extra(preds, extra)
        probs = torch.softmax(preds, dim=-1).reshape(-1, preds.shape[-1])
        labels = torch.multinomial(probs.to(generator.device), 1, generator=generator).to(
            preds.device
        )
        return labels.reshape(preds.shape[:-1])

    def mean(self, preds, extra=None):
        """Class probabilities :math:`\\mathrm{softmax}(f)`."""
        self._check_extra(preds, extra)
        return torch.softmax(preds, dim=-1)


class BernoulliLikelihood(Likelihood):
    r"""Bernoulli distribution with logit ``f`` (one network output).

    .. math:: \log p(y \mid f) = y f - \log(1 + e^{f})

    Targets in :math:`\{0, 1\}` of shape ``(n,)`` or ``(n, 1)``, any dtype.
    """

    def prepare_targets(self, preds, targets):
        _check_preds(preds)
        _check_targets_tensor(preds, targets)
        if preds.shape[-1] != 1:
            raise ValueError(
                f"BernoulliLikelihood needs exactly one network output (a logit); got "
                f"{preds.shape[-1]}. Use CategoricalLikelihood for several classes."
            )
        if targets.dim() == 1:
            targets = targets.unsqueeze(-1)
        if targets.shape != preds.shape[-2:]:
            raise ValueError(
                f"binary targets must have shape (n,) or (n, 1); got {tuple(targets.shape)}."
            )
        t = targets.to(preds.dtype)
        if not bool(((t == 0) | (t == 1)).all()):
            raise ValueError("binary targets must only contain the values 0 and 1.")
        return t

    def _log_prob(self, preds, targets, extra):
        t = targets.expand(preds.shape)
        return -F.binary_cross_entropy_with_logits(preds, t, reduction="none").squeeze(-1)

    def draw(self, preds, generator, extra=None):
        self._check_extra(preds, extra)
        probs = torch.sigmoid(preds).to(generator.device)
        return torch.bernoulli(probs, generator=generator).to(preds.device)

    def mean(self, preds, extra=None):
        """Success probabilities :math:`\\sigma(f)`."""
        self._check_extra(preds, extra)
        return torch.sigmoid(preds)


class StudentTLikelihood(Likelihood):
    r"""Student-t noise with ``df`` degrees of freedom and scale ``s`` around ``f``.

    .. math:: \log p(y \mid f) = \log\Gamma\!\left(\tfrac{\nu+1}{2}\right)
              - \log\Gamma\!\left(\tfrac{\nu}{2}\right) - \tfrac12\log(\nu\pi) - \log s
              - \tfrac{\nu+1}{2}\log\!\left(1 + \tfrac{(y-f)^2}{\nu s^2}\right)

    per output.  Heavy tails make the fit robust to outliers.

    Parameters
    ----------
    df : float
        Degrees of freedom :math:`\nu > 0`.
    scale : float
        Scale :math:`s > 0`.
    """

    def __init__(self, df: float = 4.0, scale: float = 1.0) -> None:
        if not df > 0:
            raise ValueError(f"df must be positive, got {df}.")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}.")
        self.df = float(df)
        self.scale = float(scale)
        self._const = (
            math.lgamma(0.5 * (self.df + 1.0))
            - math.lgamma(0.5 * self.df)
            - 0.5 * math.log(self.df * math.pi)
            - math.log(self.scale)
        )

    def prepare_targets(self, preds, targets):
        return _real_targets(preds, targets, preds.shape[-1])

    def _log_prob(self, preds, targets, extra):
        z2 = ((targets - preds) / self.scale).square() / self.df
        per_output = self._const - 0.5 * (self.df + 1.0) * torch.log1p(z2)
        return per_output.sum(-1)

    def draw(self, preds, generator, extra=None):
        self._check_extra(preds, extra)
        # t_nu = z / sqrt(chi^2_nu / nu), with chi^2_nu = 2 Gamma(nu / 2, 1)
        half_df = torch.full(preds.shape, 0.5 * self.df, dtype=preds.dtype, device=generator.device)
        chi2 = 2.0 * torch._standard_gamma(half_df, generator=generator).to(preds.device)
        t = _randn(preds.shape, generator, preds) * torch.sqrt(self.df / chi2)
        return preds + self.scale * t

    def mean(self, preds, extra=None):
        """Location ``f`` (the mean when ``df > 1``)."""
        self._check_extra(preds, extra)
        return preds


def likelihood_from_nll_type(nll_type: str, tau_pred: float = 1.0) -> Likelihood:
    """The likelihood that the original toolkit's ``nll_type`` names.

    ``'regression'`` gives :class:`GaussianLikelihood` with precision ``tau_pred``;
    ``'classification'`` gives :class:`CategoricalLikelihood` (``tau_pred`` must stay 1).
    """
    if nll_type == "regression":
        return GaussianLikelihood(tau_pred)
    if nll_type == "classification":
        if tau_pred != 1.0:
            raise ValueError(
                "tau_pred only applies to nll_type='regression'; leave it at 1 for classification."
            )
        return CategoricalLikelihood()
    raise ValueError(
        f"nll_type must be 'regression' or 'classification', got {nll_type!r}; pass a "
        "likelihood= object for other observation models."
    )
