"""Chains as ArviZ ``InferenceData`` with the schema's group and variable names.

Groups: ``posterior`` (``chain, draw, ...``; one variable per network
parameter tensor when a network is given, else one ``w`` of shape
``(chain, draw, w_dim_0)``), ``sample_stats`` (``lp``, ``acceptance_rate``,
``step_size``, ``n_steps``, ``tree_depth``, ``diverging``, ``energy``,
``energy_error``, ``reached_max_tree_depth`` as recorded by the sampler),
optionally ``warmup_posterior``/``warmup_sample_stats``, ``log_likelihood``,
``posterior_predictive`` and ``observed_data``.  The attributes
``inference_library``, ``inference_library_version`` and ``created_at`` are set.

References
----------
ArviZ developers. *InferenceData schema specification*.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .._version import __version__


def chains_of(sampler) -> list:
    """The single-chain samplers of a sampler or of a ``MultiChainHMC``."""
    chains = getattr(sampler, "chains", None)
    if chains is None:
        if not hasattr(sampler, "samples"):
            raise TypeError(f"expected a sampler or a MultiChainHMC; got {type(sampler).__name__}.")
        return [sampler]
    return list(chains)


def _stack(arrays: list[np.ndarray], what: str) -> np.ndarray:
    lengths = {a.shape[0] for a in arrays}
    if len(lengths) != 1:
        raise ValueError(
            f"chains hold different numbers of {what} {sorted(lengths)}; ArviZ needs equal "
            "lengths: simulate the shorter chains first (simulate_chains(n, num_chains=...))."
        )
    return np.stack(arrays)


def parameter_layout(net, dim: int) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the network's parameter tensors, in flattening order.

    ``net`` is an ``nn.Module`` (``named_parameters()``) or an object with
    ``param_shapes`` (e.g. :class:`bnn_mcmc.bnn.MLP` without internal weights).
    """
    layout: list[tuple[str, tuple[int, ...]]] = []
    if hasattr(net, "named_parameters"):
        layout = [(n.replace(".", "_"), tuple(p.shape)) for n, p in net.named_parameters()]
    if not layout and hasattr(net, "param_shapes"):
        layout = [(f"param_{k}", tuple(s)) for k, s in enumerate(net.param_shapes)]
    if not layout:
        raise TypeError(
            "net must be an nn.Module with parameters or have param_shapes; got "
            f"{type(net).__name__}."
        )
    total = sum(math.prod(s) for _, s in layout)
    if total != dim:
        raise ValueError(
            f"net has {total} parameters but the draws have {dim} entries; pass the network "
            "whose flattened weights were sampled."
        )
    return layout


def _split(draws: np.ndarray, layout) -> dict[str, np.ndarray]:
    lead = draws.shape[:-1]
    out, start = {}, 0
    for name, shape in layout:
        size = math.prod(shape)
        out[name] = draws[..., start : start + size].reshape(*lead, *shape)
        start += size
    return out


def per_draw(func: Callable[[Tensor], Tensor], draws: np.ndarray, what: str) -> np.ndarray:
    """Apply ``func`` to the ``(chain * draw, dim)`` draws; reshape to ``(chain, draw, ...)``."""
    flat = torch.from_numpy(draws.reshape(-1, draws.shape[-1]))
    with torch.no_grad():
        out = func(flat)
    out = np.asarray(out.detach().cpu() if isinstance(out, Tensor) else out)
    if out.shape[0] != flat.shape[0]:
        raise ValueError(
            f"{what} must return one row per draw ({flat.shape[0]}); got shape {out.shape}."
        )
    return out.reshape(*draws.shape[:2], *out.shape[1:])


def _group_value(value, draws: np.ndarray, what: str, name: str) -> dict[str, np.ndarray]:
    if isinstance(value, dict):
        return {k: np.asarray(v) for k, v in value.items()}
    if callable(value):
        return {name: per_draw(value, draws, what)}
    arr = np.asarray(value.detach().cpu() if isinstance(value, Tensor) else value)
    if arr.shape[:2] != draws.shape[:2]:
        raise ValueError(
            f"{what} as an array must have shape (chain, draw, ...) = {draws.shape[:2]} + ...; "
            f"got {arr.shape}."
        )
    return {name: arr}


def to_inference_data(
    sampler,
    net=None,
    include_warmup: bool = False,
    log_likelihood=None,
    predictions=None,
    observed_data=None,
    var_name: str = "w",
    observed_name: str = "y",
):
    """Build ArviZ ``InferenceData`` from a sampler or a ``MultiChainHMC``.

    Parameters
    ----------
    sampler
        A single-chain sampler, a ``MultiChainHMC`` (chains of equal length), or
        draws as a tensor/array ``(draws, dim)`` or ``(chains, draws, dim)`` — e.g.
        ``q.sample(n)`` of a variational posterior, which then has no
        ``sample_stats`` group (and ``include_warmup`` must be ``False``).
    net
        Split the posterior by the network's parameter names and shapes
        (``nn.Module.named_parameters()`` or ``param_shapes``).
    include_warmup
        Add ``warmup_posterior`` and ``warmup_sample_stats``.
    log_likelihood
        ``draws (n, dim) -> (n, num_points)`` pointwise log-likelihoods, an
        array ``(chain, draw, num_points)``, or a dict of them; enables
        ``az.loo``/``az.waic``.
    predictions
        Same forms, for ``posterior_predictive``.
    observed_data
        An array or a dict of arrays.
    var_name, observed_name
        Variable names of the flat posterior and of the observed quantity.
    """
    import arviz as az

    if isinstance(sampler, (torch.Tensor, np.ndarray)):
        draws = np.asarray(sampler.detach().cpu() if isinstance(sampler, torch.Tensor) else sampler)
        if draws.ndim not in (2, 3):
            raise ValueError(
                "draws must have shape (draws, dim) or (chains, draws, dim); got "
                f"{draws.shape}."
            )
        if include_warmup:
            raise ValueError("include_warmup needs a sampler: plain draws have no warmup.")
        draws, chains = (draws[None] if draws.ndim == 2 else draws), []
    else:
        chains = chains_of(sampler)
        draws = _stack([c.samples().numpy() for c in chains], "draws")
    layout = parameter_layout(net, draws.shape[-1]) if net is not None else None
    posterior = _split(draws, layout) if layout else {var_name: draws}
    groups: dict = {"posterior": posterior}
    if chains:
        groups["sample_stats"] = {
            k: _stack([c.stats[k].numpy() for c in chains], "statistics") for k in chains[0].stats
        }
    if include_warmup:
        warm = _stack([c.warmup_trajectory.numpy() for c in chains], "warmup draws")
        groups["warmup_posterior"] = _split(warm, layout) if layout else {var_name: warm}
        groups["warmup_sample_stats"] = {
            k: _stack([c.warmup_stats[k].numpy() for c in chains], "warmup statistics")
            for k in chains[0].warmup_stats
        }
        groups["save_warmup"] = True
    if log_likelihood is not None:
        groups["log_likelihood"] = _group_value(
            log_likelihood, draws, "log_likelihood", observed_name
        )
    if predictions is not None:
        groups["posterior_predictive"] = _group_value(
            predictions, draws, "predictions", observed_name
        )
    if observed_data is not None:
        groups["observed_data"] = (
            {k: np.asarray(v) for k, v in observed_data.items()}
            if isinstance(observed_data, dict)
            else {observed_name: np.asarray(observed_data)}
        )
    idata = az.from_dict(**groups)
    for group in idata.groups():
        idata[group].attrs["inference_library"] = "bnn_mcmc"
        idata[group].attrs["inference_library_version"] = __version__
    return idata
