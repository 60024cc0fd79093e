"""InferenceData from single and multi-chain runs: names, shapes, ArviZ functions, summary."""

import arviz as az
import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from bnn_mcmc import NUTS
from bnn_mcmc.diagnostics.summary import summary
from bnn_mcmc.multichain import MultiChainHMC

matplotlib.use("Agg")

NET = nn.Sequential(nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 1))
X = torch.linspace(-1, 1, 6).reshape(-1, 1)
Y = torch.sin(2 * X).squeeze(-1)


def forward(w):
    """Network outputs at X for draws w of shape (n, 10)."""
    W1, b1, W2, b2 = w[:, :3].reshape(-1, 3, 1), w[:, 3:6], w[:, 6:9].reshape(-1, 1, 3), w[:, 9:]
    h = torch.tanh(torch.einsum("nij,pj->npi", W1, X) + b1[:, None])
    return (torch.einsum("nij,npj->npi", W2, h) + b2[:, None]).squeeze(-1)


def potential(w):
    f = forward(w[None])[0]
    return 0.5 * ((f - Y) ** 2).sum() / 0.1**2 + 0.5 * (w**2).sum()


def loglik(w):
    return -0.5 * ((forward(w) - Y) ** 2) / 0.1**2 - np.log(0.1 * np.sqrt(2 * np.pi))


@pytest.fixture(scope="module")
def run():
    m = MultiChainHMC(torch.zeros(2, 10), potential, "nuts", seed=0, max_tree_depth=5)
    m.warmup(60)
    m.simulate_chains(60)
    return m


def test_groups_names_shapes_and_attrs(run):
    idata = run.to_inference_data(
        net=NET, include_warmup=True, log_likelihood=loglik, predictions=forward, observed_data=Y
    )
    assert {
        "posterior",
        "sample_stats",
        "warmup_posterior",
        "warmup_sample_stats",
        "log_likelihood",
        "posterior_predictive",
        "observed_data",
    } <= set(idata.groups())
    post = idata.posterior
    assert post["0_weight"].shape == (2, 60, 3, 1) and post["2_bias"].shape == (2, 60, 1)
    assert idata.warmup_posterior["0_bias"].shape == (2, 60, 3)
    assert idata.log_likelihood["y"].shape == (2, 60, 6)
    stats = idata.sample_stats
    for name in ("lp", "diverging", "energy", "tree_depth", "step_size", "acceptance_rate"):
        assert stats[name].shape == (2, 60)
    np.testing.assert_array_equal(stats["lp"].values[1], run.chains[1].stats["lp"].numpy())
    attrs = post.attrs
    assert attrs["inference_library"] == "bnn_mcmc" and "created_at" in attrs
    assert "inference_library_version" in attrs
    az.summary(idata)
    az.rhat(idata)
    az.ess(idata)
    az.plot_trace(idata, var_names=["2_bias"])
    az.plot_energy(idata)
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo)


def test_single_chain_and_flat_posterior():
    s = NUTS(torch.zeros(3), lambda w: 0.5 * (w**2).sum(), seed=0)
    s.simulate_chain(20)
    idata = s.to_inference_data()
    assert idata.posterior["w"].shape == (1, 20, 3)
    with pytest.raises(ValueError, match="parameters"):
        s.to_inference_data(net=NET)


def test_summary_text_and_dict(run):
    rep = summary(run, function=forward)
    d = rep.to_dict()
    assert d["num_chains"] == 2 and d["num_draws"] == 60 and len(d["ebfmi"]) == 2
    assert "function_max_rhat" in d and rep.table.shape[0] == 10
    text = str(rep)
    assert "R-hat" in text and "E-BFMI" in text and "divergences" in text
    assert 0 <= d["tree_depth_saturation"] <= 1


def test_plain_draws_of_a_variational_posterior():
    from bnn_mcmc import MeanFieldGaussian, to_inference_data

    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    dim = sum(p.numel() for p in net.parameters())
    q = MeanFieldGaussian(dim)
    idata = to_inference_data(q.sample(40, generator=torch.Generator().manual_seed(0)), net=net)
    assert set(idata.groups()) == {"posterior"}
    assert idata.posterior["0_weight"].shape == (1, 40, 3, 2)
    chains = torch.randn(2, 30, dim, generator=torch.Generator().manual_seed(1))
    idata = to_inference_data(chains)
    assert idata.posterior["w"].shape == (2, 30, dim)
    assert float(az.rhat(idata)["w"].max()) < 1.2
    with pytest.raises(ValueError, match="include_warmup"):
        to_inference_data(chains, include_warmup=True)
    with pytest.raises(ValueError, match="shape"):
        to_inference_data(torch.zeros(3))
