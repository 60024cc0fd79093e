"""Spectral Stein gradient estimator against Gaussians with known scores."""

import pytest
import torch

from bnn_mcmc.variational import SSGE, median_bandwidth

COV = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=torch.float64)
MEAN = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)


def _gaussian(m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = MEAN + torch.randn(m, 3, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(COV).T
    return x, -(x - MEAN) @ torch.linalg.inv(COV)


def _rel_err(est: torch.Tensor, true: torch.Tensor) -> float:
    return float((est - true).norm() / true.norm())


def test_score_of_correlated_gaussian_at_samples():
    # Measured over 20 seeds (M = 500): relative L2 error 0.25 +- 0.03, max 0.29.  A wrong
    # sign, a missing term or a wrong bandwidth scaling gives an error near or above 1.
    errs, slopes = [], []
    for seed in range(5):
        x, true = _gaussian(500, seed)
        est = SSGE()(x)
        assert est.shape == x.shape and est.dtype == x.dtype
        errs.append(_rel_err(est, true))
        slopes.append(float((est * true).sum() / true.square().sum()))
    assert sum(errs) / len(errs) < 0.32, errs
    assert max(errs) < 0.4, errs
    # no systematic shrinkage or inflation beyond the kernel-smoothing bias
    assert all(0.7 < s < 1.1 for s in slopes), slopes


def test_score_at_query_points_and_error_shrinks_with_samples():
    x_small, _ = _gaussian(100, 7)
    x_big, _ = _gaussian(800, 7)
    g = torch.Generator().manual_seed(99)
    q = MEAN + 0.5 * torch.randn(200, 3, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(
        COV
    ).T
    true = -(q - MEAN) @ torch.linalg.inv(COV)
    err_small = _rel_err(SSGE()(x_small, q), true)
    err_big = _rel_err(SSGE()(x_big, q), true)
    assert err_big < 0.4, err_big
    assert err_big < err_small


def test_fixed_number_of_eigenfunctions_and_float32():
    x, true = _gaussian(400, 3)
    est = SSGE(num_eigen=20)(x.float())
    assert est.dtype == torch.float32
    assert _rel_err(est.double(), true) < 0.4


def test_entropy_surrogate_has_score_gradient_and_zero_value():
    x, _ = _gaussian(200, 1)
    x = x.clone().requires_grad_(True)
    ssge = SSGE()
    s = ssge.entropy_surrogate(x)
    assert float(s.detach()) == 0.0
    s.backward()
    torch.testing.assert_close(x.grad, ssge(x.detach()) / x.shape[0])


def test_median_bandwidth_matches_numpy():
    x, _ = _gaussian(50, 2)
    d = torch.cdist(x, x)
    iu = torch.triu_indices(50, 50, 1)
    assert torch.isclose(median_bandwidth(x), d[iu[0], iu[1]].median())


@pytest.mark.parametrize(
    "kwargs",
    [{"num_eigen": 0}, {"eigen_ratio": 1.5}, {"bandwidth": -1.0}, {"jitter": -1.0}],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SSGE(**kwargs)


def test_bad_samples():
    with pytest.raises(ValueError, match="samples"):
        SSGE()(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="query"):
        SSGE()(torch.randn(10, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(4, 2))
