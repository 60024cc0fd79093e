"""``compile_potential=True``: the fused, compiled U and grad U give the same chain."""

from __future__ import annotations

import torch

from bnn_mcmc import NUTS

from .stat_utils import assert_moments
from .targets import correlated_target


def test_compiled_potential_matches_eager_and_targets_the_distribution():
    potential, cov = correlated_target(0.9)
    start = torch.tensor([0.5, -0.3], dtype=torch.float64)
    eager = NUTS(start, potential, stepsize=0.3, seed=5)
    fused = NUTS(start, potential, stepsize=0.3, seed=5, compile_potential=True)
    eager.simulate_chain(50)
    fused.simulate_chain(50)
    # same random stream, gradients equal up to rounding: the first draws coincide
    torch.testing.assert_close(fused.samples()[:10], eager.samples()[:10], rtol=1e-6, atol=1e-9)
    assert fused.num_grad_evals == 1 + int(fused.stats["n_steps"].sum())
    fused.warmup(200)
    fused.simulate_chain(1000)
    assert_moments(fused.samples(), 0.0, cov.diagonal().numpy())


def test_python_branches_in_the_potential_stay_correct():
    """Data-dependent Python branches become graph breaks and guards, not wrong values."""

    def branching(w):
        scale = 2.0 if float(w.detach().sum()) > 0 else 1.0
        return 0.5 * scale * (w**2).sum()

    eager = NUTS(torch.ones(2, dtype=torch.float64), branching, stepsize=0.2, seed=1)
    fused = NUTS(torch.ones(2, dtype=torch.float64), branching, stepsize=0.2, seed=1,
                 compile_potential=True)
    eager.simulate_chain(20)
    fused.simulate_chain(20)
    torch.testing.assert_close(fused.samples(), eager.samples(), rtol=1e-6, atol=1e-9)
