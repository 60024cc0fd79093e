"""The engine around the kernels: warmup edge cases, the step-size search, float64 energies,
Stan's acceptance statistic at divergent leaves, per-chain failures and masking in lockstep,
and gradient counts that equal the potential's real evaluations on every backend."""

from __future__ import annotations

import math

import pytest
import torch

from bnn_mcmc import HMC, NUTS
from bnn_mcmc.adaptation import SEARCH_THRESHOLD, adaptation_windows, reasonable_step_size
from bnn_mcmc.kernels.batched_hmc import BatchedPotential
from bnn_mcmc.kernels.metrics import make_metric
from bnn_mcmc.multichain import MultiChainHMC


def gauss(w):
    return 0.5 * (w**2).sum()


# ------------------------------------------------------------------------------- warmup
def _short_window_lengths(limit: int) -> list[int]:
    """Warmup lengths whose schedule has a slow window of fewer than two draws."""
    return [
        n for n in range(1, limit + 1) if any(b - a < 2 for a, b in adaptation_windows(n))
    ]


@pytest.mark.parametrize("cls", [HMC, NUTS])
def test_warmup_151_keeps_the_previous_estimate(cls):
    # Stan's schedule leaves a last slow window of one draw at 151 steps
    s = cls(torch.zeros(2, dtype=torch.float64), gauss, seed=0)
    s.warmup(151)
    s.simulate_chain(5)
    assert math.isfinite(s.step_size) and bool(torch.isfinite(s.inv_mass).all())


def test_every_warmup_length_up_to_5000_runs():
    """Every length with a window too short to estimate, and all lengths up to 120, run."""
    lengths = sorted(set(range(1, 121)) | set(_short_window_lengths(5000)))
    for n in lengths:
        s = HMC(torch.zeros(1, dtype=torch.float64), gauss, num_steps=1, seed=n)
        s.warmup(n)
        assert len(s.warmup_trajectory) == n


def test_dense_adaptation_in_float32_with_few_draws_and_large_variances():
    dim = 40
    std = torch.logspace(-2, 3, dim)

    def potential(w):
        return 0.5 * ((w / std) ** 2).sum()

    s = HMC(0.1 * std, potential, num_steps=3, seed=0)  # float32
    s.warmup(30, adapt_mass="dense")  # one window of 23 draws < 40 dimensions
    assert s.inv_mass.dtype == torch.float32 and s.inv_mass.shape == (dim, dim)
    s.simulate_chain(3)


# --------------------------------------------------------------------- step-size search
def test_search_is_hoffman_gelman_algorithm_4_with_threshold_08():
    log_accept = lambda eps: -(eps**2)  # noqa: E731  (crosses log 0.8 at eps = 0.472)
    assert SEARCH_THRESHOLD == 0.8
    # doubling returns the first step that crosses, not half of it
    assert reasonable_step_size(log_accept, 0.01) == pytest.approx(0.64)
    # halving returns the first step that crosses from below
    assert reasonable_step_size(log_accept, 10.0) == pytest.approx(0.3125)


# ------------------------------------------------------------------------ float64 sums
def test_kinetic_energy_is_accumulated_in_float64():
    metric = make_metric(1.0, 3, torch.float32, torch.device("cpu"))
    p = torch.tensor([1e4, 1.0, 1e-4])
    assert metric.kinetic_energy(p).dtype == torch.float64
    assert float(metric.kinetic_energy(p)) == 0.5 * (1e8 + 1.0 + float(torch.tensor(1e-4)) ** 2)


# ---------------------------------------------------------------- divergent leaves (Stan)
@pytest.mark.parametrize("backend", [None, "vectorized"])
def test_divergent_first_leaf_adds_exp_of_minus_energy_error(backend):
    kw = {"stepsize": 1.5, "delta_max": 0.05}
    if backend is None:
        s = NUTS(torch.full((4,), 0.3, dtype=torch.float64), gauss, seed=0, **kw)
        s.simulate_chain(200)
        stats = s.stats
    else:
        m = MultiChainHMC(
            torch.full((2, 4), 0.3, dtype=torch.float64), gauss, "nuts", seed=0,
            backend=backend, **kw,
        )
        m.simulate_chains(200)
        stats = m.chains[0].stats
    first = stats["diverging"] & (stats["n_steps"] == 1)
    assert int(first.sum()) > 10
    rates = stats["acceptance_rate"][first]
    # a leaf that diverges with a finite energy error delta > 0.05 adds exp(-delta) in (0, 1)
    assert bool((rates > 0).all()) and bool((rates < math.exp(-0.05)).all())


# ------------------------------------------------------------- lockstep: chains apart
def double_well(w):
    """Two wells in w[1] at -2 and +2 (barrier 80: never crossed)."""
    return 0.5 * (w[..., 0] ** 2) + 5.0 * (w[..., 1] ** 2 - 4.0) ** 2


def raising_batch(W):
    """The double well, raising a numerical error when any row is in the left well's cliff."""
    if bool(((W[:, 1] < 0) & (W[:, 0] > 0.8)).any()):
        raise torch.linalg.LinAlgError("singular in the cliff region")
    return double_well(W)


def test_one_failing_chain_in_a_batch_diverges_alone():
    starts = torch.tensor([[0.0, 2.0], [0.0, -2.0], [0.0, 2.0]], dtype=torch.float64)
    counted = CountRows(raising_batch)
    m = MultiChainHMC(
        starts, double_well, "nuts", seed=3, backend="vectorized", stepsize=0.05,
        batched_pot_energy_func=counted,
    )
    m.simulate_chains(150)
    div = [int(c.stats["diverging"].sum()) for c in m.chains]
    assert div[1] > 0 and div[0] == 0 and div[2] == 0
    # chain 1 stayed in its own well, the others in theirs
    assert bool((m.chains[1].samples()[:, 1] < 0).all())
    assert bool((m.chains[0].samples()[:, 1] > 0).all())


class CountRows:
    """A potential wrapper that counts the rows it evaluates (1 for a 1-D position)."""

    def __init__(self, func):
        self.func, self.rows = func, 0

    def __call__(self, w):
        self.rows += 1 if w.ndim == 1 else w.shape[0]
        return self.func(w)


def test_masked_chains_are_not_evaluated_and_counts_are_real():
    potential = BatchedPotential(CountRows(lambda W: 0.5 * (W**2).sum(-1)), 4)
    w = torch.randn(4, 3, dtype=torch.float64)
    u, g = potential.value_and_grad(w, rows=[0, 2])
    assert potential.func.rows == 2 and potential.row_evals == [1, 0, 1, 0]
    assert torch.isinf(u[1]) and torch.isinf(u[3]) and torch.equal(g[2], w[2])


@pytest.mark.parametrize("backend", ["sequential", "vectorized"])
@pytest.mark.parametrize("chain_type", ["hmc", "nuts"])
def test_num_grad_evals_equals_real_evaluations(backend, chain_type):
    single = CountRows(gauss)
    batched = CountRows(lambda W: 0.5 * (W**2).sum(-1))
    kw = {"num_steps": 4} if chain_type == "hmc" else {"max_tree_depth": 5}
    if backend == "vectorized":
        kw["batched_pot_energy_func"] = batched
    m = MultiChainHMC(
        torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
        single, chain_type, seed=1, backend=backend, **kw,
    )
    m.warmup(40)
    m.simulate_chains(30)
    assert sum(c.num_grad_evals for c in m.chains) == single.rows + batched.rows
