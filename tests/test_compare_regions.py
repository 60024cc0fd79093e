"""Test inputs in a gap of the training data count as far from the data."""

import torch

from bnn_mcmc.bnn import MLP, GaussianLikelihood
from bnn_mcmc.diagnostics.compare import compare_posteriors
from bnn_mcmc.diagnostics.regions import find_regions


def _gap_problem():
    x = torch.cat([torch.linspace(-2, -1, 20), torch.linspace(1, 2, 20)])[:, None]
    x_test = torch.linspace(-3, 3, 61)[:, None]
    return x, x_test


def test_find_regions_gap_and_outside():
    x, x_test = _gap_problem()
    r = find_regions(x, x_test)
    t = x_test[:, 0]
    assert bool(r.gap[(t > -0.7) & (t < 0.7)].all())
    assert bool(r.outside[t.abs() > 2.3].all())
    assert bool(r.near[((t >= -2) & (t <= -1)) | ((t >= 1) & (t <= 2))].all())
    assert bool(((r.near.int() + r.gap.int() + r.outside.int()) == 1).all())


def test_var_ratio_sees_the_gap():
    # f(x) = c * hat(x) + b with hat = relu(x+1) - 2 relu(x) + relu(x-1), nonzero only in
    # the gap (-1, 1); random c: epistemic variance in the gap only.  Every test input lies
    # in the bounding box of the data, so the old definition found no "outside" point (nan)
    x, _ = _gap_problem()
    x_test = torch.linspace(-2, 2, 41)[:, None]
    net = MLP(1, 1, hidden_layers=(3,), no_weights=True)
    g = torch.Generator().manual_seed(0)
    s = 400
    c = torch.randn(s, 1, generator=g)
    b = 0.01 * torch.randn(s, 1, generator=g)
    w1 = torch.ones(s, 3)
    b1 = torch.tensor([1.0, 0.0, -1.0]).expand(s, 3)
    w2 = c * torch.tensor([1.0, -2.0, 1.0])
    draws = torch.cat([w1, b1, w2, b], 1)
    table = compare_posteriors({"q": draws}, net, x_test, torch.zeros(41, 1),
                               GaussianLikelihood(10.0), reference=None, train_inputs=x)
    assert table.loc["q", "var_ratio_out_in"] > 100.0
