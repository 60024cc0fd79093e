"""The sharded potential on CPU (gloo), with 2-3 local processes started by the tests.

Each test launches its ranks with :func:`bnn_mcmc.distributed.launch` (bounded by a
deadline and a collective timeout, so nothing can hang); the rank bodies live in
``tests/distributed_workers.py``.
"""

from __future__ import annotations

import pytest
import torch

from bnn_mcmc.distributed import (
    DistributedError,
    LaunchError,
    follower_state,
    launch,
    local_shard,
    settings_hash,
    shard_range,
    sharded_pot_energy,
)
from bnn_mcmc.distributed.checks import check_same_settings

from . import distributed_workers as work

#: Seconds a launch may take in all (spawning takes a few seconds on a loaded machine).
DEADLINE = 90.0
#: Seconds a collective waits for the other ranks.
TIMEOUT = 30.0


def run(fn, nproc, *args, timeout=TIMEOUT):
    return launch(fn, nproc, args, timeout=timeout, deadline=DEADLINE)


# ------------------------------------------------------------------ in one process
def test_shard_range_covers_the_rows_once():
    for n, k in ((13, 3), (4, 4), (10, 3), (1, 1)):
        rows = [list(shard_range(n, k, i)) for i in range(k)]
        assert sum(rows, []) == list(range(n))
        assert max(map(len, rows)) - min(map(len, rows)) <= 1
    with pytest.raises(ValueError, match="shard index"):
        shard_range(5, 2, 2)


def test_single_process_equals_nn_pot_energy():
    x, y, net, lik, w0 = work.problem(torch.float64)
    (xs, ys) = local_shard(x, y)  # no process group: all of it
    assert xs.shape == x.shape
    u = sharded_pot_energy(net, xs, ys, likelihood=lik)
    ref = work.nn_pot_energy(net, x, y, likelihood=lik)
    w = w0.clone().requires_grad_(True)
    assert float(u(w).detach()) == float(ref(w).detach())
    assert u.num_points == [len(x)]


def test_settings_hash_is_stable_and_sensitive():
    a = {"seed": 1, "shape": torch.Size([3, 2]), "dtype": torch.float32}
    assert settings_hash(a) == settings_hash(dict(reversed(list(a.items()))))
    assert settings_hash(a) != settings_hash({**a, "seed": 2})
    assert check_same_settings(a, counts=[5]).counts == [[5]]


def test_follower_state_drops_output():
    state = {
        "position": torch.zeros(3),
        "output": {"output_dir": "x", "thin": 2, "checkpoint_every": 5, "chunk_size": 4},
        "draws": {"seen": 7, "length": 3, "chunks": []},
        "warmup_draws": {"seen": 2, "length": 2, "chunks": []},
    }
    f = follower_state(state)
    assert f["output"]["output_dir"] is None and f["output"]["checkpoint_every"] is None
    assert f["draws"]["seen"] == 7 and f["draws"]["draws"].shape == (0, 3)
    assert state["output"]["output_dir"] == "x"  # the original is untouched


# ------------------------------------------------------------------ several processes
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_potential_and_gradient_equal_single_process(dtype):
    """3 uneven shards (2, 4, 7 of 13 points), learned noise, minibatch scaling, T != 1."""
    tol = 1e-12 if dtype == "float64" else 2e-5
    for learned_noise, dataset_size in ((False, None), (True, 40)):
        res = run(work.potential_errors, 3, dtype, learned_noise, dataset_size)
        assert [r["rows"] for r in res] == [2, 4, 7]
        assert len({r["u"] for r in res}) == 1  # the same bits on every rank
        for r in res:
            for key in ("u_err", "g_err", "ub_err", "gb_err", "nograd_err"):
                assert r[key] < tol, (key, r[key], learned_noise)
            assert r["evals"] == 3  # one all-reduce per evaluation


@pytest.mark.parametrize("kind", ["hmc", "nuts"])
def test_sharded_chain_equals_single_process_chain(kind):
    """Warmup (step size and mass adaptation) and draws, draw for draw, in float64."""
    res = run(work.chain_pair, 2, kind, "float64", 30, 30)
    ref = res[0]["reference"]
    assert ref.shape == (30, ref.shape[1]) and ref.std(0).min() > 0
    for r in res:
        assert r["draws"].shape == ref.shape
        torch.testing.assert_close(r["draws"], ref, rtol=1e-9, atol=1e-9)
        assert r["step_size"] == pytest.approx(res[0]["reference_step_size"], rel=1e-9)
    assert res[0]["evals"] == res[1]["evals"]


def test_sharded_chain_float32_within_tolerance():
    res = run(work.chain_pair, 2, "hmc", "float32", 10, 15)
    torch.testing.assert_close(res[0]["draws"], res[0]["reference"], rtol=1e-3, atol=1e-3)
    assert torch.equal(res[0]["draws"], res[1]["draws"])  # ranks agree exactly


def test_rank_death_then_resume_of_all_ranks_gives_the_uninterrupted_chain(tmp_path):
    out = str(tmp_path / "run")
    # rank 1 dies in the middle of sampling (evaluation 60 of about 110)
    with pytest.raises(LaunchError, match=r"(?s)rank 1 failed.*exit code 3") as err:
        run(work.checkpointed_chain, 2, "hmc", out, False, 60, 20)
    assert err.value.failures[0].rank == 1 and err.value.failures[0].exitcode == 3
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # rank 0's checkpoint survived
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # followers wrote nothing
    res = run(work.checkpointed_chain, 2, "hmc", out, True, None, 20)
    ref = work.reference_chain("hmc", 20)
    assert res[0]["num_states"] == res[1]["num_states"] == 20
    torch.testing.assert_close(res[0]["draws"], ref, rtol=1e-9, atol=1e-9)


def test_mismatched_feature_shapes_are_named():
    with pytest.raises(LaunchError, match=r"rank\(s\) \[1\].*inputs\.shape"):
        run(work.mismatched_features, 2)


def test_mismatched_seeds_are_named():
    with pytest.raises(LaunchError, match=r"rank\(s\) \[1, 2\].*settings\.seed"):
        run(work.mismatched_seed, 3)


def test_a_rank_that_raises_stops_every_rank_naming_it():
    with pytest.raises(LaunchError, match=r"rank\(s\) \[1\].*shard 1 is corrupt") as err:
        run(work.raising_rank, 2)
    assert err.value.failures[0].rank == 1
    assert len(err.value.failures) == 2  # rank 0 stopped too, with an error naming rank 1


def test_a_rank_that_hangs_makes_the_others_time_out():
    with pytest.raises(LaunchError, match="did not answer within the process group's timeout"):
        run(work.hanging_rank, 2, timeout=3.0)


def test_numerical_failure_on_one_rank_is_non_finite_on_all():
    res = run(work.numerical_failure, 2)
    assert res[0] == res[1]
    assert res[0][0] == pytest.approx(2 * 2.0 + 2.0)  # two ranks' (w^2).sum() + prior once
    assert not torch.isfinite(torch.tensor(res[0][1]))


def test_launch_checks_its_arguments():
    with pytest.raises(ValueError, match="nproc"):
        launch(work.mismatched_seed, 0)
    with pytest.raises(ValueError, match="backend"):
        launch(work.mismatched_seed, 1, backend="mpi")
    assert isinstance(DistributedError("x"), RuntimeError)
