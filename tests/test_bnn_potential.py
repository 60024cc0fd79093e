"""nn_pot_energy against hand-written log posteriors; gradients; bad input."""

import math

import pytest
import torch
from torch import distributions as D
from torch import nn

from bnn_mcmc.bnn import (
    MLP,
    CategoricalLikelihood,
    FunctionalNet,
    GaussianLikelihood,
    GaussianPrior,
    LaplacePrior,
    LayerwiseGaussianPrior,
    LearnedNoiseGaussianLikelihood,
    nn_pot_energy,
)

DT = torch.float64


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(15, 2, generator=g, dtype=DT)
    y = torch.sin(x[:, :1]) + 0.1 * torch.randn(15, 1, generator=g, dtype=DT)
    labels = torch.randint(0, 3, (15,), generator=g)
    return x, y, labels


def _by_hand_mlp(w, x):
    """1 hidden tanh layer of width 4, 2 inputs, 1 output, flat [W1, b1, W2, b2]."""
    w1, b1 = w[:8].view(4, 2), w[8:12]
    w2, b2 = w[12:16].view(1, 4), w[16:17]
    return torch.tanh(x @ w1.T + b1) @ w2.T + b2


def test_regression_equals_hand_written_log_posterior(data):
    x, y, _ = data
    net = MLP(2, 1, hidden_layers=(4,), activation_fn=torch.tanh)
    w = torch.randn(net.num_params, generator=torch.Generator().manual_seed(1), dtype=DT)
    tau = 4.0
    U = nn_pot_energy(net, x, y, tau_pred=tau)
    f = _by_hand_mlp(w, x)
    log_lik = D.Normal(f, 1 / math.sqrt(tau)).log_prob(y).sum()
    log_prior = D.Normal(0.0, 1.0).log_prob(w).sum()
    torch.testing.assert_close(U(w), -(log_lik + log_prior))
    # cold posterior on a minibatch: data term * (N / B) / T, prior once
    U2 = nn_pot_energy(net, x, y, tau_pred=tau, temperature=0.5, dataset_size=45)
    torch.testing.assert_close(U2(w), -(log_lik * 3 / 0.5 + log_prior))
    # batched positions
    ws = torch.stack([w, 2 * w])
    torch.testing.assert_close(U(ws), torch.stack([U(w), U(2 * w)]))


def test_classification_with_plain_module_and_prior_object(data):
    x, _, labels = data
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    prior = LaplacePrior(scale=0.5)
    U = nn_pot_energy(net, x, labels, nll_type="classification", prior=prior)
    w = FunctionalNet(net).flatten()
    log_lik = D.Categorical(logits=net(x)).log_prob(labels).sum()
    log_prior = D.Laplace(0.0, 0.5).log_prob(w).sum()
    torch.testing.assert_close(U(w), -(log_lik + log_prior))


def test_learned_noise_position_has_extra_entry(data):
    x, y, _ = data
    net = MLP(2, 1, hidden_layers=(4,), activation_fn=torch.tanh)
    lik = LearnedNoiseGaussianLikelihood(log_scale_prior_std=0.5)
    prior = LayerwiseGaussianPrior.from_net(net)
    U = nn_pot_energy(net, x, y, likelihood=lik, prior=prior)
    assert U.dim == net.num_params + 1
    w = torch.randn(U.dim, generator=torch.Generator().manual_seed(2), dtype=DT)
    f = _by_hand_mlp(w[:-1], x)
    expected = (
        D.Normal(f, torch.exp(w[-1])).log_prob(y).sum()
        + prior.log_prob(w[:-1])
        + D.Normal(0.0, 0.5).log_prob(w[-1])
    )
    torch.testing.assert_close(U(w), -expected)


@pytest.mark.parametrize("kind", ["mlp", "module"])
def test_gradient_matches_finite_differences(data, kind):
    x, y, labels = data
    if kind == "mlp":
        net = MLP(2, 1, hidden_layers=(4,), activation_fn=torch.tanh)
        U = nn_pot_energy(net, x, y, likelihood=GaussianLikelihood(2.0), prior=GaussianPrior(0.7))
        dim = net.num_params
    else:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3))
        U = nn_pot_energy(net, x, labels, likelihood=CategoricalLikelihood())
        dim = FunctionalNet(net).dim
    w = torch.randn(dim, generator=torch.Generator().manual_seed(3), dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(U, (w,), eps=1e-6, atol=1e-5)


def test_bad_input(data):
    x, y, labels = data
    net = MLP(2, 3, hidden_layers=(4,))
    with pytest.raises(TypeError, match="integer class labels"):
        nn_pot_energy(net, x, labels.double(), nll_type="classification")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        nn_pot_energy(net, x, labels + 1, nll_type="classification")
    with pytest.raises(ValueError, match="temperature"):
        nn_pot_energy(net, x, labels, nll_type="classification", temperature=0.0)
    with pytest.raises(ValueError, match="defined on 5 weights"):
        nn_pot_energy(net, x, labels, nll_type="classification", prior=GaussianPrior(dim=5))
    with pytest.raises(ValueError, match="dataset_size"):
        nn_pot_energy(net, x, labels, nll_type="classification", dataset_size=3)
    with pytest.raises(ValueError, match="nll_type"):
        nn_pot_energy(net, x, labels, nll_type="poisson")
    with pytest.raises(ValueError, match="not both"):
        nn_pot_energy(net, x, labels, tau_pred=2.0, likelihood=CategoricalLikelihood())
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        nn_pot_energy(net, x, y)
    U = nn_pot_energy(net, x, labels, nll_type="classification")
    with pytest.raises(ValueError, match=f"length {net.num_params}.*got shape \\(4,\\)"):
        U(torch.zeros(4, dtype=DT))
    with pytest.raises(ValueError, match="device"):
        U(torch.zeros(net.num_params, dtype=DT, device="meta"))
