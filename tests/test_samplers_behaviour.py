"""Sampler behaviour: invariances, seeding, divergences, gradient budget, statistics, I/O."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from bnn_mcmc import HMC, MCMC, NUTS, MetropolisHastings

from .targets import correlated_target, ill_conditioned_target

SAMPLERS = {
    "hmc": lambda w, u, **kw: HMC(w, u, stepsize=0.3, num_steps=5, **kw),
    "nuts": lambda w, u, **kw: NUTS(w, u, stepsize=0.3, **kw),
    "mh": lambda w, u, **kw: MetropolisHastings(w, u, proposal_std=0.5, **kw),
}
START = torch.tensor([0.5, -0.3], dtype=torch.float64)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_adding_a_constant_to_the_potential_changes_nothing(name):
    potential, _ = correlated_target(0.9)
    shifted = lambda w: potential(w) + 1000.0  # noqa: E731
    a = SAMPLERS[name](START, potential, seed=7)
    b = SAMPLERS[name](START, shifted, seed=7)
    a.simulate_chain(300)
    b.simulate_chain(300)
    assert torch.equal(a.samples(), b.samples())
    assert torch.equal(a.stats["n_steps"], b.stats["n_steps"])


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_same_seed_same_chain_and_pieces_equal_one_call(name):
    potential, _ = correlated_target(0.9)
    a = SAMPLERS[name](START, potential, seed=3)
    a.warmup(60)
    a.simulate_chain(100)
    b = SAMPLERS[name](START, potential, generator=torch.Generator().manual_seed(3))
    b.warmup(60)
    for n in (13, 50, 37):
        b.simulate_chain(n)
    assert torch.equal(a.samples(), b.samples())
    assert torch.equal(a.warmup_trajectory, b.warmup_trajectory)
    for key, value in a.stats.items():
        assert torch.equal(value, b.stats[key]), key
    c = SAMPLERS[name](START, potential, seed=4)
    c.warmup(60)
    c.simulate_chain(100)
    assert not torch.equal(a.samples(), c.samples())


def test_samplers_never_touch_the_global_rng():
    potential, _ = correlated_target(0.9)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for make in SAMPLERS.values():
        s = make(START, potential, seed=1)
        s.warmup(30)
        s.simulate_chain(20)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("name", ["hmc", "nuts"])
def test_forced_divergence_is_flagged_on_every_transition(name):
    potential, _ = ill_conditioned_target(10)
    start = torch.full((10,), 0.01, dtype=torch.float64)
    s = SAMPLERS[name](start, potential, seed=0)
    s.step_size = 50.0
    s.simulate_chain(50)
    assert bool(s.stats["diverging"].all())
    assert torch.equal(s.samples(), start.expand(50, 10))  # every proposal rejected
    assert bool(torch.isfinite(s.samples()).all())


@pytest.mark.parametrize("name", ["hmc", "nuts"])
def test_adaptation_removes_divergences(name):
    potential, _ = ill_conditioned_target(10)
    s = SAMPLERS[name](torch.full((10,), 0.01, dtype=torch.float64), potential, seed=0)
    s.step_size = 50.0
    s.warmup(300)
    assert int(s.warmup_stats["diverging"].sum()) <= 300
    s.simulate_chain(300)
    assert int(s.stats["diverging"].sum()) == 0


def _exploding(w):
    """A Gaussian whose potential turns NaN past |w| = 2 or raises a LinAlgError past 2.5."""
    r = float(w.detach().abs().max())
    if r > 2.5:
        raise torch.linalg.LinAlgError("singular matrix")
    if r > 2.0:
        return (w**2).sum() * float("nan")
    return 0.5 * (w**2).sum()


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_numerical_failures_are_divergences_not_crashes(name):
    s = SAMPLERS[name](torch.zeros(2, dtype=torch.float64), _exploding, seed=2)
    s.step_size = 1.5
    s.simulate_chain(200)
    draws = s.samples()
    assert bool(torch.isfinite(draws).all())
    assert float(draws.abs().max()) <= 2.0
    assert int(s.stats["diverging"].sum()) > 0


def test_hmc_costs_exactly_num_steps_gradients_per_transition():
    calls = {"n": 0}

    def counted(w):
        calls["n"] += 1
        return 0.5 * (w**2).sum()

    s = HMC(torch.zeros(4, dtype=torch.float64), counted, stepsize=0.2, num_steps=7, seed=0)
    assert calls["n"] == 1  # the starting point
    s.simulate_chain(25)
    assert calls["n"] == 1 + 25 * 7
    assert bool((s.stats["n_steps"] == 7).all())


def test_nuts_gradient_count_matches_reported_steps():
    calls = {"n": 0}
    potential, _ = correlated_target(0.9)

    def counted(w):
        calls["n"] += 1
        return potential(w)

    s = NUTS(START, counted, stepsize=0.2, seed=0)
    s.simulate_chain(40)
    assert calls["n"] == 1 + int(s.stats["n_steps"].sum())
    depth = s.stats["tree_depth"]
    assert bool((s.stats["n_steps"] <= 2**depth + 2**depth - 1).all())


def test_metropolis_hastings_never_computes_gradients():
    potential, _ = correlated_target(0.9)
    s = MetropolisHastings(START, potential, seed=0)
    s.simulate_chain(50)
    assert s.num_grad_evals == 0
    assert MCMC is MetropolisHastings


def test_max_tree_depth_is_reported():
    s = NUTS(torch.zeros(10, dtype=torch.float64), lambda w: 0.5 * (w**2).sum(),
             stepsize=0.01, max_tree_depth=3)
    s.simulate_chain(20)
    assert bool(s.stats["reached_max_tree_depth"].all())
    assert int(s.stats["tree_depth"].max()) == 3
    assert int(s.stats["n_steps"].max()) <= 2**3 - 1 + 2**3


def test_statistics_use_arviz_names_and_one_entry_per_draw():
    potential, _ = correlated_target(0.9)
    s = NUTS(START, potential, seed=0)
    s.simulate_chain(30)
    expected = {
        "lp", "acceptance_rate", "step_size", "n_steps", "tree_depth",
        "reached_max_tree_depth", "diverging", "energy", "energy_error",
    }
    assert set(s.stats) == expected
    assert all(len(v) == 30 for v in s.stats.values())
    lp = np.array([-float(potential(w)) for w in s.samples()])
    np.testing.assert_allclose(s.stats["lp"].numpy(), lp)
    assert bool((s.stats["energy"].numpy() >= -lp - 1e-12).all())  # H = U + K, K >= 0


def test_burn_in_idiom_and_trajectory_compatibility():
    potential, _ = correlated_target(0.9)
    s = HMC(START, potential, stepsize=0.2, num_steps=5, seed=0)
    s.simulate_chain(100 + 30)
    kept = s.samples()[30:].clone()
    s.clear_position_trajectory(n=30)
    assert s.num_states == 130  # transitions simulated, as in the original toolkit
    assert len(s.samples()) == 100
    assert torch.equal(torch.stack(s.position_trajectory), kept)
    assert torch.cat(s.position_trajectory).shape == (200,)
    assert len(s.stats["lp"]) == 100
    s.clear_position_trajectory()
    assert len(s.samples()) == 0 and s.num_states == 130
    assert 0 < s.acceptance_probability <= 1


def test_hmc_jitter_is_uniform_around_the_step_size():
    potential, _ = correlated_target(0.9)
    s = HMC(START, potential, stepsize=0.1, num_steps=2, seed=0)
    s.simulate_chain(400)
    steps = s.stats["step_size"].numpy()
    assert steps.min() >= 0.08 - 1e-12 and steps.max() <= 0.12 + 1e-12
    assert steps.std() == pytest.approx(0.04 / np.sqrt(12), rel=0.15)
    fixed = HMC(START, potential, stepsize=0.1, num_steps=2, seed=0, jitter=0.0)
    fixed.simulate_chain(10)
    assert bool((fixed.stats["step_size"] == 0.1).all())


def test_adapted_values_can_be_passed_to_a_new_sampler():
    potential, _ = ill_conditioned_target(5)
    s = NUTS(torch.zeros(5, dtype=torch.float64), potential, seed=0)
    s.warmup(200)
    t = NUTS(s.position, potential, stepsize=s.step_size, inv_mass=s.inv_mass, seed=1)
    t.simulate_chain(50)
    assert float(t.stats["acceptance_rate"].mean()) > 0.5


def test_logger_writer_and_progress(tmp_path, caplog):
    from tensorboardX import SummaryWriter

    potential, _ = correlated_target(0.9)
    writer = SummaryWriter(str(tmp_path))
    logger = logging.getLogger("bnn_mcmc_test")
    with caplog.at_level(logging.INFO, logger="bnn_mcmc_test"):
        s = NUTS(START, potential, logger=logger, log_interval=10, writer=writer,
                 writer_tag="chain0/", seed=0, progress=True)
        s.simulate_chain(30)
    writer.close()
    assert sum("30/30" in r.getMessage() or "10/30" in r.getMessage() for r in caplog.records) >= 2
    assert any(p.name.startswith("events") for p in tmp_path.iterdir())
