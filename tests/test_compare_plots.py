"""Comparison figures: their content, and that they render to PNG."""

import math

import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection, PolyCollection, QuadMesh

from bnn_mcmc.bnn import MLP, BernoulliLikelihood, CategoricalLikelihood
from bnn_mcmc.diagnostics.plots import (
    plot_classification_uncertainty,
    plot_regression_bands,
    plot_weight_pairs,
)

from .variational_problem import make_problem


@pytest.fixture(scope="module")
def problem():
    return make_problem()


def _png(fig, path):
    fig.savefig(path)
    assert path.stat().st_size > 1000
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_regression_bands(problem, tmp_path):
    net = MLP(1, 1, hidden_layers=(), no_weights=True)
    g = torch.Generator().manual_seed(0)
    wide = torch.randn(300, 2, generator=g)
    narrow = 0.1 * torch.randn(300, 2, generator=g)
    x = torch.linspace(-2, 2, 50)[:, None]
    fig = plot_regression_bands({"wide": wide, "narrow": narrow}, net, x,
                                train_inputs=x[::5], train_targets=x[::5, 0], num_functions=3)
    (ax,) = fig.axes
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    # 2 methods x (mean + 3 sample functions)
    assert len(ax.lines) == 8
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["wide (mean ± 2 sd)", "narrow (mean ± 2 sd)", "data"]
    # the mean line is the mean of f over draws; the wide band is wider
    mean_line = ax.lines[0].get_ydata()
    np.testing.assert_allclose(mean_line, (wide[:, 0:1] * x[:, 0] + wide[:, 1:]).mean(0),
                               rtol=1e-5, atol=1e-5)
    height = [np.ptp(b.get_paths()[0].vertices[:, 1]) for b in bands]
    assert height[0] > 3 * height[1]
    _png(fig, tmp_path / "bands.png")


@pytest.mark.parametrize("lik", [CategoricalLikelihood(), BernoulliLikelihood()])
def test_classification_uncertainty_map(tmp_path, lik):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=g)
    y = (x[:, 0] > 0).long()
    n_out = 2 if isinstance(lik, CategoricalLikelihood) else 1
    net = MLP(2, n_out, hidden_layers=(4,), no_weights=True)
    draws = {"A": torch.randn(50, net.num_params, generator=g),
             "B": 0.01 * torch.randn(50, net.num_params, generator=g)}
    fig = plot_classification_uncertainty(draws, net, lik, x, y, resolution=20)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["A", "B"]
    assert len(fig.axes) == 3  # two panels and the colour bar
    for ax in panels:
        (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
        ent = np.asarray(mesh.get_array())
        assert ent.size == 400 and ent.min() >= 0 and ent.max() <= math.log(2) + 1e-6
        (pts,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(pts.get_offsets()) == 60
    # tiny weights give probabilities ~1/2 everywhere: maximal entropy
    ent_b = np.asarray([c for c in panels[1].collections if isinstance(c, QuadMesh)][0]
                       .get_array())
    assert ent_b.min() > 0.99 * math.log(2)
    _png(fig, tmp_path / "map.png")


def test_weight_pairs(problem, tmp_path):
    a, b = problem.exact_draws(400, 0), problem.exact_draws(400, 1) + 1.0
    fig = plot_weight_pairs({"exact": a, "shifted": b}, indices=[0, 2, 1],
                            names=["w1", "b", "w2"], max_points=100)
    assert len(fig.axes) == 9
    grid = np.array(fig.axes).reshape(3, 3)
    assert not grid[0, 1].axison and grid[1, 0].axison
    assert len(grid[0, 0].patches) == 2  # one step histogram per method
    scatters = [c for c in grid[1, 0].collections if isinstance(c, PathCollection)]
    assert len(scatters) == 2 and len(scatters[0].get_offsets()) == 100
    np.testing.assert_allclose(scatters[0].get_offsets()[:, 0], a[::4, 0].numpy())
    np.testing.assert_allclose(scatters[0].get_offsets()[:, 1], a[::4, 2].numpy())
    assert grid[2, 0].get_xlabel() == "w1" and grid[2, 0].get_ylabel() == "w2"
    _png(fig, tmp_path / "pairs.png")


def test_bad_arguments(problem):
    a = problem.exact_draws(10, 0)
    with pytest.raises(ValueError, match="at least 2"):
        plot_weight_pairs({"a": a}, indices=[0])
    with pytest.raises(ValueError, match="indices"):
        plot_weight_pairs({"a": a}, indices=[0, 3])
    with pytest.raises(ValueError, match=r"\(n, 1\)"):
        plot_regression_bands({"a": a}, problem.net, problem.x)
    with pytest.raises(TypeError, match="likelihood"):
        plot_classification_uncertainty({"a": a}, problem.net, problem.likelihood, problem.x,
                                        problem.y)
