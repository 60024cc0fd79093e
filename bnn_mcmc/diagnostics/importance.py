r"""Importance weights of an approximate posterior with a density, and their Pareto :math:`\hat k`.

For draws :math:`w_s \sim q` of an approximation with a known density (mean field) and the
unnormalised posterior :math:`\tilde p(w) = e^{-U(w)}`, the log importance weights are

.. math:: \log r_s = \log\tilde p(w_s) - \log q(w_s) = -U(w_s) - \log q(w_s).

Pareto-smoothed importance sampling (PSIS) fits a generalised Pareto distribution to the
largest :math:`M = \min(\lceil 0.2 S\rceil, \lceil 3\sqrt S\rceil)` weights; its shape
:math:`\hat k` says how far :math:`q` is from :math:`p` as a proposal: :math:`\hat k < 0.5`
good, :math:`0.5 \le \hat k < 0.7` usable, :math:`\hat k \ge 0.7` the importance estimates
(and :math:`q` as a posterior) are not to be trusted (Yao et al., 2018).  The fit is the
profile-posterior method of Zhang & Stephens (2009) with the weak prior of Vehtari et al.
(2024) that shrinks :math:`\hat k` towards 0.5 -- the estimator of ArviZ's ``psislw``,
implemented here so that the result does not depend on the ArviZ version.

References
----------
Vehtari, A., Simpson, D., Gelman, A., Yao, Y. and Gabry, J. (2024). Pareto smoothed
importance sampling. *JMLR* 25(72), 1-58.
Yao, Y., Vehtari, A., Simpson, D. and Gelman, A. (2018). Yes, but did it work?:
evaluating variational inference. *ICML*.
Zhang, J. and Stephens, M. A. (2009). A new and efficient estimation method for the
generalized Pareto distribution. *Technometrics* 51(3), 316-325.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


def _gpd_shape(x: Tensor) -> float:
    """Zhang-Stephens shape estimate of sorted positive exceedances ``x``, with the prior."""
    n = x.numel()
    m = 30 + int(math.sqrt(n))
    j = torch.arange(1, m + 1, dtype=torch.float64)
    b = 1.0 - torch.sqrt(m / (j - 0.5))
    b = b / (3.0 * x[int(n / 4 + 0.5) - 1]) + 1.0 / x[-1]
    k = torch.log1p(-b[:, None] * x[None, :]).mean(1)
    profile = n * (torch.log(-b / k) - k - 1.0)
    weights = 1.0 / torch.exp(profile[None, :] - profile[:, None]).sum(1)
    keep = weights >= 10 * torch.finfo(torch.float64).eps
    weights, b = weights[keep], b[keep]
    weights = weights / weights.sum()
    b_post = (b * weights).sum()
    k_post = float(torch.log1p(-b_post * x).mean())
    return (n * k_post + 10 * 0.5) / (n + 10)


def pareto_k(log_weights: Tensor) -> float:
    r"""PSIS :math:`\hat k` of ``(S,)`` log importance weights (``nan`` for too few draws).

    Raises
    ------
    ValueError
        If ``log_weights`` is not one-dimensional with at least 2 entries.
    """
    if not isinstance(log_weights, Tensor) or log_weights.dim() != 1 or log_weights.numel() < 2:
        raise ValueError("log_weights must be a 1-D tensor of at least 2 log importance weights.")
    lw = log_weights.detach().double().cpu()
    if not bool(torch.isfinite(lw).all()):
        return math.inf
    lw = lw - lw.max()
    s = lw.numel()
    tail = math.ceil(min(0.2 * s, 3.0 * math.sqrt(s)))
    ordered = lw.sort().values
    cutoff = max(float(ordered[-tail - 1]), math.log(torch.finfo(torch.float64).tiny))
    exceed = ordered[ordered > cutoff]
    if exceed.numel() <= 4:
        return math.nan
    x = (torch.exp(exceed) - math.exp(cutoff)).sort().values
    return _gpd_shape(x)


@dataclass(frozen=True)
class ImportanceDiagnostics:
    """Importance sampling of the posterior with an approximation as proposal.

    Attributes
    ----------
    pareto_k : float
        PSIS :math:`\\hat k` (see the module docstring).
    ess : float
        :math:`1/\\sum_s \\bar r_s^2` of the self-normalised raw weights.
    num_draws : int
        :math:`S`.
    log_weights : Tensor
        ``(S,)`` log weights :math:`\\log r_s`.
    """

    pareto_k: float
    ess: float
    num_draws: int
    log_weights: Tensor


def importance_diagnostics(log_weights: Tensor) -> ImportanceDiagnostics:
    """:class:`ImportanceDiagnostics` of ``(S,)`` log importance weights."""
    k = pareto_k(log_weights)
    lw = log_weights.detach().double()
    w = torch.softmax(lw, 0)
    return ImportanceDiagnostics(
        pareto_k=k, ess=float(1.0 / w.square().sum()), num_draws=lw.numel(), log_weights=lw
    )


def posterior_importance(
    posterior,
    pot_energy_func: Callable[[Tensor], Tensor],
    num_draws: int = 1000,
    generator: torch.Generator | int | None = None,
) -> ImportanceDiagnostics:
    r"""Draw from ``posterior`` and weigh by :math:`-U(w) - \log q(w)`.

    Parameters
    ----------
    posterior
        An approximation with a density: ``sample(n, generator)`` and ``log_prob(w)``
        (e.g. :class:`~bnn_mcmc.variational.MeanFieldGaussian`).  Implicit posteriors have
        no density; use the region comparison against MCMC for them.
    pot_energy_func : callable
        :math:`U(w)`, the negative unnormalised log posterior of one flat weight vector
        (e.g. :func:`~bnn_mcmc.bnn.nn_pot_energy`).
    num_draws : int
        :math:`S`.
    generator : torch.Generator or int, optional
        Randomness of the draws.
    """
    if not callable(getattr(posterior, "log_prob", None)):
        raise TypeError(
            f"{type(posterior).__name__} has no log_prob: importance weights need q's "
            "density (a MeanFieldGaussian has one; an ImplicitPosterior does not)."
        )
    w = posterior.sample(num_draws, generator)
    with torch.no_grad():
        log_q = posterior.log_prob(w)
        log_p = -torch.stack([pot_energy_func(wi) for wi in w])
    return importance_diagnostics(log_p.reshape(-1) - log_q.reshape(-1))
