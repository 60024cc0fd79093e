r"""Posterior predictive and function-space quantities from weight draws.

Given draws :math:`w^{(s)}` from the posterior, the posterior predictive is approximated by

.. math:: p(y^* \mid x^*, \mathcal D) \approx \frac1S \sum_s p(y^* \mid f(x^*; w^{(s)})).

The network is evaluated for all draws at once (batched over a leading weight dimension,
``chunk_size`` draws at a time so memory stays bounded).

Because the weight-space posterior of a network is symmetric under permutations of hidden
units, weight-space R-hat / ESS are mostly meaningless; the same diagnostics on the
*predictions* at chosen inputs are what matter (:func:`function_space_diagnostics`).

References
----------
Izmailov, P., Vikram, S., Hoffman, M. D. and Wilson, A. G. (2021). What are Bayesian
neural network posteriors really like? *ICML*.
Vehtari, A. et al. (2021). Rank-normalization, folding, and localization: an improved
R-hat for assessing convergence of MCMC. *Bayesian Analysis* 16(2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .functional import FunctionalNet, MainNetFunction, as_function
from .likelihoods import Likelihood


def _check_draws(draws: Tensor, dim: int, what: str = "draws") -> None:
    if not isinstance(draws, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(draws).__name__}.")
    if draws.dim() < 2 or draws.shape[-1] != dim:
        raise ValueError(
            f"{what} must have shape (num_draws, {dim}) or (chains, draws, {dim}); got "
            f"{tuple(draws.shape)}."
        )


def _chunks(draws: Tensor, chunk_size: int) -> list[Tensor]:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}.")
    return list(draws.reshape(-1, draws.shape[-1]).split(chunk_size))


def _split(f, draws: Tensor, likelihood: Likelihood | None) -> tuple[Tensor, Tensor | None]:
    extra = 0 if likelihood is None else likelihood.num_extra_params
    _check_draws(draws, f.dim + extra)
    if extra:
        return draws[..., : f.dim], draws[..., f.dim :]
    return draws, None


def evaluate_draws(
    net: nn.Module | FunctionalNet | MainNetFunction,
    draws: Tensor,
    inputs: Tensor,
    chunk_size: int = 256,
) -> Tensor:
    """Network outputs for every draw, shape ``(*lead, n, k)`` for draws ``(*lead, dim)``.

    Evaluated without gradient, ``chunk_size`` draws per batched call.
    """
    f = as_function(net)
    _check_draws(draws, f.dim)
    with torch.no_grad():
        out = torch.cat([f(c, inputs) for c in _chunks(draws, chunk_size)])
    return out.reshape(*draws.shape[:-1], *out.shape[1:])


def pointwise_log_likelihood(
    net: nn.Module | FunctionalNet | MainNetFunction,
    draws: Tensor,
    inputs: Tensor,
    targets: Tensor,
    likelihood: Likelihood,
    chunk_size: int = 256,
) -> Tensor:
    r""":math:`\log p(y_i \mid f(x_i; w^{(s)}))` for every draw and data point.

    Parameters
    ----------
    draws : Tensor
        ``(S, dim)`` or ``(chains, draws, dim)``; ``dim`` includes the likelihood's own
        parameters at the end.

    Returns
    -------
    Tensor
        ``(*lead, n)`` -- e.g. ``(chains, draws, n)``, the layout of ArviZ's
        ``log_likelihood`` group for WAIC / PSIS-LOO.
    """
    if not isinstance(likelihood, Likelihood):
        raise TypeError(
            f"likelihood must be a bnn_mcmc.bnn.Likelihood, got {type(likelihood).__name__}."
        )
    f = as_function(net)
    w_net, extra = _split(f, draws, likelihood)
    preds = evaluate_draws(f, w_net, inputs, chunk_size)
    with torch.no_grad():
        return likelihood.log_prob(preds, targets, extra)


@dataclass
class Predictive:
    """Posterior predictive summary.

    Attributes
    ----------
    f : Tensor
        Network outputs for every draw, ``(*lead, n, k)``.
    mean, variance : Tensor
        Mean and variance over draws of :math:`\\mathbb E[y \\mid f]` (the likelihood's
        :meth:`~bnn_mcmc.bnn.Likelihood.mean`, e.g. class probabilities), or of ``f``
        when no likelihood is given; shape ``(n, k')``.
    quantiles : Tensor
        The same quantity's quantiles over draws, ``(len(quantile_levels), n, k')``.
    quantile_levels : tuple of float
        Levels of :attr:`quantiles`.
    y : Tensor or None
        One draw of :math:`y \\sim p(y \\mid f(x; w^{(s)}))` per weight draw (samples of
        the posterior predictive), or ``None`` without a likelihood.
    """

    f: Tensor
    mean: Tensor
    variance: Tensor
    quantiles: Tensor
    quantile_levels: tuple[float, ...]
    y: Tensor | None


def predict(
    net: nn.Module | FunctionalNet | MainNetFunction,
    draws: Tensor,
    inputs: Tensor,
    likelihood: Likelihood | None = None,
    chunk_size: int = 256,
    generator: torch.Generator | None = None,
    quantile_levels: Sequence[float] = (0.025, 0.5, 0.975),
) -> Predictive:
    """Posterior predictive at ``inputs`` from weight draws.

    Parameters
    ----------
    net : nn.Module, FunctionalNet or MainNetFunction
        The network.
    draws : Tensor
        ``(S, dim)`` or ``(chains, draws, dim)``.
    inputs : Tensor
        Test inputs.
    likelihood : Likelihood, optional
        Observation model; enables :attr:`Predictive.y` and summarises
        :math:`\\mathbb E[y \\mid f]` instead of raw outputs.
    chunk_size : int
        Draws evaluated per batched call.
    generator : torch.Generator, optional
        Random source for the ``y`` samples (requires ``likelihood``); default a generator
        seeded with 0.
    quantile_levels : sequence of float
        Levels in [0, 1] for :attr:`Predictive.quantiles`.

    Returns
    -------
    Predictive
    """
    levels = tuple(float(q) for q in quantile_levels)
    if not all(0.0 <= q <= 1.0 for q in levels):
        raise ValueError(f"quantile_levels must lie in [0, 1], got {levels}.")
    if likelihood is None and generator is not None:
        raise ValueError("generator is only used to draw y; pass likelihood= as well.")
    if likelihood is not None and not isinstance(likelihood, Likelihood):
        raise TypeError(
            f"likelihood must be a bnn_mcmc.bnn.Likelihood, got {type(likelihood).__name__}."
        )
    f = as_function(net)
    w_net, extra = _split(f, draws, likelihood)
    outputs = evaluate_draws(f, w_net, inputs, chunk_size)
    y = None
    with torch.no_grad():
        if likelihood is None:
            response = outputs
        else:
            response = likelihood.mean(outputs, extra)
            gen = torch.Generator().manual_seed(0) if generator is None else generator
            y = likelihood.draw(outputs, gen, extra)
        flat = response.reshape(-1, *response.shape[draws.dim() - 1 :])
        q = torch.tensor(levels, dtype=flat.dtype, device=flat.device)
        return Predictive(
            f=outputs,
            mean=flat.mean(0),
            variance=flat.var(0, unbiased=flat.shape[0] > 1),
            quantiles=torch.quantile(flat, q, dim=0),
            quantile_levels=levels,
            y=y,
        )


@dataclass
class FunctionSpaceDiagnostics:
    """R-hat and effective sample sizes of predictions, each of shape ``(n, k)``."""

    rhat: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray


def function_space_diagnostics(
    net: nn.Module | FunctionalNet | MainNetFunction,
    draws_by_chain: Tensor,
    inputs: Tensor,
    likelihood: Likelihood | None = None,
    chunk_size: int = 256,
) -> FunctionSpaceDiagnostics:
    """Rank-normalised split R-hat and bulk/tail ESS of predictions across chains.

    Parameters
    ----------
    draws_by_chain : Tensor
        ``(chains, draws, dim)``.
    inputs : Tensor
        The inputs at which predictions are diagnosed.
    likelihood : Likelihood, optional
        Diagnose :math:`\\mathbb E[y \\mid f]` (e.g. class probabilities) instead of raw
        outputs.

    Returns
    -------
    FunctionSpaceDiagnostics
        Computed by ArviZ (``az.rhat``, ``az.ess``) on the predictions.
    """
    import arviz as az

    if not isinstance(draws_by_chain, Tensor) or draws_by_chain.dim() != 3:
        shape = tuple(draws_by_chain.shape) if isinstance(draws_by_chain, Tensor) else None
        raise ValueError(f"draws_by_chain must have shape (chains, draws, dim); got {shape}.")
    f = as_function(net)
    w_net, extra = _split(f, draws_by_chain, likelihood)
    outputs = evaluate_draws(f, w_net, inputs, chunk_size)
    if likelihood is not None:
        with torch.no_grad():
            outputs = likelihood.mean(outputs, extra)
    values = outputs.detach().cpu().double().numpy()
    values = values.reshape(*values.shape[:3], -1)  # (chain, draw, n, k)
    dataset = az.convert_to_dataset({"f": values})
    return FunctionSpaceDiagnostics(
        rhat=az.rhat(dataset)["f"].values,
        ess_bulk=az.ess(dataset, method="bulk")["f"].values,
        ess_tail=az.ess(dataset, method="tail")["f"].values,
    )
