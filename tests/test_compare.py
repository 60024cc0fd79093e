"""compare_posteriors: exact and NUTS posteriors against deliberately bad approximations."""

import math

import arviz as az
import numpy as np
import pytest
import torch

from bnn_mcmc.bnn import MLP, CategoricalLikelihood, GaussianLikelihood, nn_pot_energy
from bnn_mcmc.diagnostics.compare import (
    compare_posteriors,
    draws_by_chain,
    expected_calibration_error,
    mmd2_unbiased,
)
from bnn_mcmc.diagnostics.inference_data import to_inference_data
from bnn_mcmc.diagnostics.regions import find_regions
from bnn_mcmc.hnets import HMLP
from bnn_mcmc.samplers import NUTS
from bnn_mcmc.variational import (
    SSGE,
    ImplicitPosterior,
    MeanFieldGaussian,
    TrainConfig,
    fit_variational,
)

from .variational_problem import make_problem


@pytest.fixture(scope="module")
def regression():
    p = make_problem()
    U = nn_pot_energy(p.net, p.x, p.y, likelihood=p.likelihood, prior=p.prior)
    s = NUTS(torch.zeros(3), U, seed=0)
    s.warmup(300)
    s.simulate_chain(1000)
    sd = p.post_cov.diagonal().sqrt()
    g = torch.Generator().manual_seed(5)
    # overconfident and shifted by 3 posterior sd: a deliberately bad approximation
    bad = p.post_mean + 3 * sd + 0.2 * sd * torch.randn(1000, 3, generator=g)
    posteriors = {"exact": p.exact_draws(1000, 1), "NUTS": s.samples(), "bad": bad}
    table = compare_posteriors(posteriors, p.net, p.x_test, p.y_test, p.likelihood,
                               reference="exact", train_inputs=p.x, train_targets=p.y)
    return p, posteriors, table, s


def test_table_layout(regression):
    table = regression[2]
    assert list(table.index) == ["exact", "NUTS", "bad"]
    assert list(table.columns) == [
        "num_draws", "test_nll", "rmse", "var_ratio_out_in", "agreement", "tv", "mmd",
        "elpd_loo", "elpd_loo_se", "p_loo", "loo_rank",
    ]
    assert table.loc["exact", ["tv", "mmd"]].tolist() == [0.0, 0.0]
    assert table["agreement"].isna().all()  # defined for classification only
    assert (table["num_draws"] == 1000).all()


def test_exact_metrics_match_closed_form(regression):
    p, table = regression[0], regression[2]
    mean, var_f = p.predictive(p.x_test)
    var_y = var_f + 1 / p.likelihood.tau_pred
    y = p.y_test[:, 0]
    nll = float((0.5 * torch.log(2 * math.pi * var_y) + 0.5 * (y - mean) ** 2 / var_y).mean())
    rmse = float((mean - y).square().mean().sqrt())
    # 1000 draws: Monte Carlo error of the mixture log density ~0.01 (measured 0.009)
    assert abs(table.loc["exact", "test_nll"] - nll) < 0.03
    assert abs(table.loc["NUTS", "test_nll"] - nll) < 0.03
    assert abs(table.loc["exact", "rmse"] - rmse) < 0.02
    # linear regression: epistemic variance grows away from the data
    outside = ~find_regions(p.x, p.x_test).near
    ratio = var_f[outside].mean() / var_f[~outside].mean()
    assert abs(table.loc["exact", "var_ratio_out_in"] / float(ratio) - 1) < 0.15


def test_exact_sampler_ranks_above_bad_approximation(regression):
    table = regression[2]
    nuts, bad = table.loc["NUTS"], table.loc["bad"]
    assert nuts["test_nll"] < bad["test_nll"]
    assert nuts["rmse"] < bad["rmse"]
    assert nuts["tv"] < 0.05 < 0.2 < bad["tv"]  # measured 0.013 and 0.29
    assert nuts["mmd"] < 0.05 * bad["mmd"]
    assert nuts["elpd_loo"] > bad["elpd_loo"] + 3 * bad["elpd_loo_se"] / 2
    assert nuts["loo_rank"] < bad["loo_rank"]
    assert table.loc["exact", "loo_rank"] < bad["loo_rank"]


def test_regression_tv_of_shifted_gaussians():
    # constant functions f = 0 and f = delta: predictives N(0, 1/tau) and N(delta, 1/tau)
    net = MLP(1, 1, hidden_layers=(), no_weights=True)
    tau, delta = 4.0, 0.5
    x = torch.zeros(5, 1)
    y = torch.zeros(5, 1)
    a = torch.zeros(10, 2)
    b = a.clone()
    b[:, 1] = delta
    table = compare_posteriors({"a": a, "b": b}, net, x, y, GaussianLikelihood(tau), reference="a")
    exact = math.erf(delta * math.sqrt(tau) / (2 * math.sqrt(2)))  # 2 Phi(d/(2 sd)) - 1
    assert abs(table.loc["b", "tv"] - exact) < 2e-3


def test_classification_metrics():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=g)
    labels = (x[:, 0] + x[:, 1] < 0).long()  # class 0 where x1 + x2 > 0
    net = MLP(2, 2, hidden_layers=(), no_weights=True)
    good_w = torch.tensor([[3.0, 3.0, -3.0, -3.0, 0.0, 0.0]])  # logit gap 6 (x1 + x2)
    good = good_w + 0.1 * torch.randn(300, 6, generator=g)
    bad = -good_w + 0.1 * torch.randn(300, 6, generator=g)  # predicts the wrong class
    lik = CategoricalLikelihood()
    table = compare_posteriors({"good": good, "bad": bad}, net, x, labels, lik,
                               reference="good", train_inputs=x, train_targets=labels)
    assert {"accuracy", "ece", "agreement", "tv"} <= set(table.columns)
    assert "rmse" not in table.columns
    assert table.loc["good", "accuracy"] > 0.95 > 0.05 > table.loc["bad", "accuracy"]
    assert table.loc["good", "agreement"] == 1.0 and table.loc["bad", "agreement"] < 0.05
    assert 0.0 <= table.loc["good", "ece"] < table.loc["bad", "ece"] <= 1.0
    assert table.loc["bad", "tv"] > 0.8
    assert table.loc["good", "loo_rank"] == 0


def test_expected_calibration_error_known_values():
    probs = torch.tensor([[0.8, 0.2]] * 10)
    labels = torch.tensor([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-6)
    assert expected_calibration_error(probs, torch.zeros(10, dtype=torch.long)) == (
        pytest.approx(0.2)
    )
    # two bins: conf 0.6 all wrong (gap 0.6) and conf 0.9 all right (gap 0.1)
    probs = torch.tensor([[0.6, 0.4]] * 5 + [[0.9, 0.1]] * 5)
    labels = torch.tensor([1] * 5 + [0] * 5)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.35)


def test_mmd_is_consistent_with_zero_for_equal_distributions():
    g = torch.Generator().manual_seed(1)
    same = [mmd2_unbiased(torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g))
            for _ in range(10)]
    # unbiased estimator: mean ~0, spread of order 1/n
    assert abs(np.mean(same)) < 3 * np.std(same) / math.sqrt(10) + 1e-3
    shifted = mmd2_unbiased(torch.randn(200, 4, generator=g),
                            torch.randn(200, 4, generator=g) + 1.0)
    assert shifted > 20 * np.std(same)


def test_inference_data_and_chains_input(regression):
    p, posteriors, table = regression[:3]
    draws = posteriors["NUTS"].reshape(2, 500, 3)
    idata = az.from_dict(posterior={"w": draws.numpy()})
    torch.testing.assert_close(draws_by_chain(idata, 3), draws)
    t2 = compare_posteriors({"exact": posteriors["exact"], "NUTS": idata}, p.net, p.x_test,
                            p.y_test, p.likelihood, reference="exact")
    assert t2.loc["NUTS", "test_nll"] == pytest.approx(table.loc["NUTS", "test_nll"], rel=1e-5)
    assert "elpd_loo" not in t2.columns and "var_ratio_out_in" not in t2.columns
    # the multi-chain output, split by parameter tensors, is read back in the same order
    idata = to_inference_data(regression[3], net=p.net)
    torch.testing.assert_close(draws_by_chain(idata, 3)[0], posteriors["NUTS"])


def test_variational_posteriors_against_nuts(regression):
    p, posteriors = regression[:2]
    fits = {}
    for name, q, cfg in [
        ("mean-field", MeanFieldGaussian(3),
         TrainConfig(num_iters=1500, lr=0.03, lr_final=1e-3)),
        ("implicit (SSGE)",
         ImplicitPosterior(HMLP(p.net.param_shapes, uncond_in_size=3, cond_in_size=0,
                                layers=(32,), generator=1), SSGE()),
         TrainConfig(num_iters=500, lr=3e-3, lr_final=3e-4, num_samples=64)),
    ]:
        fit_variational(q, p.net, p.x, p.y, p.likelihood, p.prior, cfg, generator=0)
        fits[name] = q.sample(1000, generator=1)
    table = compare_posteriors({"NUTS": posteriors["NUTS"], **fits, "bad": posteriors["bad"]},
                               p.net, p.x_test, p.y_test, p.likelihood, reference="NUTS",
                               train_inputs=p.x, train_targets=p.y)
    for name in fits:
        assert table.loc[name, "tv"] < 0.1 < table.loc["bad", "tv"]
        assert table.loc[name, "mmd"] < 0.1 * table.loc["bad", "mmd"]
        assert abs(table.loc[name, "test_nll"] - table.loc["NUTS", "test_nll"]) < 0.05
        assert table.loc[name, "loo_rank"] < table.loc["bad", "loo_rank"]


def test_bad_arguments(regression):
    p, posteriors = regression[:2]
    args = (p.net, p.x_test, p.y_test, p.likelihood)
    with pytest.raises(ValueError, match="reference"):
        compare_posteriors(posteriors, *args, reference="HMC")
    with pytest.raises(ValueError, match="draws of length 3"):
        compare_posteriors({"NUTS": torch.zeros(10, 4)}, *args)
    with pytest.raises(TypeError, match="sample"):
        compare_posteriors({"NUTS": [1, 2, 3]}, *args)
    with pytest.raises(ValueError, match="train_inputs"):
        compare_posteriors(posteriors, *args, reference=None, train_targets=p.y)
