r"""Pieces shared by the single-chain and the batched NUTS kernels.

The linear combinations that turn stored momentum sums into the sums a merge of
two trees checks for a U-turn (Betancourt 2017's generalised criterion with Stan's
extra checks across the merge), the pairs whose dot products must stay positive,
the log-sum of multinomial weights, and a leaf's term of the acceptance statistic.

References
----------
Betancourt, M. (2017). A conceptual introduction to Hamiltonian Monte Carlo. arXiv:1701.02434.
Stan Development Team. ``stan/mcmc/hmc/nuts/base_nuts.hpp``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Rows that combine stored momentum sums into the three sums a merge checks
#: (see the merge check of :func:`bnn_mcmc.kernels.nuts.nuts_step`): inside a
#: subtree from ``(sum at n, sum before s, sum before mid, p_mid, p_{mid-1})``;
#: at the top from ``(tree sum, subtree sum, first p of the subtree, p at the edge)``.
SUBTREE_COMBINATION = ((1, -1, 0, 0, 0), (0, -1, 1, 1, 0), (1, 0, -1, 0, 1))
TOP_COMBINATION = ((1, 1, 0, 0), (1, 0, 1, 0), (0, 1, 0, 1))
#: (row of the combined sums, velocity) pairs whose dot product must stay positive
TURNING_PAIRS = ((0, 0), (0, 1), (1, 0), (1, 2), (2, 3), (2, 1))
_CACHE: dict = {}


def combination(rows: tuple, like: Tensor) -> Tensor:
    """``rows`` as a tensor of ``like``'s dtype and device (cached)."""
    key = (rows, like.dtype, like.device)
    if key not in _CACHE:
        _CACHE[key] = torch.tensor(rows, dtype=like.dtype, device=like.device)
    return _CACHE[key]


def leaf_acceptance(delta: float) -> float:
    r"""A leaf's term of the acceptance statistic, :math:`\min(1, e^{H_0 - H})`; 0 for NaN.

    ``delta`` is :math:`H - H_0`.  Divergent leaves are included, as in Stan.
    """
    if delta <= 0:
        return 1.0
    return math.exp(-delta) if delta == delta else 0.0


def log_add(a: float, b: float) -> float:
    """:math:`\\log(e^a + e^b)` without overflow (``a`` may be ``-inf``)."""
    if a == -math.inf:
        return b
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))
