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
Stan Development Team. *Stan Reference Manual*, "Automatic parameter tuning".
"""

from __future__ import annotations


def adaptation_windows(
    num_warmup: int, init_buffer: int = 75, term_buffer: int = 50, base_window: int = 25
) -> list[tuple[int, int]]:
    """Slow windows ``(start, end)`` (end exclusive) for ``num_warmup`` steps.

    Returns an empty list when ``num_warmup < 20``.
    """
    if num_warmup < 0:
        raise ValueError(f"num_warmup must be non-negative; got {num_warmup}.")
    if num_warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - init_buffer - term_buffer
    last = num_warmup - term_buffer
    windows = [(init_buffer, init_buffer + base_window)]
    if windows[0][1] >= last:
        return windows
    start, size = windows[0][1], 2 * base_window
    end = start + size
    while True:
        if end + 2 * size >= last:
            end = last
        windows.append((start, end))
        if end >= last:
            return windows
        start, size = end, 2 * size
        end = start + size
