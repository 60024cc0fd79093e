"""Rank bodies for tests/test_distributed.py (module level, so ``spawn`` can import them)."""

from __future__ import annotations

import os
import time

import torch

from bnn_mcmc import (
    HMC,
    MLP,
    NUTS,
    GaussianLikelihood,
    GaussianPrior,
    LearnedNoiseGaussianLikelihood,
    nn_pot_energy,
)
from bnn_mcmc.distributed import (
    all_reduce_potential,
    check_in_sync,
    configure_rank_output,
    rank,
    resume_sampler,
    sharded_pot_energy,
    world_size,
)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def problem(dtype: torch.dtype, n: int = 13, n_in: int = 2, learned_noise: bool = False):
    """The same small regression problem on every rank (seeded)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, n_in, generator=g, dtype=dtype)
    y = torch.sin(x.sum(-1, keepdim=True)) + 0.1 * torch.randn(n, 1, generator=g, dtype=dtype)
    net = MLP(n_in, 1, (6,), torch.tanh, generator=torch.Generator().manual_seed(1)).to(dtype)
    lik = LearnedNoiseGaussianLikelihood() if learned_noise else GaussianLikelihood(25.0)
    dim = net.num_params + lik.num_extra_params
    w0 = 0.3 * torch.randn(dim, generator=torch.Generator().manual_seed(2), dtype=dtype)
    return x, y, net, lik, w0


def uneven_rows(n: int) -> range:
    """Deliberately uneven shards: rank r gets (r + 1) / sum shares (2, 4, 7 of 13 for 3)."""
    size = world_size()
    weights = [r + 1 for r in range(size)]
    cuts = [0]
    for w in weights:
        cuts.append(cuts[-1] + round(n * w / sum(weights)))
    cuts[-1] = n
    return range(cuts[rank()], cuts[rank() + 1])


def potential_errors(dtype_name: str, learned_noise: bool, dataset_size: int | None) -> dict:
    """Max differences of U and grad U (single and batched) to the single-process potential."""
    dtype = DTYPES[dtype_name]
    x, y, net, lik, w0 = problem(dtype, learned_noise=learned_noise)
    rows = uneven_rows(len(x))
    prior = GaussianPrior(std=0.7)
    kw = {"likelihood": lik, "prior": prior, "temperature": 0.8, "dataset_size": dataset_size}
    sharded = sharded_pot_energy(net, x[rows.start : rows.stop], y[rows.start : rows.stop], **kw)
    full = nn_pot_energy(net, x, y, **kw)
    w = w0.clone().requires_grad_(True)
    u = sharded(w)
    (g,) = torch.autograd.grad(u, w)
    u_ref = full(w)
    (g_ref,) = torch.autograd.grad(u_ref, w)
    batch = torch.stack([w0, 0.5 * w0, -w0]).requires_grad_(True)
    ub = sharded(batch)
    (gb,) = torch.autograd.grad(ub.sum(), batch)
    ub_ref = full(batch)
    (gb_ref,) = torch.autograd.grad(ub_ref.sum(), batch)
    with torch.no_grad():
        u_nograd = sharded(w0)
    return {
        "rows": len(rows),
        "u": float(u.detach()),
        "u_err": abs(float(u.detach()) - float(u_ref.detach())) / abs(float(u_ref.detach())),
        "g_err": float((g - g_ref).abs().max() / g_ref.abs().max()),
        "ub_err": float(((ub - ub_ref).abs() / ub_ref.abs()).max()),
        "gb_err": float((gb - gb_ref).abs().max() / gb_ref.abs().max()),
        "nograd_err": abs(float(u_nograd) - float(u_ref.detach())) / abs(float(u_ref.detach())),
        "evals": sharded.times.num_evals,
    }


def _sampler(kind: str, position, potential, seed: int):
    if kind == "hmc":
        return HMC(position, potential, stepsize=0.05, num_steps=5, seed=seed)
    return NUTS(position, potential, stepsize=0.05, max_tree_depth=5, seed=seed)


def chain_pair(kind: str, dtype_name: str, warmup: int, draws: int) -> dict:
    """A sharded chain (every rank keeps its draws) and, on rank 0, the single-process chain."""
    dtype = DTYPES[dtype_name]
    x, y, net, lik, w0 = problem(dtype)
    rows = uneven_rows(len(x))
    kw = {"likelihood": lik, "prior": GaussianPrior(std=1.0)}
    sharded = sharded_pot_energy(
        net, x[rows.start : rows.stop], y[rows.start : rows.stop], **kw, settings={"seed": 7}
    )
    chain = _sampler(kind, w0, sharded, seed=7)
    configure_rank_output(chain, keep_draws=True)
    chain.warmup(warmup)
    chain.simulate_chain(draws)
    check_in_sync(chain.position)
    out = {
        "draws": chain.samples(),
        "step_size": chain.step_size,
        "evals": sharded.times.num_evals,
    }
    if rank() == 0:
        single = _sampler(kind, w0, nn_pot_energy(net, x, y, **kw), seed=7)
        single.warmup(warmup)
        single.simulate_chain(draws)
        out["reference"] = single.samples()
        out["reference_step_size"] = single.step_size
    return out


def checkpointed_chain(
    kind: str, out_dir: str, resume: bool, die_at: int | None, draws: int
) -> dict:
    """A sharded chain writing to ``out_dir`` on rank 0; rank 1 dies at evaluation ``die_at``."""
    x, y, net, lik, w0 = problem(torch.float64)
    rows = uneven_rows(len(x))
    sharded = sharded_pot_energy(
        net, x[rows.start : rows.stop], y[rows.start : rows.stop], likelihood=lik
    )
    calls = [0]

    def potential(w):
        calls[0] += 1
        if die_at is not None and rank() == 1 and calls[0] == die_at:
            os._exit(3)
        return sharded(w)

    if resume:
        chain = resume_sampler(out_dir, potential)
    else:
        chain = _sampler(kind, w0, potential, seed=11)
        configure_rank_output(chain, out_dir, checkpoint_every=5, chunk_size=4)
        chain.warmup(10)
        chain.simulate_chain(draws)
    check_in_sync(chain.position)
    return {"draws": chain.samples() if rank() == 0 else None, "num_states": chain.num_states}


def reference_chain(kind: str, draws: int):
    """The single-process chain of :func:`checkpointed_chain` (no interruption)."""
    x, y, net, lik, w0 = problem(torch.float64)
    chain = _sampler(kind, w0, nn_pot_energy(net, x, y, likelihood=lik), seed=11)
    chain.warmup(10)
    chain.simulate_chain(draws)
    return chain.samples()


def mismatched_features() -> None:
    """Rank 1's inputs have one feature more."""
    x, y, net, lik, _ = problem(torch.float64)
    if rank() == 1:
        x = torch.cat([x, x[:, :1]], dim=1)
    sharded_pot_energy(net, x, y, likelihood=lik)


def mismatched_seed() -> None:
    """Every rank claims another seed."""
    x, y, net, lik, _ = problem(torch.float64)
    sharded_pot_energy(net, x, y, likelihood=lik, settings={"seed": rank(), "stepsize": 0.1})


def raising_rank() -> None:
    """Rank 1's local term raises at its third evaluation."""
    calls = [0]

    def local(w):
        calls[0] += 1
        if rank() == 1 and calls[0] == 3:
            raise ValueError("shard 1 is corrupt")
        return 0.5 * (w**2).sum()

    u = all_reduce_potential(local)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    for _ in range(5):
        torch.autograd.grad(u(w), w)


def hanging_rank() -> None:
    """Rank 1 stops calling the potential (it sleeps): rank 0's all-reduce times out."""
    u = all_reduce_potential(lambda w: (w**2).sum())
    w = torch.zeros(2, requires_grad=True)
    torch.autograd.grad(u(w), w)
    if rank() == 1:
        time.sleep(600)
    torch.autograd.grad(u(w), w)


def numerical_failure() -> list[float]:
    """Rank 1's term is NaN at one position: every rank's U is non-finite there."""
    u = all_reduce_potential(
        lambda w: (w**2).sum() + (torch.log(w[0]) if rank() == 1 else 0.0),
        global_fn=lambda w: w.sum(),
    )
    values = []
    for v in (1.0, -1.0):
        w = torch.full((2,), v, dtype=torch.float64, requires_grad=True)
        values.append(float(u(w).detach()))
    return values
