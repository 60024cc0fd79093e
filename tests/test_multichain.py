"""MultiChainHMC: backends agree, chain selection, potentials per chain, failures, devices."""

import logging
import os

import pytest
import torch

from bnn_mcmc.multichain import ChainError, MultiChainHMC, PotentialFactory, chain_seeds
from bnn_mcmc.multichain.executors import worker_logger


def gauss(w):
    return 0.5 * (w**2).sum()


def shifted(w):
    return 0.5 * ((w - 3.0) ** 2).sum()


def mlp_potential(w):
    """A small tanh network's regression potential (matrix products: batching may round)."""
    x = torch.linspace(-1, 1, 8, dtype=w.dtype).reshape(-1, 1)
    h = torch.tanh(x @ w[:4].reshape(1, 4) + w[4:8])
    f = h @ w[8:12].reshape(4, 1)
    return 0.5 * ((f.squeeze(-1) - x.squeeze(-1)) ** 2).sum() / 0.1 + 0.5 * (w**2).sum()


class Flaky:
    """A potential that raises (not a numerical error) after ``limit`` evaluations."""

    def __init__(self, limit):
        self.limit, self.calls = limit, 0

    def __call__(self, w):
        self.calls += 1
        if self.calls > self.limit:
            raise RuntimeError("data loader died")
        return gauss(w)


class Crash:
    """A potential that kills its (worker) process after ``limit`` evaluations."""

    def __init__(self, limit):
        self.limit, self.calls = limit, 0

    def __call__(self, w):
        self.calls += 1
        if self.calls > self.limit:
            os._exit(3)
        return gauss(w)


def starts(n, dim, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_seeds_are_distinct_and_reproducible():
    root, seeds = chain_seeds(5, 4)
    assert root == 5 and len(set(seeds)) == 4 and seeds == chain_seeds(5, 4)[1]


@pytest.mark.parametrize("chain_type", ["hmc", "nuts"])
def test_sequential_joblib_bitwise_vectorized_close(chain_type):
    kw = {"num_steps": 5} if chain_type == "hmc" else {"max_tree_depth": 4}
    out = {}
    for backend in ("sequential", "joblib", "vectorized"):
        m = MultiChainHMC(starts(3, 12), mlp_potential, chain_type, seed=7, backend=backend, **kw)
        m.warmup(30, num_parallel=2)
        m.simulate_chains(40, num_parallel=2)
        warm = torch.stack([c.warmup_trajectory[:3] for c in m.chains])
        out[backend] = (m.samples(), m.chains[0].stats["lp"], [c.step_size for c in m.chains], warm)
    seq, job, vec = out["sequential"], out["joblib"], out["vectorized"]
    assert torch.equal(seq[0], job[0]) and torch.equal(seq[1], job[1]) and seq[2] == job[2]
    # Same random numbers per chain; only the batched potential's rounding differs, so the
    # chains agree closely at first (they may drift apart after a rounding-flipped decision).
    assert torch.allclose(seq[3], vec[3], atol=1e-4)


def test_vectorized_is_statistically_correct():
    # independent standard normal target: mean 0, variance 1 per coordinate
    m = MultiChainHMC(starts(4, 3), gauss, "nuts", seed=1, backend="vectorized")
    m.warmup(100)
    m.simulate_chains(400)
    idata = m.to_inference_data()
    import arviz as az

    ess = az.ess(idata)["w"].values
    draws = m.samples().reshape(-1, 3).double()
    se = 1.0 / torch.tensor(ess).sqrt()
    assert (draws.mean(0).abs() < 4 * se).all()
    assert ((draws.var(0) - 1).abs() < 4 * (2**0.5) * se + 0.05).all()


def test_chain_selection_and_list_of_potentials():
    m = MultiChainHMC(
        starts(3, 2), [gauss, shifted, gauss], "hmc", seed=0, num_steps=3, stepsize=0.5
    )
    m.simulate_chains(10, num_chains=[2])
    assert [c.num_states for c in m.chains] == [0, 0, 10]
    m.simulate_chains(5, num_chains=2)  # the two with the fewest states: 0 and 1
    assert [c.num_states for c in m.chains] == [5, 5, 10]
    m.simulate_chains(200, num_chains=[1])
    assert m.chains[1].samples()[50:].mean() > 2.0
    with pytest.raises(ValueError, match="distinct chain indices"):
        m.simulate_chains(1, num_chains=[0, 0])
    with pytest.raises(ValueError, match="one per chain"):
        MultiChainHMC(starts(3, 2), [gauss, gauss], "hmc")


def test_results_do_not_depend_on_num_parallel_or_order():
    a = MultiChainHMC(starts(2, 2), gauss, "mh", seed=3)
    a.simulate_chains(30)
    b = MultiChainHMC(starts(2, 2), gauss, "mh", seed=3)
    b.simulate_chains(30, num_chains=[1])
    b.simulate_chains(30, num_chains=[0])
    assert torch.equal(a.samples(), b.samples())


@pytest.mark.parametrize("backend", ["sequential", "joblib"])
def test_failing_chain_is_named_and_others_keep_draws(backend):
    pots = [gauss, Flaky(40), gauss]
    m = MultiChainHMC(starts(3, 2), pots, "hmc", seed=0, backend=backend, num_steps=2)
    with pytest.raises(ChainError, match="chain 1") as info:
        m.simulate_chains(50, num_parallel=2)
    assert set(info.value.errors) == {1}
    assert "data loader died" in info.value.errors[1]
    assert m.chains[0].num_states == 50 and m.chains[2].num_states == 50
    assert m.chains[1].num_states < 50


def test_crashed_worker_is_named_and_finished_chains_keep_draws():
    m = MultiChainHMC(starts(2, 2), [gauss, Crash(30)], "hmc", seed=0, backend="joblib")
    with pytest.raises(ChainError, match="chain 1") as info:
        m.simulate_chains(100, num_parallel=2)
    assert "crashed" in info.value.errors[1] and m.chains[1].num_states == 0
    for i, chain in enumerate(m.chains):  # a chain either failed or kept all its draws
        assert i in info.value.errors or chain.num_states == 100


def test_worker_logger_and_progress_labels(capsys):
    lg = logging.getLogger("bnn_mcmc.tests.unconfigured")
    lg.propagate = False  # as in a fresh worker: no handlers anywhere (pytest's are on root)
    assert worker_logger(lg, 3) is lg and lg.hasHandlers() and lg.level == logging.INFO
    assert "chain 3" in lg.handlers[0].formatter._fmt
    m = MultiChainHMC(starts(2, 2), gauss, "hmc", seed=0, writer_tag="run/", progress=True)
    m.simulate_chains(3)
    err = capsys.readouterr().err
    assert "chain0/sampling" in err and "chain1/sampling" in err
    with pytest.raises(TypeError, match="int or a list"):
        m.simulate_chains(1, num_chains=1.0)


def test_factory_devices_round_robin_and_writer_logger(tmp_path, caplog):
    built = []

    def build(device):
        built.append(device)
        return gauss

    m = MultiChainHMC(
        starts(3, 2),
        PotentialFactory(build),
        "hmc",
        seed=0,
        devices=["cpu", "cpu:0"],
        writer=str(tmp_path / "tb"),
        logger=[None, logging.getLogger("mine"), None],
        log_interval=5,
    )
    assert m.devices == ["cpu", "cpu:0", "cpu"] and len(built) == 3
    with caplog.at_level(logging.INFO, logger="mine"):
        m.simulate_chains(10)
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["chain_0", "chain_1", "chain_2"]
    assert any(r.name == "mine" and "10/10" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="round-robin"):
        MultiChainHMC(starts(2, 2), gauss, devices="cpu")


def test_thinning():
    m = MultiChainHMC(starts(2, 2), gauss, "hmc", seed=0, thin=3)
    m.simulate_chains(30)
    full = MultiChainHMC(starts(2, 2), gauss, "hmc", seed=0)
    full.simulate_chains(30)
    assert torch.equal(m.samples(), full.samples()[:, 2::3])


def test_dask_local_cluster():
    import distributed

    # worker processes, so chain states and potentials really travel (pickled) to and fro
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster) as client:
            m = MultiChainHMC(starts(2, 2), gauss, "nuts", seed=4, backend="dask", client=client)
            m.simulate_chains(20, num_parallel=2)
    ref = MultiChainHMC(starts(2, 2), gauss, "nuts", seed=4)
    ref.simulate_chains(20)
    assert torch.equal(m.samples(), ref.samples())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_chains_keep_draws_on_cpu():
    m = MultiChainHMC(starts(2, 3), gauss, "nuts", seed=0, devices=["cuda:0"])
    m.simulate_chains(20)
    assert m.chains[0].position.is_cuda and m.samples().device.type == "cpu"
    v = MultiChainHMC(starts(2, 3), gauss, "nuts", seed=0, devices=["cuda:0"], backend="vectorized")
    v.simulate_chains(20)
    assert v.samples().shape == (2, 20, 3)
