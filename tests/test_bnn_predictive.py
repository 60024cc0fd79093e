"""Posterior predictive, pointwise log-likelihoods and function-space diagnostics."""

import math

import pytest
import torch
from torch import nn

from bnn_mcmc.bnn import (
    MLP,
    CategoricalLikelihood,
    FunctionalNet,
    GaussianLikelihood,
    LearnedNoiseGaussianLikelihood,
    function_space_diagnostics,
    nn_pot_energy,
    pointwise_log_likelihood,
    predict,
)


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    net = MLP(1, 1, hidden_layers=(8,), activation_fn=torch.tanh)
    x = torch.linspace(-2, 2, 11)[:, None]
    draws = torch.randn(2, 30, net.num_params, generator=g)
    return net, x, draws


def test_predict_batched_equals_loop_and_summaries(setup):
    net, x, draws = setup
    flat = draws.reshape(60, -1)[:59]  # odd count: the 0.5 quantile is the sample median
    pred = predict(net, flat, x, chunk_size=7)
    loop = torch.stack([net(x, weights=w) for w in flat])
    torch.testing.assert_close(pred.f, loop)
    torch.testing.assert_close(pred.mean, loop.mean(0))
    torch.testing.assert_close(pred.variance, loop.var(0))
    torch.testing.assert_close(pred.quantiles[1], loop.median(0).values)
    assert pred.quantiles.shape == (3, 11, 1) and pred.y is None
    # a plain nn.Module gives the same through FunctionalNet
    seq = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    ws = torch.randn(5, FunctionalNet(seq).dim, generator=torch.Generator().manual_seed(1))
    out = predict(seq, ws, x, chunk_size=2).f
    torch.testing.assert_close(out, FunctionalNet(seq)(ws, x))


def test_predict_y_samples_have_predictive_moments(setup):
    net, x, _ = setup
    w = torch.randn(net.num_params, generator=torch.Generator().manual_seed(2))
    draws = w.expand(4000, -1)  # one weight vector: y ~ N(f, 1 / tau)
    pred = predict(
        net,
        draws,
        x,
        likelihood=GaussianLikelihood(tau_pred=25.0),
        generator=torch.Generator().manual_seed(3),
    )
    f = net(x, weights=w)
    se = 0.2 / math.sqrt(4000)
    assert ((pred.y.mean(0) - f).abs() < 5 * se).all()
    assert ((pred.y.var(0) - 0.04).abs() < 5 * 0.04 * math.sqrt(2 / 4000)).all()


def test_classification_predictive_is_probabilities(setup):
    _, x, _ = setup
    net = MLP(1, 3, hidden_layers=(4,))
    draws = torch.randn(10, net.num_params, generator=torch.Generator().manual_seed(4))
    pred = predict(net, draws, x, likelihood=CategoricalLikelihood())
    torch.testing.assert_close(pred.mean.sum(-1), torch.ones(11))
    assert pred.y.shape == (10, 11) and pred.y.dtype == torch.long


def test_pointwise_log_likelihood_sums_to_potential(setup):
    net, x, draws = setup
    y = torch.sin(x)
    lik = LearnedNoiseGaussianLikelihood()
    extra = torch.zeros(2, 30, 1)
    full = torch.cat([draws, extra], dim=-1)
    ll = pointwise_log_likelihood(net, full, x, y, lik, chunk_size=8)
    assert ll.shape == (2, 30, 11)
    U = nn_pot_energy(net, x, y, likelihood=lik, prior_log_prob_func=lambda w: w.sum(-1) * 0)
    expected = -U(full.reshape(60, -1)) - lik.extra_log_prior(full[..., -1:]).reshape(60)
    torch.testing.assert_close(ll.reshape(60, 11).sum(-1), expected)


def test_function_space_diagnostics_detect_disagreeing_chains(setup):
    net, x, _ = setup
    g = torch.Generator().manual_seed(5)
    # output bias only varies: predictions are iid N(0, 1) across draws -> R-hat ~ 1
    base = torch.zeros(net.num_params)
    good = base.expand(4, 200, -1).clone()
    good[..., -1] = torch.randn(4, 200, generator=g)
    diag = function_space_diagnostics(net, good, x)
    assert diag.rhat.shape == (11, 1)
    assert (diag.rhat < 1.02).all() and (diag.ess_bulk > 400).all()
    bad = good.clone()
    bad[0, :, -1] += 3.0  # one chain stuck elsewhere
    assert (function_space_diagnostics(net, bad, x).rhat > 1.2).all()


def test_predictive_bad_input(setup):
    net, x, draws = setup
    with pytest.raises(ValueError, match=f"\\(num_draws, {net.num_params}\\)"):
        predict(net, draws[..., :-1], x)
    with pytest.raises(ValueError, match="likelihood="):
        predict(net, draws[0], x, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"\(chains, draws, dim\)"):
        function_space_diagnostics(net, draws[0], x)
