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


# ------------------------------------------------------------- one chain through the batch
def _scalar_and_batched_nuts(potential_1d, potential_2d, dim, steps, seed, step, **kw):
    from bnn_mcmc.kernels.batched_hmc import BatchedState
    from bnn_mcmc.kernels.batched_nuts import batched_nuts_step
    from bnn_mcmc.kernels.nuts import nuts_step
    from bnn_mcmc.kernels.potential import Potential

    w0 = torch.linspace(-1.0, 1.5, dim, dtype=torch.float64)
    metric = make_metric(torch.linspace(0.5, 2.0, dim, dtype=torch.float64), dim, w0.dtype, "cpu")
    single = Potential(potential_1d)
    batched = BatchedPotential(potential_2d, 1)
    state = single.value_and_grad(w0)
    bstate = BatchedState(
        w0[None], torch.tensor([state.potential], dtype=torch.float64), state.grad[None]
    )
    g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    out1, out2 = [], []
    for _ in range(steps):
        state, info = nuts_step(state, g1, single, metric, step, **kw)
        bstate, (binfo,) = batched_nuts_step(bstate, [g2], [metric], batched, [step], **kw)
        out1.append((state.position.clone(), info))
        out2.append((bstate.position[0].clone(), binfo))
    return out1, out2


def test_one_chain_through_the_batched_nuts_kernel_equals_the_scalar_kernel_bit_for_bit():
    def funnelish(w):  # curvature that varies, so trees of many depths and some divergences
        return 0.5 * (w[0] ** 2 / 4.0) + 0.5 * (w[1:] ** 2 * torch.exp(-w[0])).sum()

    def funnelish_rows(W):
        return 0.5 * (W[:, 0] ** 2 / 4.0) + 0.5 * (W[:, 1:] ** 2 * torch.exp(-W[:, :1])).sum(-1)

    scalar, batched = _scalar_and_batched_nuts(
        funnelish, funnelish_rows, 5, 150, 11, 1.1, max_tree_depth=6
    )
    depths = {info.tree_depth for _, info in scalar}
    assert len(depths) >= 3 and any(info.diverging for _, info in scalar)
    for (w1, i1), (w2, i2) in zip(scalar, batched):
        assert torch.equal(w1, w2)
        assert i1 == i2


def test_dense_metrics_run_in_lockstep():
    # correlated Gaussian: the dense warmup must learn the correlation, and the
    # vectorized run must match the sequential one in distribution
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    prec = torch.linalg.inv(cov)

    def u(w):
        return 0.5 * w @ prec @ w

    def u_rows(W):
        return 0.5 * ((W @ prec) * W).sum(-1)

    starts = torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    m = MultiChainHMC(
        starts, u, "nuts", seed=4, backend="vectorized", batched_pot_energy_func=u_rows
    )
    m.warmup(300, adapt_mass="dense")
    m.simulate_chains(300)
    for c in m.chains:
        assert c.metric.inv_mass.shape == (2, 2)
        assert abs(float(c.metric.inv_mass[0, 1]) - 0.9) < 0.45
    draws = m.samples().reshape(-1, 2)
    import arviz as az

    ess = float(az.ess(m.to_inference_data())["w"].min())
    assert ess > 200
    corr = torch.corrcoef(draws.T)[0, 1]
    assert abs(float(corr) - 0.9) < 6 * (1 - 0.81) / ess**0.5 + 0.02


# ------------------------------------------------------------- vectorized resume
def _weighted(W):
    return 0.5 * (W**2 * torch.arange(1, W.shape[-1] + 1, dtype=W.dtype)).sum(-1)


class _KillAt:
    """A batched potential that raises KeyboardInterrupt (a kill) at its n-th call."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, W):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt("killed")
        return _weighted(W)


@pytest.mark.parametrize(
    "chain_type, kill_at", [("nuts", 300), ("nuts", 700), ("hmc", 200), ("hmc", 420)]
)
def test_vectorized_resume_is_bit_identical(tmp_path, chain_type, kill_at):
    # kills in warmup (first of each pair) and in sampling; checkpoints every 7 transitions
    starts = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = {"max_tree_depth": 5} if chain_type == "nuts" else {"num_steps": 5}

    def run(folder, batched):
        m = MultiChainHMC(
            starts, _weighted, chain_type, seed=3, backend="vectorized",
            batched_pot_energy_func=batched, output_dir=folder, checkpoint_every=7, **kw,
        )
        m.warmup(60)
        m.simulate_chains(40)
        return m

    reference = run(tmp_path / "a", _weighted)
    killer = _KillAt(kill_at)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", killer)
    resumed = MultiChainHMC.resume(
        tmp_path / "b", _weighted, backend="vectorized", batched_pot_energy_func=_weighted
    )
    if resumed.samples().shape[1] == 0:  # killed in warmup: resume finished that call only
        resumed.simulate_chains(40)
    assert torch.equal(reference.samples(), resumed.samples())
    for a, b in zip(reference.chains, resumed.chains):
        assert torch.equal(a.warmup_trajectory, b.warmup_trajectory)
        assert a.step_size == b.step_size


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_one_chain_through_the_batched_hmc_kernel_equals_the_scalar_kernel_bit_for_bit(dtype):
    from bnn_mcmc.kernels.batched_hmc import BatchedState, batched_hmc_step
    from bnn_mcmc.kernels.hmc import hmc_step
    from bnn_mcmc.kernels.potential import Potential

    def f1(w):
        return 0.5 * (w[0] ** 2 / 4.0) + 0.5 * (w[1:] ** 2 * torch.exp(-w[0])).sum()

    def f2(W):
        return 0.5 * (W[:, 0] ** 2 / 4.0) + 0.5 * (W[:, 1:] ** 2 * torch.exp(-W[:, :1])).sum(-1)

    w0 = torch.linspace(-1.0, 1.5, 5, dtype=dtype)
    metric = make_metric(torch.linspace(0.5, 2.0, 5, dtype=dtype), 5, dtype, "cpu")
    single, batched = Potential(f1), BatchedPotential(f2, 1)
    state = single.value_and_grad(w0)
    bstate = BatchedState(
        w0[None], torch.tensor([state.potential], dtype=torch.float64), state.grad[None]
    )
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    accepted = 0
    for _ in range(200):
        state, info = hmc_step(state, g1, single, metric, 1.3, 7)
        bstate, (binfo,) = batched_hmc_step(bstate, [g2], [metric], batched, [1.3], 7)
        assert torch.equal(state.position, bstate.position[0]) and info == binfo
        accepted += info.accepted
    assert 20 < accepted < 190  # both branches exercised


def _holey(w):
    """A Gaussian with a NaN hole (a region where the potential fails), 1-D."""
    u = 0.5 * (w**2 * torch.arange(1, w.shape[-1] + 1, dtype=w.dtype)).sum(-1)
    return torch.where(w[..., 0] > 1.2, torch.nan, u)


@pytest.mark.parametrize("chain_type", ["hmc", "nuts"])
def test_vectorized_equals_sequential_bit_for_bit_on_a_gaussian_with_nan_divergences(chain_type):
    starts = torch.randn(3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    starts[:, 0] = -0.5
    kw = {"num_steps": 6} if chain_type == "hmc" else {"max_tree_depth": 6}
    runs = {}
    for backend in ("sequential", "vectorized"):
        extra = {"batched_pot_energy_func": _holey} if backend == "vectorized" else {}
        m = MultiChainHMC(starts, _holey, chain_type, seed=9, backend=backend, **kw, **extra)
        m.warmup(120)
        m.simulate_chains(60)
        runs[backend] = m
    seq, vec = runs["sequential"], runs["vectorized"]
    assert sum(int(c.stats["diverging"].sum()) for c in seq.chains) > 0  # NaN hole was hit
    assert torch.equal(seq.samples(), vec.samples())
    for a, b in zip(seq.chains, vec.chains):
        assert torch.equal(a.warmup_trajectory, b.warmup_trajectory)
        # the vectorized run checks batched_pot_energy_func once against the 1-D potential
        assert a.step_size == b.step_size and a.num_grad_evals + 1 == b.num_grad_evals
        for name in a.stats:
            assert torch.equal(a.stats[name], b.stats[name]), name
