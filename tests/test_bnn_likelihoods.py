"""Likelihoods and priors of bnn_mcmc.bnn against torch.distributions."""

import math

import pytest
import torch
from torch import distributions as D

from bnn_mcmc.bnn import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    GaussianPrior,
    HeteroscedasticGaussianLikelihood,
    LaplacePrior,
    LayerwiseGaussianPrior,
    LearnedNoiseGaussianLikelihood,
    StudentTLikelihood,
    log_prob_standard_normal_prior,
)

N = 20


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(123)


def test_gaussian_matches_normal(gen):
    preds = torch.randn(3, N, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(N, 2, generator=gen, dtype=torch.float64)
    lik = GaussianLikelihood(tau_pred=4.0)
    ref = D.Normal(preds, 0.5).log_prob(y).sum(-1)
    torch.testing.assert_close(lik.log_prob(preds, y), ref)
    torch.testing.assert_close(lik.nll(preds[0], y), -ref[0].sum())


def test_gaussian_accepts_flat_targets_for_one_output(gen):
    preds = torch.randn(N, 1, generator=gen)
    y = torch.randn(N, generator=gen)
    lik = GaussianLikelihood()
    torch.testing.assert_close(lik.log_prob(preds, y), lik.log_prob(preds, y[:, None]))


def test_heteroscedastic_matches_normal(gen):
    preds = torch.randn(N, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(N, 2, generator=gen, dtype=torch.float64)
    ref = D.Normal(preds[:, :2], torch.exp(0.5 * preds[:, 2:])).log_prob(y).sum(-1)
    torch.testing.assert_close(HeteroscedasticGaussianLikelihood().log_prob(preds, y), ref)


def test_learned_noise_matches_normal(gen):
    preds = torch.randn(5, N, 1, generator=gen, dtype=torch.float64)
    y = torch.randn(N, 1, generator=gen, dtype=torch.float64)
    extra = torch.randn(5, 1, generator=gen, dtype=torch.float64)
    lik = LearnedNoiseGaussianLikelihood(log_scale_prior_mean=0.3, log_scale_prior_std=0.7)
    ref = D.Normal(preds, torch.exp(extra)[:, None, :]).log_prob(y).sum(-1)
    torch.testing.assert_close(lik.log_prob(preds, y, extra), ref)
    torch.testing.assert_close(lik.extra_log_prior(extra), D.Normal(0.3, 0.7).log_prob(extra[:, 0]))
    with pytest.raises(ValueError, match="extra="):
        lik.log_prob(preds, y)


def test_categorical_matches_distribution(gen):
    preds = torch.randn(2, N, 3, generator=gen)
    y = torch.randint(0, 3, (N,), generator=gen)
    ref = D.Categorical(logits=preds).log_prob(y)
    torch.testing.assert_close(CategoricalLikelihood().log_prob(preds, y), ref)


def test_bernoulli_matches_distribution(gen):
    preds = torch.randn(N, 1, generator=gen)
    y = torch.randint(0, 2, (N,), generator=gen)
    ref = D.Bernoulli(logits=preds[:, 0]).log_prob(y.float())
    torch.testing.assert_close(BernoulliLikelihood().log_prob(preds, y), ref)


def test_student_t_matches_distribution(gen):
    preds = torch.randn(N, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(N, 2, generator=gen, dtype=torch.float64)
    ref = D.StudentT(3.0, preds, 0.5).log_prob(y).sum(-1)
    torch.testing.assert_close(StudentTLikelihood(df=3.0, scale=0.5).log_prob(preds, y), ref)


def _assert_moments(samples, mean, var, var_of_var):
    """Sample mean/variance within 5 Monte Carlo standard errors."""
    s = samples.shape[0]
    assert abs(samples.mean().item() - mean) < 5 * math.sqrt(var / s)
    assert abs(samples.var().item() - var) < 5 * math.sqrt(var_of_var / s)


S = 20000


def test_gaussian_draw_moments(gen):
    preds = torch.full((S, 1), 1.5, dtype=torch.float64)
    y = GaussianLikelihood(tau_pred=4.0).draw(preds, gen)[:, 0]
    _assert_moments(y, 1.5, 0.25, 2 * 0.25**2)


def test_heteroscedastic_and_learned_noise_draw_moments(gen):
    preds = torch.tensor([[-1.0, math.log(0.09)]], dtype=torch.float64).expand(S, 2)
    y = HeteroscedasticGaussianLikelihood().draw(preds, gen)[:, 0]
    _assert_moments(y, -1.0, 0.09, 2 * 0.09**2)
    lik = LearnedNoiseGaussianLikelihood()
    extra = torch.full((S, 1), math.log(2.0), dtype=torch.float64)
    y = lik.draw(torch.zeros(S, 1, 1, dtype=torch.float64), gen, extra)[:, 0, 0]
    _assert_moments(y, 0.0, 4.0, 2 * 16.0)


def test_student_t_draw_moments(gen):
    df, scale = 9.0, 0.5
    y = StudentTLikelihood(df, scale).draw(torch.zeros(S, 1, dtype=torch.float64), gen)[:, 0]
    var = scale**2 * df / (df - 2)
    kurt_excess = 6 / (df - 4)
    _assert_moments(y, 0.0, var, var**2 * (2 + kurt_excess))


def test_categorical_and_bernoulli_draw_frequencies(gen):
    logits = torch.log(torch.tensor([0.2, 0.5, 0.3]))
    labels = CategoricalLikelihood().draw(logits.expand(S, 3), gen)
    freq = torch.bincount(labels, minlength=3).double() / S
    p = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    assert ((freq - p).abs() < 5 * torch.sqrt(p * (1 - p) / S)).all()
    y = BernoulliLikelihood().draw(torch.full((S, 1), math.log(0.3 / 0.7)), gen)
    assert abs(y.mean().item() - 0.3) < 5 * math.sqrt(0.21 / S)


def test_bad_targets_raise():
    preds = torch.randn(N, 3)
    cat = CategoricalLikelihood()
    with pytest.raises(TypeError, match="integer class labels"):
        cat.nll(preds, torch.zeros(N))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cat.nll(preds, torch.full((N,), 3))
    with pytest.raises(ValueError, match="data points"):
        cat.nll(preds, torch.zeros(N + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        GaussianLikelihood().nll(preds, torch.zeros(N))
    with pytest.raises(TypeError, match="floating point"):
        GaussianLikelihood().nll(preds, torch.zeros(N, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="0 and 1"):
        BernoulliLikelihood().nll(preds[:, :1], torch.full((N,), 2.0))
    with pytest.raises(ValueError, match="even number"):
        HeteroscedasticGaussianLikelihood().nll(preds, torch.zeros(N, 1))
    with pytest.raises(ValueError, match="precision"):
        GaussianLikelihood(tau_pred=0.0)


# ----------------------------------------------------------------------------- priors
def test_priors_match_distributions(gen):
    w = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(
        GaussianPrior(std=2.0, mean=0.5).log_prob(w), D.Normal(0.5, 2.0).log_prob(w).sum(-1)
    )
    torch.testing.assert_close(
        log_prob_standard_normal_prior(w, 0.5, 2.0), D.Normal(0.5, 2.0).log_prob(w).sum(-1)
    )
    torch.testing.assert_close(
        LaplacePrior(scale=0.3, loc=0.1).log_prob(w), D.Laplace(0.1, 0.3).log_prob(w).sum(-1)
    )
    prior = LayerwiseGaussianPrior([1.0, 0.5], [(2, 3), (1,)])
    std = torch.tensor([1.0] * 6 + [0.5], dtype=torch.float64)
    torch.testing.assert_close(prior.log_prob(w), D.Normal(0.0, std).log_prob(w).sum(-1))
    with pytest.raises(ValueError, match="length 7"):
        prior.log_prob(torch.zeros(8))


def test_layerwise_from_net_is_fan_in_scaled():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    prior = LayerwiseGaussianPrior.from_net(net, weight_scale=2.0, bias_std=0.7)
    assert prior.stds == pytest.approx([1.0, 0.7, 2 / math.sqrt(3), 0.7])
    assert prior.dim == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    "prior, var",
    [
        (GaussianPrior(std=0.5, mean=1.0), 0.25),
        (LaplacePrior(scale=0.5, loc=1.0), 2 * 0.25),
    ],
)
def test_prior_sample_moments(prior, var, gen):
    x = prior.sample(gen, (S,), dim=1, dtype=torch.float64)[:, 0]
    kurt = 3.0 if isinstance(prior, GaussianPrior) else 6.0
    _assert_moments(x, 1.0, var, var**2 * (kurt - 1))


def test_layerwise_sample_std(gen):
    prior = LayerwiseGaussianPrior([2.0, 0.1], [(1,), (1,)])
    x = prior.sample(gen, (S,), dtype=torch.float64)
    for j, s in enumerate([2.0, 0.1]):
        _assert_moments(x[:, j], 0.0, s**2, 2 * s**4)
