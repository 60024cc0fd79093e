"""Honest baselines: SSGE draws that scale with the dimension, AVB saturation noticed, the
ELBO itself, the restored discriminator, noise_std vs the perturbation, a deep ensemble,
chain starts from a trained approximation and PSIS-k of mean field."""

import math
import warnings

import pytest
import torch

from bnn_mcmc import MultiChainHMC
from bnn_mcmc.bnn import MLP, GaussianPrior, nn_pot_energy
from bnn_mcmc.diagnostics import posterior_importance
from bnn_mcmc.hnets import HMLP, HPerturbWrapper
from bnn_mcmc.variational import (
    AVB,
    SSGE,
    AVBSaturationWarning,
    FewSSGEDrawsWarning,
    ImplicitPosterior,
    MeanFieldGaussian,
    TrainConfig,
    default_num_samples,
    elbo_estimate,
    fit_deep_ensemble,
    fit_variational,
    starts_from,
)

from .variational_problem import make_problem


def _score_slope(dim: int, m: int) -> float:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, dim, generator=g, dtype=torch.float64)
    est = SSGE()(x)
    return float((est * -x).sum() / x.square().sum())


def test_ssge_default_draws_scale_with_the_dimension():
    # MLP 1-20-20-1: 481 weights.  32 draws (the old default) shrink the entropy gradient
    # ~20-fold; the default draws give at least half of it
    assert TrainConfig().num_samples is None
    assert default_num_samples(481) == 481 and default_num_samples(3) == 64
    assert default_num_samples(10_000) == 512
    hnet = HMLP([[481]], uncond_in_size=4, cond_in_size=0, layers=(8,), generator=0)
    assert ImplicitPosterior(hnet, SSGE()).default_num_samples() == 481
    assert _score_slope(481, 32) < 0.1
    assert _score_slope(481, default_num_samples(481)) > 0.5


def test_few_ssge_draws_warn():
    hnet = HMLP([[100]], uncond_in_size=2, cond_in_size=0, layers=(4,), generator=0)
    q = ImplicitPosterior(hnet, SSGE())
    w = q.rsample(8, torch.Generator().manual_seed(0))
    with pytest.warns(FewSSGEDrawsWarning, match="num_samples=None"):
        q.kl_term(w, GaussianPrior(1.0), torch.Generator())
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewSSGEDrawsWarning)
        q2 = ImplicitPosterior(hnet, SSGE())
        q2.kl_term(q2.rsample(64, torch.Generator().manual_seed(0)), GaussianPrior(1.0), None)


def test_avb_warns_on_saturation_and_not_on_a_matched_q():
    g = torch.Generator().manual_seed(0)
    prior = GaussianPrior(1.0)
    dim = 10
    basis = torch.randn(2, dim, generator=g)
    low_rank = AVB(
        dim,
        hidden_layers=(32,),
        lr=1e-2,
        generator=1,
        saturation_patience=20,
        adaptive_contrast="diagonal",
        gradient_penalty=0.0,
    )
    with pytest.warns(AVBSaturationWarning, match="sigma_noise"):
        for _ in range(80):
            low_rank.kl_term(torch.randn(32, 2, generator=g) @ basis, prior, g)
            if low_rank.warned:
                break
    assert low_rank.saturated_steps >= 20 and low_rank.last_disc_loss < 0.05
    matched = AVB(dim, hidden_layers=(32,), lr=1e-2, generator=1, saturation_patience=20)
    # (matched: the defaults, covariance contrast and gradient penalty)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AVBSaturationWarning)
        for _ in range(60):
            matched.kl_term(torch.randn(32, dim, generator=g), prior, g)
    assert matched.saturated_steps == 0 and matched.last_disc_loss > 0.5


def _avb_posterior(p, seed: int) -> ImplicitPosterior:
    inner = HMLP(p.net.param_shapes, uncond_in_size=3, cond_in_size=0, layers=(8,), generator=seed)
    hnet = HPerturbWrapper(inner, sigma_noise=0.05, perturbation="independent", verbose=False)
    return ImplicitPosterior(hnet, AVB(hnet.num_outputs, hidden_layers=(16,), generator=seed))


def test_fit_variational_restores_the_discriminator_with_the_best_state():
    p = make_problem()
    cfg = dict(lr=0.05, num_samples=16, elbo_every=None)
    q = _avb_posterior(p, 0)
    hist = fit_variational(
        q,
        p.net,
        p.x,
        p.y,
        p.likelihood,
        p.prior,
        TrainConfig(num_iters=40, eval_every=4, **cfg),
        val_data=(p.x_test, -3 * p.y_test),  # fitting the data worsens it
        generator=3,
    )
    assert hist.best_iter < 40
    assert not any(math.isnan(v) for v in hist.disc_loss)
    # the same run stopped at the best iteration: posterior and discriminator both match
    again = _avb_posterior(p, 0)
    fit_variational(
        again,
        p.net,
        p.x,
        p.y,
        p.likelihood,
        p.prior,
        TrainConfig(num_iters=hist.best_iter, **cfg),
        generator=3,
    )
    for a, b in zip(q.parameters(), again.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(
        q.estimator.discriminator.parameters(), again.estimator.discriminator.parameters()
    ):
        assert torch.equal(a, b)


def test_noise_std_scales_the_input_not_the_perturbation():
    inner = HMLP([[50]], uncond_in_size=3, cond_in_size=0, layers=(8,), generator=0)
    with torch.no_grad():
        for prm in inner.parameters():
            prm.zero_()  # h = 0: w is the perturbation alone
    shared = HPerturbWrapper(inner, sigma_noise=0.1, verbose=False)
    with pytest.raises(ValueError, match="sigma_noise"):
        ImplicitPosterior(shared, SSGE(), noise_std=3.0)
    indep = HPerturbWrapper(inner, sigma_noise=0.1, perturbation="independent", verbose=False)
    w = ImplicitPosterior(indep, SSGE(), noise_std=3.0).sample(400, 0)
    assert float(w.std()) == pytest.approx(0.1, rel=0.03)


def test_elbo_estimate_kinds_and_the_semi_implicit_bound(float64_default):
    # a mean net that is zero everywhere: q = N(0, sigma^2 I) exactly, so the
    # semi-implicit bound equals the mean-field ELBO of that Gaussian for any K
    p = make_problem()
    inner = HMLP(p.net.param_shapes, uncond_in_size=2, cond_in_size=0, layers=(4,), generator=0)
    with torch.no_grad():
        for prm in inner.parameters():
            prm.zero_()
    sigma = 0.1
    hnet = HPerturbWrapper(inner, sigma_noise=sigma, perturbation="independent", verbose=False)
    q = ImplicitPosterior(hnet, SSGE())
    mf = MeanFieldGaussian(3, init_mean=torch.zeros(3), init_std=sigma)
    a = elbo_estimate(
        q, p.net, p.x, p.y, p.likelihood, p.prior, num_draws=2000, num_mixture=4, generator=2
    )
    b = elbo_estimate(mf, p.net, p.x, p.y, p.likelihood, p.prior, num_draws=2000, generator=3)
    assert a.kind == "semi-implicit bound" and b.kind == "exact KL"
    assert abs(a.value - b.value) < 4 * math.hypot(a.se, b.se)
    shared = ImplicitPosterior(HPerturbWrapper(inner, sigma_noise=sigma, verbose=False), SSGE())
    c = elbo_estimate(shared, p.net, p.x, p.y, p.likelihood, p.prior)
    assert c.kind == "unavailable" and math.isnan(c.value)
    hist = fit_variational(
        q,
        p.net,
        p.x,
        p.y,
        p.likelihood,
        p.prior,
        TrainConfig(num_iters=2, elbo_every=1, num_samples=8),
        generator=0,
    )
    assert "not an ELBO" in hist.loss_kind and hist.elbo_kind == "semi-implicit bound"
    assert len(hist.elbo) == 2


def test_deep_ensemble_and_chain_starts():
    torch.manual_seed(0)
    p = make_problem()
    net = MLP(2, 1, hidden_layers=())
    ens = fit_deep_ensemble(
        net, p.likelihood, p.prior, p.x, p.y, num_members=3, steps=150, lr=0.05, generator=0
    )
    assert ens.members.shape == (3, 3) and ens.cost.grad_evals == 450
    # a linear-Gaussian model has one mode: every member sits at the posterior mean
    assert torch.allclose(ens.members, p.post_mean.expand(3, 3), atol=0.02)
    starts = starts_from(ens, 3, generator=0)
    assert starts.shape == (3, 3)
    q = MeanFieldGaussian(3, init_mean=p.post_mean, init_std=0.05)
    pot = nn_pot_energy(p.net, p.x, p.y, likelihood=p.likelihood, prior=p.prior)
    sampler = MultiChainHMC(
        starts_from(q, 2, generator=1), pot, chain_type="hmc", seed=0, stepsize=0.05, num_steps=5
    )
    sampler.simulate_chains(3)
    assert sampler.samples().shape[:2] == (2, 3)
    with pytest.raises(TypeError, match="sample"):
        starts_from(object(), 2)


def test_pareto_k_of_mean_field(float64_default):
    p = make_problem()
    pot = nn_pot_energy(p.net, p.x, p.y, likelihood=p.likelihood, prior=p.prior)
    sd = p.post_cov.diagonal().sqrt()
    good = MeanFieldGaussian(3, init_mean=p.post_mean, init_std=1.0)
    with torch.no_grad():
        good.rho.copy_(torch.log(torch.expm1(1.5 * sd)))  # wider than the posterior
    narrow = MeanFieldGaussian(3, init_mean=p.post_mean, init_std=1.0)
    with torch.no_grad():
        narrow.rho.copy_(torch.log(torch.expm1(0.2 * sd)))
    k_good = posterior_importance(good, pot, 2000, generator=0)
    k_narrow = posterior_importance(narrow, pot, 2000, generator=0)
    assert k_good.pareto_k < 0.5 < 0.7 < k_narrow.pareto_k
    assert k_good.ess > 500 and k_narrow.ess < 200
