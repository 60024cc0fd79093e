"""The warmup window schedule against a per-transition transcription of Stan's rule."""

from __future__ import annotations

import pytest

from bnn_mcmc.adaptation import adaptation_windows


def stan_window_ends(
    num_warmup: int, init_buffer: int, term_buffer: int, base_window: int
) -> list[tuple[int, int]]:
    """Windows from Stan's per-transition bookkeeping (``windowed_adaptation``).

    Written from the algorithm's description, transition by transition: a counter of
    transitions, the index of the transition that closes the current window
    (``next_window``, inclusive), the current window size, draws collected while
    ``init_buffer <= counter < num_warmup - term_buffer``; when the counter reaches
    ``next_window`` the window closes and the next one is computed: stop if this was the
    last slow transition; else double the size, set the next closing transition, and if the
    window after that one would reach the terminal buffer, stretch the new one to it.
    """
    if num_warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.10 * num_warmup)
        base_window = num_warmup - (init_buffer + term_buffer)
    last_slow = num_warmup - term_buffer - 1  # index of the last slow transition
    window_size = base_window
    next_window = init_buffer + window_size - 1
    windows: list[tuple[int, int]] = []
    window_start = None
    for counter in range(num_warmup):
        collecting = init_buffer <= counter < num_warmup - term_buffer
        if collecting and window_start is None:
            window_start = counter
        if counter == next_window:
            windows.append((window_start, counter + 1))
            window_start = None
            if next_window == last_slow:
                continue
            window_size *= 2
            next_window = counter + window_size
            if next_window == last_slow:
                continue
            following_boundary = next_window + 2 * window_size
            if following_boundary >= num_warmup - term_buffer:
                next_window = last_slow
    return windows


@pytest.mark.parametrize(
    "buffers",
    [
        pytest.param(lambda n: (75, 50, 25), id="stan_defaults"),
        pytest.param(
            lambda n: (int(0.15 * n), int(0.1 * n), max(int(0.05 * n), 10)), id="mh_buffers"
        ),
        pytest.param(lambda n: (10, 10, 5), id="small_buffers"),
    ],
)
def test_windows_equal_stan_for_every_warmup_length(buffers):
    mismatches = []
    for n in range(1, 5001):
        init, term, base = buffers(n)
        ours = adaptation_windows(n, init_buffer=init, term_buffer=term, base_window=base)
        if ours != stan_window_ends(n, init, term, base):
            mismatches.append(n)
    assert not mismatches, f"differs from Stan for num_warmup in {mismatches[:20]}"


@pytest.mark.parametrize("n", [300, 500, 900, 1700, 3300])
def test_window_ending_at_the_terminal_buffer_is_kept(n):
    # these lengths were merged into the previous window by a `>=` in place of Stan's `>`
    windows = adaptation_windows(n)
    sizes = [b - a for a, b in windows]
    assert sizes == [25 * 2**k for k in range(len(sizes))]
    assert windows[-1][1] == n - 50


def test_windows_tile_the_slow_phase_and_hold_a_draw():
    for n in range(20, 5001):
        windows = adaptation_windows(n)
        assert windows[0][0] == (75 if n >= 150 else int(0.15 * n))
        assert windows[-1][1] == n - (50 if n >= 150 else int(0.1 * n))
        assert all(b == c for (_, b), (c, _) in zip(windows, windows[1:]))
        assert all(b > a for a, b in windows)


def test_single_draw_window_only_at_151():
    # Stan's stretch rule leaves a last window of one draw; the sampler keeps the previous
    # mass-matrix estimate there (see the docstring of adaptation_windows)
    short = [n for n in range(1, 5001) if any(b - a < 2 for a, b in adaptation_windows(n))]
    assert short == [151]
    assert adaptation_windows(151) == [(75, 100), (100, 101)]


def test_short_warmup_uses_15_75_10():
    assert adaptation_windows(149) == [(22, 135)]
    assert adaptation_windows(20) == [(3, 18)]
    assert adaptation_windows(19) == []
    assert adaptation_windows(0) == []


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_warmup": -1}, "num_warmup"),
        ({"num_warmup": 100.0}, "num_warmup"),
        ({"num_warmup": 100, "base_window": 0}, "base_window"),
        ({"num_warmup": 100, "init_buffer": -3}, "init_buffer"),
        ({"num_warmup": 100, "term_buffer": -1}, "term_buffer"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        adaptation_windows(**kwargs)
