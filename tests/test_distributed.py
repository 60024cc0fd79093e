"""One chain over several processes (issue 14): gloo on the CPU, 2 spawned ranks.

All scenarios that leave the process group usable share one launch (the spawned
interpreters take seconds to import torch on a loaded machine); the restart of all
ranks is a second one.  Every launch has a deadline, so no test can hang.
"""

from __future__ import annotations

import ast

import pytest
import torch

from bnn_mcmc import nn_pot_energy
from bnn_mcmc.distributed import (
    DistributedError,
    LaunchError,
    ShardedPotential,
    launch,
    settings_hash,
    shard_range,
    sharded_pot_energy,
)
from bnn_mcmc.storage import read_chunks

from . import distributed_workers as dw

DEADLINE = 100.0  # seconds, per launch
TIMEOUT = 30.0  # seconds a collective waits for a lost rank
#: Ranks forked from one server that imported torch once (spawn: an interpreter per rank).
FAST = {
    "start_method": "forkserver",
    "preload": ["torch", "tests.distributed_workers"],
    "grace": TIMEOUT + 10,  # a loaded machine: let the survivors report before any kill
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Run :func:`dw.suite` on 2 ranks once; it ends with rank 1's crash."""
    out = tmp_path_factory.mktemp("sharded")
    with pytest.raises(LaunchError) as info:
        launch(dw.suite, 2, (str(out),), timeout=TIMEOUT, deadline=DEADLINE, **FAST)
    return out, info.value


def _reference_chain(kind: str, dtype: torch.dtype = torch.float64, adapt: bool = True):
    x, y, net, w0 = dw.problem(dtype)
    return dw.run_chain(kind, nn_pot_energy(net, x, y, **dw.configs()[0]), w0, adapt)


def test_sharded_potential_equals_nn_pot_energy_on_uneven_shards(suite):
    out, _ = suite
    x, y, net, _ = dw.problem()
    got = [torch.load(out / f"potential_{r}.pt", weights_only=True) for r in (0, 1)]
    assert got[0][-1].item() == 3 * 2  # one all-reduce per evaluation (grad and no-grad)
    k = 0
    for kwargs in dw.configs():
        ref = nn_pot_energy(net, x, y, **kwargs)
        for w in dw.positions(ref.dim):
            w = w.clone().requires_grad_(True)
            u = ref(w)
            (g,) = torch.autograd.grad(u, w)
            for r in (0, 1):  # every rank holds the full-data value
                u_r, g_r, u_nograd = got[r][k]
                torch.testing.assert_close(u_r, u.detach(), rtol=1e-12, atol=1e-10)
                torch.testing.assert_close(g_r, g, rtol=1e-12, atol=1e-10)
                torch.testing.assert_close(u_nograd, u.detach(), rtol=1e-12, atol=1e-10)
            k += 1
        k += 1  # the reduction count


@pytest.mark.parametrize("kind", ["hmc", "nuts"])
def test_sharded_chain_equals_single_process_chain_draw_for_draw(suite, kind):
    """Warmed-up float64 chains: the same decisions; positions within 1e-5 (measured 5e-7).

    The sums over points are rounded differently (shard by shard, then the all-reduce,
    against one sum over all points): U and grad U differ by ~1e-16 relative. At a fixed
    step size that stays ~1e-15 (``..._at_a_fixed_step_...``); in warmup, dual averaging
    turns the rounding of the acceptance statistics into another step size (relative
    1e-9 after 40 transitions here), which every later trajectory carries: ~1e-7 after 70.
    """
    out, _ = suite
    ref = _reference_chain(kind)
    r0, r1 = (torch.load(out / f"{kind}_{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["samples"].shape == (dw.DRAWS, ref.dim)
    decisions = "accepted" if kind == "hmc" else "n_steps"
    assert torch.equal(r0[decisions], ref.stats[decisions])
    torch.testing.assert_close(r0["samples"], ref.samples(), rtol=0, atol=1e-5)
    torch.testing.assert_close(r0["lp"], ref.stats["lp"], rtol=1e-5, atol=1e-5)
    assert torch.equal(r0["position"], r1["position"])  # the ranks never drift apart
    # honest counts: the same gradient evaluations as one process, one all-reduce each
    assert r0["num_grad_evals"].item() == ref.num_grad_evals == r0["num_reductions"].item()
    assert ref.stats["n_steps"].min() > 1  # real trajectories, not one-step moves
    assert 0 < ref.acceptance_probability < 1
    # only rank 0 writes: the follower drops the writer
    assert r0["has_writer"] and r0["writer_calls"] > 0
    assert not r1["has_writer"] and r1["writer_calls"] == 0


@pytest.mark.parametrize("kind", ["hmc", "nuts"])
def test_sharded_chain_equals_the_shardwise_one_process_chain_bit_for_bit(suite, kind):
    """The cause of the 1e-7 above is the rounding of the sum over points alone: summed
    shard by shard in one process (L_0 + L_1, as the all-reduce of two buffers sums them
    on both ranks), the one-process chain *is* the sharded chain, bit for bit."""
    out, _ = suite
    x, y, net, w0 = dw.problem()
    ref = dw.run_chain(kind, dw.shardwise_potential(x, y, net), w0)
    r0 = torch.load(out / f"{kind}_0.pt", weights_only=True)
    assert torch.equal(r0["samples"], ref.samples())
    assert torch.equal(r0["lp"], ref.stats["lp"])
    x, y, net, w0 = dw.problem(torch.float32)  # in float32 too
    ref = dw.run_chain(kind, dw.shardwise_potential(x, y, net), w0, adapt=False)
    got = torch.load(out / f"{kind}_fixed_f32_0.pt", weights_only=True)
    assert torch.equal(got["samples"], ref.samples())


@pytest.mark.parametrize(
    ("kind", "name", "dtype", "atol"),
    [
        ("hmc", "f64", torch.float64, 1e-12),  # measured 7e-16
        ("nuts", "f64", torch.float64, 1e-12),  # measured 6e-15
        ("hmc", "f32", torch.float32, 1e-4),  # measured 6e-7
        ("nuts", "f32", torch.float32, 1e-4),  # measured 1.3e-6
    ],
)
def test_sharded_chain_at_a_fixed_step_equals_single_process_chain(suite, kind, name, dtype, atol):
    """Without adaptation (step size 0.05, 40 draws) the rounding does not grow: float64
    positions agree to 1e-12, float32 to 1e-4, with the same decisions."""
    out, _ = suite
    ref = _reference_chain(kind, dtype, adapt=False)
    got = torch.load(out / f"{kind}_fixed_{name}_0.pt", weights_only=True)
    assert got["samples"].dtype == dtype and got["samples"].shape == (dw.FIXED_DRAWS, ref.dim)
    assert torch.equal(got["n_steps"], ref.stats["n_steps"])
    torch.testing.assert_close(got["samples"], ref.samples(), rtol=0, atol=atol)
    torch.testing.assert_close(got["lp"], ref.stats["lp"], rtol=atol, atol=atol)
    assert 0 < ref.acceptance_probability < 1
    assert (ref.samples()[1:] != ref.samples()[:-1]).any(1).sum() >= 5  # the chain moves


def _errors(out, r):
    return ast.literal_eval((out / f"errors_{r}.txt").read_text())


def test_mismatched_seed_is_an_error_naming_the_rank(suite):
    out, _ = suite
    for r in (0, 1):
        text = _errors(out, r)["seed"]
        assert "rank(s) [1]" in text and "seed" in text, text


def test_shards_of_different_feature_shapes_are_an_error(suite):
    out, _ = suite
    for r in (0, 1):
        text = _errors(out, r)["shape"]
        assert "rank(s) [1]" in text and "feature shapes" in text and "[3]" in text, text


def test_mismatched_sampler_options_are_an_error_naming_rank_and_key(suite):
    out, _ = suite
    for r in (0, 1):
        text = _errors(out, r)["num_steps"]
        assert "rank(s) [1]" in text and "differing: rank 1: chain.options.num_steps)" in text, text


def test_shards_of_different_dtypes_are_an_error(suite):
    out, _ = suite
    for r in (0, 1):
        text = _errors(out, r)["dtype"]
        assert "rank(s) [1]" in text and "float32" in text and "float64" in text, text


def test_a_rank_raising_in_its_term_stops_every_rank_naming_it(suite):
    out, _ = suite
    e0, e1 = _errors(out, 0)["raise"], _errors(out, 1)["raise"]
    assert "rank(s) [1]" in e0 and "stops with them" in e0, e0
    assert "rank(s) [1]" in e1 and "boom" in e1, e1


def test_a_rank_dying_stops_the_others_naming_it(suite):
    out, err = suite
    assert err.failures[0].rank == 1 and not err.failures[0].secondary
    assert "rank 1 crashed outside the potential" in err.failures[0].error
    follower = [f for f in err.failures if f.rank == 0]
    assert follower and follower[0].secondary, err.failures
    assert "rank(s) [1] failed" in follower[0].error, follower[0].error
    # what rank 0 wrote before is intact: the draws of the last checkpoint (at 20)
    draws, _ = read_chunks(out / "run" / "draws")
    assert draws.shape[0] >= 2 * dw.CHECKPOINT_EVERY
    assert (out / "run" / "checkpoint.pt").is_file()


def test_resume_after_a_restart_of_all_ranks_equals_the_uninterrupted_run(suite):
    out, _ = suite
    got = launch(dw.resume, 2, (str(out),), timeout=TIMEOUT, deadline=DEADLINE, **FAST)
    uninterrupted = torch.load(out / "hmc_0.pt", weights_only=True)["samples"]
    assert got[0]["num_states"] == dw.DRAWS
    assert torch.equal(got[0]["samples"], uninterrupted)  # bit for bit
    draws, _ = read_chunks(out / "run" / "draws")
    assert torch.equal(torch.from_numpy(draws), uninterrupted)
    assert got[1]["samples"].shape[0] == 0  # the follower keeps no draws
    assert torch.equal(got[0]["position"], got[1]["position"])


# ---------------------------------------------------------------- in one process


def test_shard_range_covers_every_row_once():
    rows = [list(shard_range(23, 3, i)) for i in range(3)]
    assert [len(r) for r in rows] == [8, 8, 7]
    assert sum(rows, []) == list(range(23))
    with pytest.raises(ValueError, match="shard index"):
        shard_range(5, 2, 2)


def test_settings_hash_is_deterministic_and_sensitive():
    a = {"seed": 1, "x": torch.ones(3), "shape": (2, 3)}
    assert settings_hash(a) == settings_hash({"shape": [2, 3], "x": torch.ones(3), "seed": 1})
    assert settings_hash(a) != settings_hash({**a, "seed": 2})
    assert settings_hash(a) != settings_hash({**a, "x": torch.zeros(3)})


def test_without_a_group_the_sharded_potential_is_nn_pot_energy():
    x, y, net, w0 = dw.problem()
    for kwargs in dw.configs():
        ref = nn_pot_energy(net, x, y, **kwargs)
        pot = sharded_pot_energy(net, x, y, **kwargs)
        w = dw.positions(ref.dim)[0].requires_grad_(True)
        torch.testing.assert_close(pot(w), ref(w), rtol=1e-14, atol=1e-12)
    with pytest.raises(ValueError, match="compile_potential"):
        dw.make_sampler("hmc", pot, w0, compile_potential=True)


def test_bad_arguments_are_clear_errors():
    x, y, net, w0 = dw.problem()
    with pytest.raises(ValueError, match="dataset_size"):
        sharded_pot_energy(net, x, y, dataset_size=5)(w0)
    with pytest.raises(ValueError, match="1-D position"):
        ShardedPotential(lambda w: w.sum())(torch.zeros(2, 3))
    with pytest.raises(DistributedError, match="building the sharded potential failed"):
        sharded_pot_energy(net, x[:, :1], y)(w0)
    with pytest.raises(ValueError, match="nproc"):
        launch(dw.resume, 0)


def test_cli_nproc_is_documented_and_resume_checks_the_folder_first(tmp_path, capsys):
    from bnn_mcmc.cli import build_parser, main

    with pytest.raises(SystemExit):
        build_parser().parse_args(["sample", "--help"])
    assert "--nproc" in capsys.readouterr().out
    cfg = tmp_path / "run.toml"
    cfg.write_text('[data]\nname = "regression_gap"\nn = 12\n[run]\noutput_dir = "out"\n')
    assert main(["sample", str(cfg), "--nproc", "2", "--resume"]) == 1
    assert "holds no run to resume" in capsys.readouterr().err  # checked before any launch
