r"""The initial step-size search of Hoffman & Gelman (2014), Algorithm 4.

Given the log acceptance ratio :math:`\log r(\varepsilon) = H_0 - H(\varepsilon)`
of one leapfrog step of size :math:`\varepsilon` from a fixed point and momentum,
let :math:`a = 1` when :math:`\log r(\varepsilon_0) > \log\theta` and :math:`a = -1`
otherwise; then :math:`\varepsilon \leftarrow 2^a \varepsilon` while
:math:`a \log r(\varepsilon) > a \log\theta`.  The first step size that crosses
the threshold is returned.  Hoffman & Gelman use :math:`\theta = 1/2`; Stan (and
this package) :math:`\theta = 0.8`.

References
----------
Hoffman, M. D. & Gelman, A. (2014). The No-U-Turn Sampler. *JMLR* 15, 1593–1623, Alg. 4.
Stan Development Team. ``base_hmc.hpp``, ``init_stepsize``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

#: Stan's acceptance threshold of the search.
SEARCH_THRESHOLD = 0.8


def reasonable_step_size(
    log_accept: Callable[[float], float],
    step_size: float,
    threshold: float = SEARCH_THRESHOLD,
    max_doublings: int = 100,
) -> float:
    """Double or halve ``step_size`` until ``log_accept`` crosses ``log(threshold)``.

    Parameters
    ----------
    log_accept
        :math:`\\varepsilon \\mapsto H_0 - H(\\varepsilon)` (``-inf`` on failure).
    step_size
        The start :math:`\\varepsilon_0`.
    threshold
        :math:`\\theta` in (0, 1).
    max_doublings
        Bound on the number of trials (reached only by degenerate potentials).
    """
    log_threshold = math.log(threshold)
    value = log_accept(step_size)
    up = value > log_threshold
    for _ in range(max_doublings):
        if (value > log_threshold) != up:
            break
        step_size = step_size * 2.0 if up else step_size * 0.5
        value = log_accept(step_size)
    return step_size
