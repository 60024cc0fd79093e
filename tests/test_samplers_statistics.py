"""Samplers against Gaussian targets with known moments (tolerances from MCSE).

Warmup does all the tuning: no hand-picked step sizes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnn_mcmc import HMC, NUTS, MetropolisHastings

from .stat_utils import assert_moments, mcse_mean
from .targets import correlated_target, iid_target, ill_conditioned_target

TARGETS = {
    "iid": iid_target,
    "correlated": correlated_target,
    "ill_conditioned": ill_conditioned_target,
}

# sampler class, its keyword arguments, seed, warmup length, draws per target, ESS guard;
# sizes chosen so that on the test's seed and two others (benchmarks/stat_margins.py) every
# ESS (draws and squares) is >= 2x its guard and |z| stays well inside Z_BOUND
SAMPLERS = {
    "nuts": (NUTS, {}, 11, 500, {"iid": 1000, "correlated": 2000, "ill_conditioned": 1000}, 100),
    "hmc": (
        HMC,
        {"num_steps": 10},
        12,
        500,
        {"iid": 3000, "correlated": 1000, "ill_conditioned": 5000},
        50,
    ),
    "mh": (
        MetropolisHastings,
        {},
        13,
        40000,
        {"iid": 20000, "correlated": 20000, "ill_conditioned": 150000},
        30,
    ),
}
Z_BOUND = 5.0


def run_moments(sampler: str, target: str, seed: int | None = None):
    """Warm up and sample one chain on a known-moment target; check the moments.

    Returns the :class:`~tests.stat_utils.Margins` and the |z| of the cross moment
    (correlated target, else ``None``).
    """
    potential, cov = TARGETS[target]()
    cls, kwargs, default_seed, num_warmup, draws_per_target, min_ess = SAMPLERS[sampler]
    num_draws = draws_per_target[target]
    start = torch.full((cov.shape[0],), 0.3, dtype=torch.float64) * cov.diagonal().sqrt()
    chain = cls(start, potential, seed=default_seed if seed is None else seed, **kwargs)
    chain.warmup(num_warmup, adapt_mass="diag")
    chain.simulate_chain(num_draws)
    draws = chain.samples()
    assert draws.shape == (num_draws, cov.shape[0])
    margins = assert_moments(draws, 0.0, cov.diagonal().numpy(), z=Z_BOUND, min_ess=min_ess)
    cross = None
    if target == "correlated":
        product = (draws[:, 0] * draws[:, 1]).numpy()[:, None]
        cross = float(abs(product.mean() - 0.95) / mcse_mean(product)[0])
        assert cross < Z_BOUND, f"cross moment off by {cross:.2f} MCSE"
    assert int(chain.stats["diverging"].sum()) == 0
    return margins, cross


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize(
    "sampler", [pytest.param(s, marks=pytest.mark.slow) if s == "mh" else s for s in SAMPLERS]
)
def test_moments(sampler, target):
    run_moments(sampler, target)


def test_dense_adaptation_recovers_covariance():
    potential, cov = correlated_target(0.95)
    chain = NUTS(torch.zeros(2, dtype=torch.float64), potential, seed=3)
    chain.warmup(600, adapt_mass="dense")
    est = chain.inv_mass
    assert est.shape == (2, 2)
    np.testing.assert_allclose(est.numpy(), cov.numpy(), atol=0.35)
    chain.simulate_chain(500)
    # a well-fitted dense metric makes the correlated target easy: short trees
    assert float(chain.stats["tree_depth"].double().mean()) < 3.0


def test_float32_chain():
    potential, cov = iid_target(5)
    f32 = lambda w: potential(w.double()).float()  # noqa: E731
    chain = NUTS(torch.zeros(5), f32, seed=4)
    chain.warmup(300)
    chain.simulate_chain(800)
    assert chain.samples().dtype == torch.float32
    assert_moments(chain.samples(), 0.0, 1.0)


def test_warmup_improves_step_size_and_keeps_draws_apart():
    potential, _ = ill_conditioned_target(20)
    chain = NUTS(torch.full((20,), 0.01, dtype=torch.float64), potential, stepsize=1e-4, seed=5)
    chain.warmup(300)
    assert chain.num_states == 0
    assert chain.warmup_trajectory.shape == (300, 20)
    assert len(chain.warmup_stats["lp"]) == 300
    assert chain.step_size > 1e-2
    mean_accept = float(chain.warmup_stats["acceptance_rate"][-100:].mean())
    assert 0.6 < mean_accept < 0.95


def test_metropolis_adapts_towards_optimal_acceptance():
    potential, cov = ill_conditioned_target(10)
    chain = MetropolisHastings(torch.zeros(10, dtype=torch.float64), potential, seed=9)
    chain.warmup(5000)
    chain.simulate_chain(5000)
    assert 0.15 < chain.acceptance_probability < 0.35
    ratio = (chain.proposal_std / cov.diagonal().sqrt()).numpy()
    assert ratio.max() / ratio.min() < 3.0  # per-coordinate scales follow the target
