"""Weight draws of any posterior as one ``(chains, draws, dim)`` tensor."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def draws_by_chain(posterior: object, dim: int | None, name: str = "posterior") -> Tensor:
    """Weight draws as a ``(chains, draws, dim)`` tensor.

    Parameters
    ----------
    posterior : Tensor, numpy array or arviz.InferenceData
        ``(S, dim)`` draws (one chain), ``(chains, draws, dim)``, or InferenceData whose
        ``posterior`` variables, flattened per draw and concatenated in their order, give
        the flat weight vectors (the layout of
        :func:`bnn_mcmc.diagnostics.to_inference_data`).
    dim : int or None
        Length of the flat position (network weights plus likelihood parameters);
        ``None`` accepts any length.
    """
    if hasattr(posterior, "posterior") and hasattr(posterior, "groups"):
        ds = posterior.posterior
        parts = [
            np.asarray(ds[v].values).reshape(ds.sizes["chain"], ds.sizes["draw"], -1)
            for v in ds.data_vars
        ]
        posterior = torch.from_numpy(np.concatenate(parts, axis=-1))
    elif isinstance(posterior, np.ndarray):
        posterior = torch.from_numpy(posterior)
    if not isinstance(posterior, Tensor):
        raise TypeError(
            f"{name} must be a tensor of weight draws or an arviz.InferenceData; got "
            f"{type(posterior).__name__}. For a variational posterior pass q.sample(n)."
        )
    if posterior.dim() == 2:
        posterior = posterior.unsqueeze(0)
    length = posterior.shape[-1] if dim is None else dim
    if posterior.dim() != 3 or posterior.shape[-1] != length or posterior.shape[1] < 2:
        raise ValueError(
            f"{name} must hold at least 2 draws of length {length}, as (S, {length}) or "
            f"(chains, draws, {length}); got shape {tuple(posterior.shape)}."
        )
    return posterior.detach()
