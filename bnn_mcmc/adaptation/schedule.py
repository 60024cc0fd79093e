"""Stan's windowed warmup schedule for mass-matrix adaptation.

Warmup is split into a fast initial buffer (step size only), a sequence of
slow windows whose sizes double (the mass matrix is re-estimated from the draws
of each window at its end), and a fast terminal buffer.  With the defaults
75 / 25 / 50 and 1000 warmup steps the windows are
``[75, 100), [100, 150), [150, 250), [250, 450), [450, 950)``.  When the
buffers do not fit, they are shrunk to 15 % / 75 % / 10 % of the warmup, as in
Stan; with fewer than 20 steps no mass matrix is adapted.

References
----------
Stan Development Team. *Stan Reference Manual*, "Automatic parameter tuning"
(HMC algorithm parameters, warmup).  The rule is the one of Stan's
``stan/mcmc/windowed_adaptation.hpp``.
"""

from __future__ import annotations

MIN_WARMUP_FOR_WINDOWS = 20
"""Below this many warmup steps Stan adapts no mass matrix (no slow window)."""


def _check_count(value: int, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")


def adaptation_windows(
    num_warmup: int, init_buffer: int = 75, term_buffer: int = 50, base_window: int = 25
) -> list[tuple[int, int]]:
    """Slow windows ``(start, end)`` (end exclusive) for ``num_warmup`` steps.

    Parameters
    ----------
    num_warmup
        Number of warmup transitions :math:`N`.
    init_buffer, term_buffer
        Lengths :math:`b_0` and :math:`b_T` of the fast buffers before the first and after the
        last slow window (only the step size adapts there).
    base_window
        Length :math:`w_1` of the first slow window (at least 1).

    Returns
    -------
    list of (int, int)
        Consecutive windows that tile :math:`[b_0, N - b_T)`; empty when
        :math:`N < 20`.

    Notes
    -----
    Let :math:`L = N - b_T` be the end of the slow phase.  If
    :math:`b_0 + w_1 + b_T > N` the three stages are reduced to
    :math:`b_0 = \\lfloor 0.15 N \\rfloor`, :math:`b_T = \\lfloor 0.1 N \\rfloor` and
    :math:`w_1 = N - b_0 - b_T` (one window, about 75 % of the warmup).  The first window is
    :math:`[b_0, e_1)` with :math:`e_1 = b_0 + w_1`.  At the end :math:`e_k < L` of window
    :math:`k` the size doubles, :math:`w_{k+1} = 2 w_k`, and the next end is
    :math:`e_{k+1} = e_k + w_{k+1}`, except that when :math:`e_{k+1} \\ne L` and the window
    after it would end past the slow phase, :math:`e_{k+1} + 2 w_{k+1} > L`, the window is
    stretched to :math:`e_{k+1} = L`.  A following window ending exactly at :math:`L` is kept
    (e.g. :math:`N = 500` gives ``[75, 100), [100, 150), [150, 250), [250, 450)``).

    The stretch can leave a last window of a single draw (with the defaults only for
    :math:`N = 151`: ``[75, 100), [100, 101)``, exactly as Stan).  A covariance needs at least
    two draws, so a sampler keeps its previous mass-matrix estimate at the end of a window
    with fewer than 2 draws (Stan's Welford estimator likewise leaves the variance unchanged
    below two draws).

    In Stan's source the reduced 15 % / 75 % / 10 % partition is logged but the window
    counters are not re-initialised (``restart()`` is only called in the default branch);
    this function follows the partition Stan announces: one window
    :math:`[\\lfloor 0.15 N \\rfloor, N - \\lfloor 0.1 N \\rfloor)`.

    References
    ----------
    Stan Development Team. *Stan Reference Manual*, "HMC algorithm parameters".

    Examples
    --------
    >>> adaptation_windows(1000)
    [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    >>> adaptation_windows(100)
    [(15, 90)]
    """
    _check_count(num_warmup, "num_warmup", 0)
    _check_count(init_buffer, "init_buffer", 0)
    _check_count(term_buffer, "term_buffer", 0)
    _check_count(base_window, "base_window", 1)
    if num_warmup < MIN_WARMUP_FOR_WINDOWS:
        return []
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - init_buffer - term_buffer
    last = num_warmup - term_buffer
    size = base_window
    start, end = init_buffer, init_buffer + base_window
    windows = []
    while True:
        windows.append((start, end))
        if end >= last:
            return windows
        size *= 2
        start, end = end, end + size
        if end != last and end + 2 * size > last:
            end = last
