"""ChEES-HMC and MEADS (lockstep ensembles): moments, invariance, the learned T, errors, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from bnn_mcmc.bnn import MLP, GaussianLikelihood, GaussianPrior, nn_pot_energy
from bnn_mcmc.multichain import MultiChainHMC
from bnn_mcmc.multichain.chees import ChEESHMC
from bnn_mcmc.multichain.meads import MEADS

from .stat_utils import as_chains, assert_moments, mcse_mean
from .targets import correlated_target, iid_target, ill_conditioned_target

pytestmark = pytest.mark.usefixtures("float64_default")


def _starts(num_chains: int, dim: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(num_chains, dim, generator=g, dtype=torch.float64)


def _assert_cross_moment(draws: torch.Tensor, i: int, j: int, value: float, z: float = 5.0):
    x = as_chains(draws)
    prod = (x[..., i] * x[..., j])[..., None]
    err = abs(prod.mean() - value) / mcse_mean(prod)[0]
    assert err < z, f"E[x{i} x{j}] off by {err:.2f} MCSE"


# ------------------------------------------------------------------ ChEES moments
def test_chees_moments_correlated_gaussian():
    U, cov = correlated_target(0.95)
    s = MultiChainHMC(_starts(8, 2, 0), U, chain_type="chees", seed=1, backend="vectorized")
    assert isinstance(s, ChEESHMC)
    s.warmup(150)
    s.simulate_chains(200)
    x = s.samples()
    assert_moments(x, 0.0, torch.diagonal(cov).numpy(), z=5.0, min_ess=100)
    _assert_cross_moment(x, 0, 1, 0.95)
    assert 0.5 < s.avg_acceptance_probability < 0.99


def test_chees_moments_ill_conditioned_gaussian():
    U, cov = ill_conditioned_target(50)
    s = ChEESHMC(_starts(8, 50, 2, 0.1), U, seed=3)
    s.warmup(400)
    s.simulate_chains(200)
    assert_moments(s.samples(), 0.0, torch.diagonal(cov).numpy(), z=5.0, min_ess=100)
    # the diagonal mass matrix learned from all chains matches the variances
    ratio = (s.inv_mass / torch.diagonal(cov)).numpy()
    assert 0.5 < ratio.min() and ratio.max() < 2.0


def test_chees_conjugate_linear_regression_through_nn_pot_energy():
    tau, prior_std, n = 4.0, 1.5, 30
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = (x @ torch.tensor([0.8, -1.2]) + 0.3)[:, None] + torch.randn(n, 1, generator=g) / 2
    net = MLP(2, 1, hidden_layers=())
    U = nn_pot_energy(net, x, y, likelihood=GaussianLikelihood(tau), prior=GaussianPrior(prior_std))
    phi = torch.cat([x, torch.ones(n, 1)], dim=1)
    cov = torch.linalg.inv(tau * phi.T @ phi + torch.eye(3) / prior_std**2)
    mean = tau * cov @ phi.T @ y[:, 0]
    s = ChEESHMC(_starts(8, 3, 4), U, seed=5)
    s.warmup(300)
    s.simulate_chains(400)
    assert_moments(s.samples(), mean.numpy(), torch.diagonal(cov).numpy(), z=5.0, min_ess=200)
    d = s.samples() - mean
    _assert_cross_moment(d, 0, 2, float(cov[0, 2]))


# ------------------------------------------------------------ frozen kernel exact
def _ks_invariance(sampler, std: np.ndarray) -> None:
    before = sampler.state.position.clone()
    sampler.simulate_chains(1)
    after = sampler.samples()[:, -1].numpy()
    moved = (after != before.numpy()).any(1).mean()
    assert moved > 0.3, f"only {moved:.2f} of the chains moved"
    for j in range(after.shape[1]):
        p = stats.kstest(after[:, j] / std[j], "norm").pvalue
        assert p > 1e-3 / after.shape[1], f"coordinate {j}: KS p-value {p:.2e}"


def test_frozen_chees_kernel_leaves_gaussian_invariant():
    std = np.array([0.3, 1.0, 2.0])
    U = lambda w: 0.5 * ((w / torch.tensor(std)) ** 2).sum()  # noqa: E731
    start = _starts(2000, 3, 6) * torch.tensor(std)
    # a large step with a unit mass: about half the proposals are rejected, so the
    # Metropolis correction matters
    s = ChEESHMC(start, U, seed=7, stepsize=0.55, trajectory_length=1.7, inv_mass=1.0)
    _ks_invariance(s, std)
    rates = torch.stack([c.stats["acceptance_rate"][-1] for c in s.chains])
    assert 0.2 < float(rates.mean()) < 0.9


def test_meads_transition_leaves_gaussian_invariant():
    std = np.array([0.3, 1.0, 2.0])
    U = lambda w: 0.5 * ((w / torch.tensor(std)) ** 2).sum()  # noqa: E731
    s = MEADS(_starts(2000, 3, 8) * torch.tensor(std), U, seed=9)
    s.momentum = _starts(2000, 3, 10)  # the stationary whitened momentum
    _ks_invariance(s, std)


# ------------------------------------------------------------------ learned T
def _chees_by_simulation(lengths, step: float, dim: int, num: int = 4000) -> np.ndarray:
    """¼ E[a (|x'|² - |x|²)²] on N(0, I) for jittered lengths u T, u ~ U(0, 1), by leapfrog."""
    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(num, dim, generator=g)
    p0 = torch.randn(num, dim, generator=g)
    u = torch.rand(num, generator=g)
    out = []
    for T in lengths:
        steps = torch.clamp(torch.ceil(u * T / step), min=1)
        x, p = x0.clone(), p0.clone()
        for k in range(int(steps.max())):
            live = (k < steps)[:, None]
            p_half = p - 0.5 * step * x
            x_new = x + step * p_half
            p_new = p_half - 0.5 * step * x_new
            x, p = torch.where(live, x_new, x), torch.where(live, p_new, p)
        dh = 0.5 * ((x**2).sum(1) + (p**2).sum(1) - (x0**2).sum(1) - (p0**2).sum(1))
        a = torch.exp(-dh).clamp(max=1.0)
        out.append(float((a * 0.25 * ((x**2).sum(1) - (x0**2).sum(1)) ** 2).mean()))
    return np.array(out)


def test_learned_trajectory_length_near_chees_maximum():
    dim = 10
    U, _ = iid_target(dim)
    s = ChEESHMC(_starts(32, dim, 12), U, seed=13)
    # a high acceptance target keeps the step small, so short trajectories are resolved
    s.warmup(300, target_accept=0.95, adapt_mass=None)
    grid = np.linspace(0.25, 6.0, 24)
    crit = _chees_by_simulation(grid, s.step_size, dim)
    learned = _chees_by_simulation([s.trajectory_length], s.step_size, dim)[0]
    assert learned >= 0.9 * crit.max(), (
        f"T = {s.trajectory_length:.2f}: ChEES {learned:.3f}, max {crit.max():.3f} at "
        f"T = {grid[crit.argmax()]:.2f}"
    )
    # and not trivially: short trajectories are far from the maximum
    assert crit[0] < 0.5 * crit.max()


# ------------------------------------------------------------------------ MEADS
def test_meads_moments_correlated_gaussian():
    U, cov = correlated_target(0.9)
    s = MultiChainHMC(_starts(12, 2, 14), U, chain_type="meads", seed=15, num_folds=3)
    assert isinstance(s, MEADS)
    s.warmup(100)
    s.simulate_chains(250)
    x = s.samples()
    assert_moments(x, 0.0, torch.diagonal(cov).numpy(), z=5.0, min_ess=100)
    _assert_cross_moment(x, 0, 1, 0.9)


# ----------------------------------------------------------------- bad input etc.
def test_one_chain_is_refused_with_the_fix():
    U, _ = iid_target(2)
    with pytest.raises(ValueError, match="at least 2 chains"):
        ChEESHMC(torch.zeros(1, 2), U)
    with pytest.raises(ValueError, match="at least 2 chains"):
        MultiChainHMC([torch.zeros(2)], U, chain_type="chees")
    with pytest.raises(ValueError, match="at least 3 chains"):
        MEADS(torch.zeros(2, 2), U)
    s = ChEESHMC(torch.zeros(4, 2), U)
    with pytest.raises(ValueError, match="num_chains=-1"):
        s.simulate_chains(3, num_chains=[0, 1])
    with pytest.raises(ValueError, match="backend='vectorized'"):
        MultiChainHMC(torch.zeros(4, 2), U, chain_type="chees", backend="joblib")


def test_potential_that_cannot_be_batched_is_refused():
    def scalar_only(w):
        return torch.tensor(0.5 * float((w**2).sum()))  # float() of a batched tensor fails

    with pytest.raises(ValueError, match="batched_pot_energy_func"):
        ChEESHMC(torch.zeros(4, 2), scalar_only)


def test_nan_energy_is_a_counted_divergence_never_accepted():
    def U(w):
        return 0.5 * (w**2).sum() + torch.where(w[0] > 1.0, torch.nan, 0.0)

    s = ChEESHMC(_starts(8, 2, 16, 0.3), U, seed=17, stepsize=0.3, trajectory_length=2.0)
    s.simulate_chains(100)
    st = s.to_inference_data().sample_stats
    assert int(st["diverging"].values.sum()) > 0
    assert float(s.samples()[..., 0].max()) <= 1.0
    assert np.isinf(st["energy_error"].values[st["diverging"].values]).any()


def test_stats_inference_data_and_bit_for_bit_resume(tmp_path):
    U, _ = correlated_target(0.5)
    a = ChEESHMC(_starts(4, 2, 18), U, seed=19)
    a.warmup(60)
    a.simulate_chains(10)
    a.save(tmp_path / "chees.pt")
    a.simulate_chains(15)
    b = ChEESHMC(_starts(4, 2, 18), U, seed=0)
    b.load(tmp_path / "chees.pt")
    b.simulate_chains(15)
    assert torch.equal(a.samples(), b.samples())
    idata = a.to_inference_data(include_warmup=True)
    names = set(idata.sample_stats.data_vars)
    assert {"n_steps", "acceptance_rate", "diverging", "energy", "step_size"} <= names
    assert "trajectory_length" in names and idata.sample_stats["lp"].shape == (4, 25)
    assert idata.warmup_sample_stats["n_steps"].shape == (4, 60)
    steps = idata.sample_stats["n_steps"].values
    assert (steps == steps[:1]).all()  # the same number of leapfrog steps for every chain
    assert (idata.sample_stats["step_size"].values == a.step_size).all()

    m = MEADS(_starts(6, 2, 20), U, seed=21)
    m.warmup(5)
    m.save(tmp_path / "meads.pt")
    m.simulate_chains(7)
    n = MEADS(_starts(6, 2, 20), U, seed=22)
    n.load(tmp_path / "meads.pt")
    n.simulate_chains(7)
    assert torch.equal(m.samples(), n.samples())
    assert math.isfinite(float(m.summary().weights.max_rhat))
