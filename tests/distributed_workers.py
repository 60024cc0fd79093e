"""Bodies of the ranks spawned by tests/test_distributed.py (module level: picklable).

Every scenario that leaves the process group usable runs in one launch
(:func:`suite`), writing what it saw to ``out``; the last one kills a checkpointed run
on rank 1; :func:`resume` is the restart of all ranks.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

import bnn_mcmc.distributed as distributed
from bnn_mcmc.bnn import GaussianLikelihood, GaussianPrior, LearnedNoiseGaussianLikelihood
from bnn_mcmc.bnn.mlp import MLP
from bnn_mcmc.cli.sharded import rank_main
from bnn_mcmc.distributed import (
    DistributedError,
    ShardedPotential,
    rank,
    resume_sharded,
    sharded_pot_energy,
)
from bnn_mcmc.samplers import HMC, NUTS

#: Uneven shards of the 23 points over 2 ranks.
CUTS = (0, 9, 23)
#: Sampler settings of the chains (warmup, draws).
HMC_OPTIONS = {"stepsize": 0.05, "num_steps": 5, "seed": 7}
NUTS_OPTIONS = {"stepsize": 0.05, "max_tree_depth": 5, "seed": 11}
WARMUP, DRAWS = 40, 30
#: Draws of the chains run at the sampler's fixed step size (no warmup).
FIXED_DRAWS = 40
#: The checkpointed run: rank 1 stops after KILL_AT of its DRAWS sampling transitions.
CHECKPOINT_EVERY, KILL_AT = 10, 25


def problem(dtype: torch.dtype = torch.float64):
    """Data (23 points), a 2-6-1 tanh MLP and its start (drawn in float64, then cast)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(23, 2, generator=g, dtype=torch.float64)
    y = torch.sin(2 * x[:, :1]) + 0.1 * torch.randn(23, 1, generator=g, dtype=torch.float64)
    net = MLP(2, 1, (6,), activation_fn=torch.nn.Tanh(), no_weights=True)
    w0 = 0.3 * torch.randn(net.num_params, generator=g, dtype=torch.float64)
    return x.to(dtype), y.to(dtype), net, w0.to(dtype)


def configs():
    """Keyword sets of nn_pot_energy / sharded_pot_energy tested for equality."""
    return [
        {"likelihood": GaussianLikelihood(25.0), "prior": GaussianPrior(1.0)},
        {"likelihood": LearnedNoiseGaussianLikelihood(), "temperature": 0.5, "dataset_size": 60},
    ]


def shard(*tensors):
    """This rank's rows of each tensor (the uneven :data:`CUTS`)."""
    r = rank()
    return tuple(t[CUTS[r] : CUTS[r + 1]] for t in tensors)


def positions(dim: int, k: int = 3) -> torch.Tensor:
    """Evaluation points of the potential test."""
    return torch.randn(k, dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def warmup(sampler) -> None:
    """The tests' warmup: step size only (the windows of 40 transitions are too short)."""
    sampler.warmup(WARMUP, adapt_mass=None)


def make_sampler(kind: str, potential, w0, **extra):
    """The HMC or NUTS chain of the tests on ``potential``."""
    if kind == "hmc":
        return HMC(w0, potential, **{**HMC_OPTIONS, **extra})
    return NUTS(w0, potential, **{**NUTS_OPTIONS, **extra})


class Recorder:
    """A stand-in tensorboard writer that counts its calls."""

    def __init__(self):
        self.calls = 0

    def add_scalar(self, *args):
        self.calls += 1


def _potential(x, y, net, **kwargs):
    xs, ys = shard(x, y)
    return sharded_pot_energy(net, xs, ys, **kwargs)


def shardwise_potential(x, y, net):
    """In one process, the sharded potential of :data:`CUTS` as 2 ranks sum it.

    Each shard's term is computed alone (``sharded_pot_energy`` without a group) and the
    two are added once, ``L_0 + L_1``, which is what an all-reduce of two buffers gives
    on both ranks (for ``configs()[0]``: scale 1).
    """
    parts = [
        sharded_pot_energy(net, x[a:b], y[a:b], **configs()[0]) for a, b in zip(CUTS, CUTS[1:])
    ]

    def local_fn(w):
        return parts[0].local_fn(w) + parts[1].local_fn(w)

    pot = ShardedPotential(local_fn, global_fn=parts[0].global_fn, scale=1.0)
    pot.dim = parts[0].dim
    return pot


def run_chain(kind: str, potential, w0, adapt: bool = True):
    """The tests' chain: warmed up and DRAWS draws, or FIXED_DRAWS at the fixed step size."""
    s = make_sampler(kind, potential, w0)
    if adapt:
        warmup(s)
        s.simulate_chain(DRAWS)
    else:
        s.simulate_chain(FIXED_DRAWS)
    return s


def suite(out: str) -> None:
    """The scenarios that keep the group usable, then the killed checkpointed run."""
    out = Path(out)
    r = rank()
    x, y, net, w0 = problem()
    # 1. U and grad U at a few points, two likelihood/prior configurations
    values = []
    for kwargs in configs():
        pot = _potential(x, y, net, **kwargs)
        for w in positions(pot.dim):
            w = w.clone().requires_grad_(True)
            u = pot(w)
            (g,) = torch.autograd.grad(u, w)
            with torch.no_grad():
                u_nograd = pot(w.detach())
            values.append((u.detach(), g, u_nograd))
        values.append(torch.tensor(pot.times.num_reductions))
    torch.save(values, out / f"potential_{r}.pt")
    # 2. HMC and NUTS chains draw for draw; rank 0 alone writes (tensorboard stand-in)
    for kind in ("hmc", "nuts"):
        pot = _potential(x, y, net, **configs()[0])
        rec = Recorder()
        s = make_sampler(kind, pot, w0, writer=rec)
        warmup(s)
        s.simulate_chain(DRAWS)
        result = {
            "samples": s.samples(),
            "lp": s.stats["lp"],
            "accepted": s.stats.get("accepted", torch.zeros(0)),
            "n_steps": s.stats["n_steps"],
            "position": s.position,
            "num_grad_evals": torch.tensor(s.num_grad_evals),
            "num_reductions": torch.tensor(pot.times.num_reductions),
            "writer_calls": torch.tensor(rec.calls),
            "has_writer": torch.tensor(s.writer is not None),
        }
        torch.save(result, out / f"{kind}_{r}.pt")
        # without adaptation, in float64 and float32 (tolerance tests against one process)
        for name, dtype in (("f64", torch.float64), ("f32", torch.float32)):
            xd, yd, _, wd = problem(dtype)
            s = make_sampler(kind, _potential(xd, yd, net, **configs()[0]), wd)
            s.simulate_chain(FIXED_DRAWS)
            fixed = {"samples": s.samples(), "n_steps": s.stats["n_steps"], "lp": s.stats["lp"]}
            torch.save(fixed, out / f"{kind}_fixed_{name}_{r}.pt")
    # 3. mismatched seed; 4. shards of another feature shape; 5. a rank's term raising
    errors = {}
    pot = _potential(x, y, net, **configs()[0])
    try:
        make_sampler("hmc", pot, w0, seed=7 + r)
    except DistributedError as err:
        errors["seed"] = str(err)
    try:  # another sampler option (the number of leapfrog steps)
        make_sampler("hmc", _potential(x, y, net, **configs()[0]), w0, num_steps=5 + r)
    except DistributedError as err:
        errors["num_steps"] = str(err)
    xs, ys = shard(x, y)
    try:  # a shard of another dtype
        make_sampler(
            "hmc", sharded_pot_energy(net, xs, ys.float() if r == 1 else ys, **configs()[0]), w0
        )
    except DistributedError as err:
        errors["dtype"] = str(err)
    if r == 1:
        xs = torch.cat([xs, xs[:, :1]], dim=1)  # 3 features instead of 2
    try:
        make_sampler("hmc", sharded_pot_energy(net, xs, ys, **configs()[0]), w0)
    except DistributedError as err:
        errors["shape"] = str(err)
    pot = _potential(x, y, net, **configs()[0])
    term, calls = pot.local_fn, [0]

    def failing(w):
        calls[0] += 1
        if r == 1 and calls[0] == 7:
            raise KeyError("boom on the shard of rank 1")
        return term(w)

    pot.local_fn = failing
    try:
        make_sampler("hmc", pot, w0).simulate_chain(10)
    except DistributedError as err:
        errors["raise"] = str(err)
    (out / f"errors_{r}.txt").write_text(repr(errors))
    # 6. a checkpointed run; rank 1 dies (outside the potential) after KILL_AT draws
    pot = _potential(x, y, net, **configs()[0])
    s = make_sampler("hmc", pot, w0)
    s.configure_output(out / "run", checkpoint_every=CHECKPOINT_EVERY, chunk_size=8)
    warmup(s)
    if r == 1:
        s.simulate_chain(KILL_AT)
        raise RuntimeError("rank 1 crashed outside the potential")
    s.simulate_chain(DRAWS)


def resume(out: str) -> dict:
    """Every rank restarted: rebuild the chain from rank 0's checkpoint and finish it."""
    x, y, net, _ = problem()
    pot = _potential(x, y, net, **configs()[0])
    s = resume_sharded(Path(out) / "run", pot)
    return {"samples": s.samples(), "position": s.position, "num_states": s.num_states}


def cli_runs(reference: tuple, killed: tuple, die_at: int) -> None:
    """Two runs of ``bnn-mcmc sample --nproc 2``'s rank body: ``reference`` uninterrupted,
    then ``killed``, in which rank 0 (the writer) dies at once (``os._exit``, no notice,
    as by ``kill -9``) in its ``die_at``-th evaluation of the potential."""
    rank_main(*reference)
    build, calls = distributed.sharded_pot_energy, [0]

    def dying(*args, **kwargs):
        pot = build(*args, **kwargs)
        term = pot.local_fn

        def local_fn(w):
            calls[0] += 1
            if rank() == 0 and calls[0] == die_at:
                os._exit(3)
            return term(w)

        pot.local_fn = local_fn
        return pot

    distributed.sharded_pot_energy = dying  # rank_main looks it up when it starts
    rank_main(*killed)
