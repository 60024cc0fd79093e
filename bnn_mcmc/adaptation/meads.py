r"""MEADS: step size, damping and diagonal preconditioner of one fold from the other chains.

Given the current states :math:`x_j` and potential gradients :math:`\nabla U(x_j)`
of the chains *outside* a fold (:math:`n \ge 2` of them), MEADS sets for the fold

.. math::

    \sigma &= \operatorname{sd}_j(x_j) \quad\text{(per coordinate: the preconditioner)}, \\
    \varepsilon &= \min\Bigl(1, \tfrac12\,
        \hat\lambda_{\max}\bigl(\sigma \odot \nabla U\bigr)^{-1/2}\Bigr), \\
    \gamma &= \max\Bigl(\hat\lambda_{\max}\bigl((x - \bar x) / \sigma\bigr)^{-1/2},\;
              \tfrac{1}{(t + 1)\,\varepsilon}\Bigr), \qquad
    \alpha = 1 - e^{-2 \varepsilon \gamma},

the step size :math:`\varepsilon` (in the preconditioned coordinates), the
damping :math:`\gamma` and the momentum refreshment :math:`\alpha` of
generalised HMC at iteration :math:`t`.  The largest eigenvalue of the
covariance of the rows :math:`r_j` of a matrix is estimated by the ratio

.. math:: \hat\lambda_{\max} =
   \frac{\widehat{\operatorname{tr}\Sigma^2}}{\widehat{\operatorname{tr}\Sigma}},
   \qquad \widehat{\operatorname{tr}\Sigma} = \tfrac1n \sum_j r_j^\top r_j, \quad
   \widehat{\operatorname{tr}\Sigma^2} = \tfrac{1}{n(n-1)} \sum_{j \ne k} (r_j^\top r_k)^2,

an eigenvalue average weighted by the eigenvalues themselves (exact for an
isotropic covariance, a lower bound of :math:`\lambda_{\max}` otherwise); the
off-diagonal Gram entries make both estimates unbiased for centred rows.
The gradients are used uncentred (their mean is zero under the target).

References
----------
Hoffman, M. D. & Sountsov, P. (2022). Tuning-free generalized Hamiltonian Monte Carlo.
*AISTATS*, PMLR 151, 7799–7813.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


class MEADSParameters(NamedTuple):
    """Step size, preconditioner ``(d,)``, damping and refreshment of one fold."""

    step_size: float
    scale: Tensor
    damping: float
    refresh: float


def max_eigenvalue(rows: Tensor) -> float:
    """:math:`\\hat\\lambda_{\\max}` of the covariance of ``rows`` ``(n, d)``, ``n >= 2``."""
    r = rows.to(torch.float64)
    n = r.shape[0]
    if n < 2:
        raise ValueError(f"an eigenvalue estimate needs at least 2 chains; got {n}.")
    gram = r @ r.T
    diag = torch.diagonal(gram)
    trace = float(diag.sum()) / n
    trace_sq = float((gram**2).sum() - (diag**2).sum()) / (n * (n - 1))
    if not (trace > 0.0 and math.isfinite(trace) and math.isfinite(trace_sq)):
        return math.inf if not math.isfinite(trace) else 0.0
    # few chains can give a negative estimate of tr(S^2); fall back to its plug-in bound
    return max(trace_sq, trace * trace / r.shape[1]) / trace


def meads_parameters(positions: Tensor, grads: Tensor, iteration: int) -> MEADSParameters:
    """The parameters of a fold from the other chains' ``positions`` and ``grads`` ``(n, d)``."""
    x = positions.to(torch.float64)
    scale = x.std(0)
    positive = scale[scale > 0]
    floor = float(positive.min()) if positive.numel() else 1.0
    scale = torch.where(scale > 0, scale, torch.full_like(scale, floor))
    lam_grad = max_eigenvalue(grads.to(torch.float64) * scale)
    step = 1.0 if lam_grad <= 0.0 else min(1.0, 0.5 / math.sqrt(lam_grad))
    if not math.isfinite(step) or step <= 0.0:
        step = 1e-8
    lam_pos = max_eigenvalue((x - x.mean(0)) / scale)
    damping = 1.0 / math.sqrt(lam_pos) if lam_pos > 0 else 1.0
    damping = max(damping, 1.0 / ((iteration + 1) * step))
    refresh = -math.expm1(-2.0 * step * damping)
    return MEADSParameters(step, scale.to(positions.dtype), damping, refresh)
