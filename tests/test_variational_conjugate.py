"""Variational posteriors on conjugate Bayesian linear regression (closed-form posterior).

Stated tolerances, at 21 test inputs from inside to far outside the data (4000 draws, so the
Monte Carlo error of a variance is about 2 %):

* predictive mean of f within 0.25 posterior sd of the closed form (measured <= 0.07);
* implicit posteriors (SSGE, AVB): predictive variance of f within [0.75, 1.25] of the
  closed form (measured 0.85-0.92 for SSGE, which slightly under-disperses, and 0.95-1.01
  for AVB);
* mean field: its optimum is known exactly for a Gaussian posterior (means m, variances
  1/Lambda_jj); the fitted standard deviations within 10 % of it (measured <= 4 %), and its
  predictive variance within [0.6, 1.25] of the closed form (it ignores correlations).

A posterior trained without its entropy/KL term collapses to a point and fails all of these.
"""

import math

import pytest
import torch
from torch import nn

from bnn_mcmc.bnn import GaussianLikelihood, GaussianPrior, LaplacePrior, predict
from bnn_mcmc.hnets import HMLP, HPerturbWrapper
from bnn_mcmc.variational import (
    AVB,
    SSGE,
    ImplicitPosterior,
    MeanFieldGaussian,
    TrainConfig,
    fit_variational,
    predictive_nll,
)

from .variational_problem import make_problem


@pytest.fixture(scope="module")
def problem():
    return make_problem()


def _check_predictive(problem, q, var_lo, var_hi):
    draws = q.sample(4000, generator=123)
    assert draws.shape == (4000, 3) and not draws.requires_grad
    pred = predict(problem.net, draws, problem.x_test)
    mean, var = problem.predictive(problem.x_test)
    z = ((pred.mean[:, 0] - mean) / var.sqrt()).abs()
    assert z.max() < 0.25, z
    ratio = pred.variance[:, 0] / var
    assert ((ratio > var_lo) & (ratio < var_hi)).all(), ratio
    return draws


def _implicit(problem, estimator, seed=1):
    hnet = HMLP(problem.net.param_shapes, uncond_in_size=3, cond_in_size=0, layers=(32,),
                generator=seed)
    return ImplicitPosterior(hnet, estimator)


def test_implicit_ssge_matches_closed_form(problem):
    q = _implicit(problem, SSGE())
    cfg = TrainConfig(num_iters=500, lr=3e-3, lr_final=3e-4, num_samples=64)
    hist = fit_variational(q, problem.net, problem.x, problem.y, problem.likelihood,
                           problem.prior, cfg, generator=0)
    assert len(hist.loss) == 500 and all(math.isnan(k) for k in hist.kl)
    _check_predictive(problem, q, 0.75, 1.25)


def test_implicit_avb_matches_closed_form(problem):
    q = _implicit(problem, AVB(3, disc_steps=3, generator=2))
    cfg = TrainConfig(num_iters=600, lr=3e-3, lr_final=3e-4, num_samples=64)
    hist = fit_variational(q, problem.net, problem.x, problem.y, problem.likelihood,
                           problem.prior, cfg, generator=0)
    _check_predictive(problem, q, 0.75, 1.25)
    # the KL estimate at the end is close to the true KL(q || p) of the exact posterior
    # (q is nearly the posterior): 0.5 (tr(P S) + m^T P m - 3 + log det(P^-1) - log det S)
    s, m = problem.post_cov, problem.post_mean
    kl_exact = 0.5 * (s.trace() + m @ m - 3 - torch.logdet(s))
    assert abs(sum(hist.kl[-50:]) / 50 - float(kl_exact)) < 0.5


def test_mean_field_matches_its_known_optimum(problem):
    q = MeanFieldGaussian(3)
    cfg = TrainConfig(num_iters=1500, lr=0.03, lr_final=1e-3, num_samples=32)
    fit_variational(q, problem.net, problem.x, problem.y, problem.likelihood, problem.prior,
                    cfg, generator=0)
    opt_sd = problem.post_prec.diagonal().rsqrt()
    post_sd = problem.post_cov.diagonal().sqrt()
    assert ((q.mean.detach() - problem.post_mean).abs() / post_sd).max() < 0.1
    assert ((q.std.detach() / opt_sd - 1).abs()).max() < 0.1, q.std / opt_sd
    _check_predictive(problem, q, 0.6, 1.25)


def test_minibatches_are_scaled_by_n_over_b(problem):
    # with batch 10 of N = 40 the data term must be scaled by 4; without the scaling the
    # fitted variances would be about 4 times the optimum
    q = MeanFieldGaussian(3)
    cfg = TrainConfig(num_iters=2000, lr=0.03, lr_final=1e-3, num_samples=16, batch_size=10)
    fit_variational(q, problem.net, problem.x, problem.y, problem.likelihood, problem.prior,
                    cfg, generator=0)
    opt_sd = problem.post_prec.diagonal().rsqrt()
    assert ((q.std.detach() / opt_sd - 1).abs()).max() < 0.15, q.std / opt_sd


def test_mean_field_kl_closed_form_and_monte_carlo():
    g = torch.Generator().manual_seed(0)
    q = MeanFieldGaussian(4, init_mean=torch.tensor([0.5, -1.0, 0.0, 2.0]), init_std=0.3)
    prior = GaussianPrior(std=2.0, mean=0.1)
    kl = q.kl_term(q.rsample(2, g), prior, g).estimate
    w = q.sample(200_000, generator=1)
    with torch.no_grad():
        diff = q.log_prob(w) - prior.log_prob(w)
        assert abs(kl - float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(w.shape[0])
        # a non-Gaussian prior uses the Monte Carlo estimate over the given draws
        lap = LaplacePrior(1.0)
        est = q.kl_term(w[:1000], lap, g).estimate
        exact = float((q.log_prob(w) - lap.log_prob(w)).mean())
    assert abs(est - exact) < 0.5


def test_perturbed_hypernetwork_and_generic_module_path():
    # an nn.Module main net (FunctionalNet path) and a low-dimensional noise with the
    # independent output perturbation: everything batched, finite losses, restorable best
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))
    shapes = [list(p.shape) for p in net.parameters()]
    inner = HMLP(shapes, uncond_in_size=2, cond_in_size=0, layers=(8,), generator=3)
    hnet = HPerturbWrapper(inner, sigma_noise=0.05, perturbation="independent")
    q = ImplicitPosterior(hnet, SSGE())
    assert q.dim == 13 and q.noise_dim == 2 + 13
    x = torch.linspace(-2, 2, 30)[:, None]
    y = torch.sin(x) + 0.1 * torch.randn(30, 1, generator=g)
    cfg = TrainConfig(num_iters=40, lr=1e-2, num_samples=8, eval_every=10, val_num_samples=20)
    hist = fit_variational(q, net, x, y, GaussianLikelihood(25.0), GaussianPrior(1.0), cfg,
                           val_data=(x, y), generator=0)
    assert all(math.isfinite(v) for v in hist.loss)
    assert hist.val_iters == [10, 20, 30, 40]
    assert hist.best_iter == hist.val_iters[min(range(4), key=hist.val_nll.__getitem__)]
    # the restored state is the best one: its validation NLL (fresh noise) is close to it
    nll = predictive_nll(net, q.sample(200, generator=5), x, y, GaussianLikelihood(25.0))
    assert nll < max(hist.val_nll) + 0.5


class _Recorder:
    def __init__(self):
        self.tags = {}

    def add_scalar(self, tag, value, step):
        self.tags.setdefault(tag, []).append((step, value))


def test_early_stopping_writer_and_reproducibility(problem):
    def run():
        q = MeanFieldGaussian(3, init_std=0.5)
        cfg = TrainConfig(num_iters=3000, lr=0.05, eval_every=20, patience=2,
                          val_num_samples=50)
        writer = _Recorder()
        hist = fit_variational(q, problem.net, problem.x, problem.y, problem.likelihood,
                               problem.prior, cfg, val_data=(problem.x_test, problem.y_test),
                               writer=writer, generator=4)
        return q, hist, writer

    q, hist, writer = run()
    assert hist.stopped_early and len(hist.loss) < 3000
    assert len(hist.val_nll) >= 3
    best = min(range(len(hist.val_nll)), key=hist.val_nll.__getitem__)
    assert hist.best_iter == hist.val_iters[best]
    assert hist.val_nll[-2:] > [hist.val_nll[best]] * 2  # the last `patience` were worse
    assert set(writer.tags) == {f"variational/{k}" for k in
                                ("loss", "data_nll", "kl", "lr", "disc_loss", "elbo", "val_nll")}
    q2, hist2, _ = run()
    assert hist2.loss == hist.loss
    torch.testing.assert_close(q2.mean, q.mean)


def test_tensorboardx_writer(tmp_path, problem):
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:
        fit_variational(MeanFieldGaussian(3), problem.net, problem.x, problem.y,
                        problem.likelihood, problem.prior, TrainConfig(num_iters=5),
                        writer=writer, writer_tag="mf", generator=0)
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_bad_arguments(problem):
    q = MeanFieldGaussian(3)
    args = (problem.net, problem.x, problem.y, problem.likelihood, problem.prior)
    with pytest.raises(ValueError, match="patience"):
        fit_variational(q, *args, TrainConfig(patience=3))
    with pytest.raises(ValueError, match="weights"):
        fit_variational(MeanFieldGaussian(4), *args)
    with pytest.raises(ValueError, match="num_samples"):
        TrainConfig(num_samples=1)
    with pytest.raises(ValueError, match="cond_in_size"):
        ImplicitPosterior(HMLP(problem.net.param_shapes, uncond_in_size=3, generator=0), SSGE())
    hnet = HMLP(problem.net.param_shapes, uncond_in_size=3, cond_in_size=0, generator=0)
    with pytest.raises(ValueError, match="AVB"):
        ImplicitPosterior(hnet, AVB(4))
    with pytest.raises(TypeError, match="estimator"):
        ImplicitPosterior(hnet, "ssge")
