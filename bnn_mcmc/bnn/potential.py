r"""Potential energy (negative log posterior) of a Bayesian neural network.

For a network :math:`f(\cdot\,; w)`, a likelihood :math:`p(y \mid f)` and a prior
:math:`p(w)`, the potential on a (mini)batch :math:`\mathcal B` of a data set of size
:math:`N` at temperature :math:`T` is

.. math:: U(w) = \frac{1}{T}\,\frac{N}{|\mathcal B|} \sum_{i \in \mathcal B}
          -\log p(y_i \mid f(x_i; w)) \;-\; \log p(w),

i.e. the data term is a sum over data points (rescaled to the full data set for
minibatches) and the prior is counted once.  :math:`T < 1` gives a cold posterior,
:math:`T > 1` a warm one; :math:`T = 1` and :math:`N = |\mathcal B|` the Bayes posterior.
Likelihoods with parameters of their own (e.g. a learned noise scale) take the last
``num_extra_params`` entries of the position, with their own prior.

References
----------
Neal, R. M. (2011). MCMC using Hamiltonian dynamics. *Handbook of MCMC*, ch. 5.
Welling, M. and Teh, Y. W. (2011). Bayesian learning via stochastic gradient Langevin
dynamics. *ICML*.
Wenzel, F. et al. (2020). How good is the Bayes posterior in deep neural networks
really? *ICML*.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .functional import FunctionalNet, MainNetFunction, as_function
from .likelihoods import Likelihood, likelihood_from_nll_type
from .priors import Prior, log_prob_standard_normal_prior


class PotentialSpec(NamedTuple):
    r"""What a potential from :func:`nn_pot_energy` was built from (its ``.spec``), so that
    curvature-based tools (e.g. ``inv_mass='fisher'``) can rebuild the model.

    Attributes
    ----------
    net : the network as passed to :func:`nn_pot_energy`
    inputs, targets : the data (targets as prepared by the likelihood)
    likelihood : the observation model
    log_prior : :math:`\log p(w)` of the network weights
    data_scale : :math:`N / (|\mathcal B|\, T)`, the factor on the data term
    """

    net: object
    inputs: Tensor
    targets: Tensor
    likelihood: Likelihood
    log_prior: Callable[[Tensor], Tensor]
    data_scale: float


def resolve_likelihood(
    likelihood: Likelihood | None, nll_type: str = "regression", tau_pred: float = 1.0
) -> Likelihood:
    """Return ``likelihood``, or the one ``nll_type`` / ``tau_pred`` name when it is ``None``.

    Raises if both a likelihood object and non-default ``nll_type`` / ``tau_pred`` are given
    (they would be ignored).
    """
    if likelihood is None:
        return likelihood_from_nll_type(nll_type, tau_pred)
    if not isinstance(likelihood, Likelihood):
        raise TypeError(
            f"likelihood must be a bnn_mcmc.bnn.Likelihood, got {type(likelihood).__name__}."
        )
    if nll_type != "regression" or tau_pred != 1.0:
        raise ValueError(
            "pass either likelihood= or nll_type=/tau_pred=, not both (set the noise "
            "precision on the likelihood object, e.g. GaussianLikelihood(tau_pred))."
        )
    return likelihood


def _prior_fn(
    prior: Prior | None, prior_log_prob_func: Callable[[Tensor], Tensor] | None, dim: int
) -> Callable[[Tensor], Tensor]:
    if prior is not None and prior_log_prob_func is not None:
        raise ValueError("pass either prior= or prior_log_prob_func=, not both.")
    if prior is None:
        return (
            log_prob_standard_normal_prior if prior_log_prob_func is None else (prior_log_prob_func)
        )
    if not isinstance(prior, Prior):
        raise TypeError(f"prior must be a bnn_mcmc.bnn.Prior, got {type(prior).__name__}.")
    if prior.dim is not None and prior.dim != dim:
        raise ValueError(
            f"the prior is defined on {prior.dim} weights but the network has {dim}; build "
            "it for this network (e.g. LayerwiseGaussianPrior.from_net(net))."
        )
    return prior.log_prob


def _reference_weights(f: FunctionalNet | MainNetFunction, inputs: Tensor) -> Tensor:
    dtype = inputs.dtype if inputs.is_floating_point() else torch.get_default_dtype()
    return torch.zeros(f.dim, dtype=dtype, device=inputs.device)


def nn_pot_energy(
    net: nn.Module | FunctionalNet | MainNetFunction,
    inputs: Tensor,
    targets: Tensor,
    prior_log_prob_func: Callable[[Tensor], Tensor] | None = None,
    tau_pred: float = 1.0,
    nll_type: str = "regression",
    *,
    likelihood: Likelihood | None = None,
    prior: Prior | None = None,
    temperature: float = 1.0,
    dataset_size: int | None = None,
    chunk_size: int | None = None,
) -> Callable[[Tensor], Tensor]:
    r"""Build the potential :math:`U(w)` of a Bayesian neural network.

    Parameters
    ----------
    net : nn.Module, FunctionalNet or MainNetFunction
        Our :class:`~bnn_mcmc.bnn.MLP` (or any main net with ``forward(x, weights)``), or
        any ``nn.Module`` (evaluated through :class:`FunctionalNet`; the flat vector
        follows ``named_parameters()`` order).
    inputs, targets : Tensor
        The (mini)batch of data.
    prior_log_prob_func : callable, optional
        :math:`\log p(w)` of the network weights (original signature).  Default: a standard
        normal prior, :func:`log_prob_standard_normal_prior`.
    tau_pred : float
        Noise precision for ``nll_type='regression'``.
    nll_type : {'regression', 'classification'}
        Gaussian (precision ``tau_pred``) or categorical likelihood, when ``likelihood`` is
        not given.
    likelihood : Likelihood, optional
        Observation model; replaces ``nll_type`` / ``tau_pred``.
    prior : Prior, optional
        Prior object; replaces ``prior_log_prob_func``; its size must match the network.
    temperature : float
        :math:`T > 0`, divides the data term.
    dataset_size : int, optional
        Size :math:`N` of the full data set when ``inputs`` is a minibatch; the data term is
        multiplied by :math:`N / |\mathcal B|`.
    chunk_size : int, optional
        For batched positions: number of weight vectors evaluated at once.

    Returns
    -------
    callable
        ``U(w)`` for ``w`` of shape ``(dim,)`` (returns a scalar) or ``(B, dim)`` (returns
        ``(B,)``), where ``dim`` = number of network weights + ``likelihood.num_extra_params``.
        It carries the attributes ``dim``, ``likelihood``, ``function`` and
        ``accepts_batches`` (the vectorised multi-chain backend then skips ``vmap``), and
        ``spec``, a :class:`PotentialSpec` of the network, data, likelihood and prior.
    """
    f = as_function(net, chunk_size)
    lik = resolve_likelihood(likelihood, nll_type, tau_pred)
    log_prior = _prior_fn(prior, prior_log_prob_func, f.dim)
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise TypeError("inputs and targets must be torch.Tensors.")
    if not 0 < float(temperature) < float("inf"):
        raise ValueError(f"temperature must be positive and finite, got {temperature}.")
    if not inputs.is_floating_point():
        # Not cast silently: the chain's dtype (float32 or float64) is not known here, and
        # a guessed cast would either lose precision or fail later inside the network.
        raise TypeError(
            f"inputs must be a floating tensor, got {inputs.dtype}; cast them to the dtype "
            "of the weights you sample, e.g. inputs.to(torch.float32) or .double()."
        )
    n = targets.shape[0] if targets.dim() else 0
    if n == 0:
        raise ValueError("targets must hold at least one data point.")
    if dataset_size is None:
        scale = 1.0
    else:
        if not isinstance(dataset_size, int) or dataset_size < n:
            raise ValueError(
                f"dataset_size must be an int >= the batch size {n}, got {dataset_size!r}."
            )
        scale = dataset_size / n
    data_scale = scale / float(temperature)

    with torch.no_grad():
        preds = f(_reference_weights(f, inputs), inputs)
    targets = lik.prepare_targets(preds, targets)
    num_net = f.dim
    num_extra = lik.num_extra_params
    dim = num_net + num_extra

    def potential(w: Tensor) -> Tensor:
        if w.shape[-1] != dim:
            raise ValueError(
                f"position must have length {dim} ({num_net} network weights + {num_extra} "
                f"likelihood parameters); got shape {tuple(w.shape)}."
            )
        if num_extra:
            w_net, extra = w[..., :num_net], w[..., num_net:]
        else:
            w_net, extra = w, None
        nll = lik._nll_sum(f(w_net, inputs), targets, extra)
        if data_scale != 1.0:
            nll = data_scale * nll
        log_p = log_prior(w_net)
        if num_extra:
            log_p = log_p + lik.extra_log_prior(extra)
        return nll - log_p

    potential.dim = dim
    potential.accepts_batches = True  # U(W) for W of shape (B, dim) returns (B,)
    potential.likelihood = lik
    potential.function = f
    potential.spec = PotentialSpec(net, inputs, targets, lik, log_prior, data_scale)
    return potential
