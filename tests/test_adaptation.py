"""Adaptation pieces on their own: dual averaging, Welford, Stan's windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnn_mcmc.adaptation import (
    adaptation_windows,
    dual_averaging_final,
    dual_averaging_init,
    dual_averaging_update,
    welford_covariance,
    welford_init,
    welford_update,
)


def test_dual_averaging_finds_the_target_step():
    """Noisy acceptance exp(-eps): the fixed point of target 0.8 is eps = -log(0.8)."""
    rng = np.random.default_rng(0)
    state = dual_averaging_init(1.0)
    for _ in range(2000):
        step = np.exp(state.log_step)
        accept = min(1.0, np.exp(-step) + rng.normal(0, 0.05))
        state = dual_averaging_update(state, accept, 0.8)
    assert abs(dual_averaging_final(state) - (-np.log(0.8))) < 0.02


def test_dual_averaging_is_vectorised_over_chains():
    state = dual_averaging_init(np.array([0.1, 1.0, 10.0]))
    for _ in range(1500):
        step = np.exp(state.log_step)
        state = dual_averaging_update(state, np.minimum(1.0, np.exp(-step)), 0.6)
    np.testing.assert_allclose(dual_averaging_final(state), -np.log(0.6), rtol=0.05)


@pytest.mark.parametrize("dense", [False, True])
def test_welford_equals_numpy_cov(dense):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(257, 4)) @ rng.normal(size=(4, 4)) + 3.0
    state = welford_init(torch.zeros(4), dense)
    for row in torch.from_numpy(x):
        state = welford_update(state, row)
    cov = np.cov(x, rowvar=False)
    expected = cov if dense else np.diag(cov)
    np.testing.assert_allclose(welford_covariance(state, regularize=False).numpy(), expected)
    np.testing.assert_allclose(state.mean.numpy(), x.mean(0))
    n = 257
    shrunk = n / (n + 5) * expected + 1e-3 * 5 / (n + 5) * (np.eye(4) if dense else 1.0)
    np.testing.assert_allclose(welford_covariance(state).numpy(), shrunk)


def test_welford_batched_over_chains():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 3, 2))
    state = welford_init(torch.zeros(3, 2), dense=False)
    for row in torch.from_numpy(x):
        state = welford_update(state, row)
    np.testing.assert_allclose(
        welford_covariance(state, regularize=False).numpy(), x.var(0, ddof=1)
    )


def test_welford_needs_two_draws():
    state = welford_update(welford_init(torch.zeros(2), False), torch.ones(2))
    with pytest.raises(ValueError, match="at least 2"):
        welford_covariance(state)


def test_windows_match_stan():
    assert adaptation_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    # a window ending exactly at the terminal buffer is kept (Stan: `>`, not `>=`)
    assert adaptation_windows(500) == [(75, 100), (100, 150), (150, 250), (250, 450)]
    assert adaptation_windows(200) == [(75, 100), (100, 150)]
    assert adaptation_windows(150) == [(75, 100)]
    # buffers that do not fit shrink to 15 % / 75 % / 10 %
    assert adaptation_windows(100) == [(15, 90)]
    assert adaptation_windows(19) == []


@pytest.mark.parametrize("n", [20, 57, 150, 333, 1000, 2500])
def test_windows_tile_the_slow_phase(n):
    windows = adaptation_windows(n)
    assert windows[0][0] > 0
    for (a, b), (c, _) in zip(windows, windows[1:]):
        assert b == c and b > a
    assert windows[-1][1] < n
