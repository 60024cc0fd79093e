"""One chain over 1 and 2 processes: µs per gradient, ESS/s, communication share.

A 10-128-128-1 tanh MLP (18 049 weights) on 4 000 points of a synthetic regression,
so that one U + ∇U takes well over 20 ms in one process with one thread.  Each setting
runs in processes of one thread each (``bnn_mcmc.distributed.launch``); the data are
split into contiguous shards.  Rows:

* ``nn_pot_energy`` — one process, the plain potential (no process group);
* ``sharded, 1 process`` / ``2 processes`` — :func:`bnn_mcmc.sharded_pot_energy`.

Columns: µs per gradient (median of timed U + ∇U evaluations after two warm-up
ones), share of each evaluation spent in the all-reduce (rank 0's wall clock; it
includes waiting for the slower rank), and ESS/s of an HMC chain (same seed in
every row, so the same chain: ESS is the same and ESS/s compares wall time), with
ESS the bulk ESS (ArviZ) of the log posterior.

    PYTHONPATH=. python benchmarks/bench_sharded.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

N, D_IN, HIDDEN = 4_000, 10, (128, 128)


def _problem():
    from bnn_mcmc.bnn import GaussianLikelihood, GaussianPrior
    from bnn_mcmc.bnn.mlp import MLP

    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D_IN, generator=g)
    y = torch.tanh(x[:, :3].sum(1, keepdim=True)) + 0.1 * torch.randn(N, 1, generator=g)
    net = MLP(D_IN, 1, HIDDEN, activation_fn=torch.nn.Tanh(), no_weights=True)
    w0 = 0.05 * torch.randn(net.num_params, generator=g)
    return x, y, net, w0, {"likelihood": GaussianLikelihood(100.0), "prior": GaussianPrior(1.0)}


def _time_gradients(potential, w0, reps: int) -> list[float]:
    times = []
    for i in range(reps + 2):
        w = w0.clone().requires_grad_(True)
        t0 = time.perf_counter()
        (g,) = torch.autograd.grad(potential(w), w)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return times


def _ess(lp) -> float:
    import arviz as az
    import numpy as np

    return float(az.ess(np.asarray(lp)[None, :], method="bulk"))


def _chain(potential, w0, warmup: int, draws: int):
    from bnn_mcmc import HMC

    s = HMC(w0, potential, stepsize=1e-3, num_steps=5, seed=0)
    s.warmup(warmup, adapt_mass=None)
    t0 = time.perf_counter()
    s.simulate_chain(draws)
    return s, time.perf_counter() - t0


def rank_body(reps: int, warmup: int, draws: int) -> dict:
    """One rank of a sharded row: time gradients, then run the chain."""
    from bnn_mcmc.distributed import local_shard, sharded_pot_energy

    x, y, net, w0, kwargs = _problem()
    xs, ys = local_shard(x, y)
    pot = sharded_pot_energy(net, xs, ys, **kwargs)
    pot.setup()
    grads = _time_gradients(pot, w0, reps)
    share = pot.times.communication_share
    s, seconds = _chain(pot, w0, warmup, draws)
    return {
        "us": 1e6 * statistics.median(grads),
        "share": share,
        "ess": _ess(s.stats["lp"]) if pot.is_writer else float("nan"),
        "seconds": seconds,
        "last": s.position,
    }


def plain_body(reps: int, warmup: int, draws: int) -> dict:
    """The plain single-process potential, in a one-rank launch (same process setup)."""
    from bnn_mcmc import nn_pot_energy

    x, y, net, w0, kwargs = _problem()
    pot = nn_pot_energy(net, x, y, **kwargs)
    grads = _time_gradients(pot, w0, reps)
    s, seconds = _chain(pot, w0, warmup, draws)
    return {
        "us": 1e6 * statistics.median(grads),
        "share": 0.0,
        "ess": _ess(s.stats["lp"]),
        "seconds": seconds,
        "last": s.position,
    }


def main() -> None:
    from bnn_mcmc.distributed import launch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer evaluations and draws")
    args = p.parse_args()
    reps, warmup, draws = (5, 5, 20) if args.quick else (20, 10, 60)
    rows = [
        ("nn_pot_energy, 1 process", launch(plain_body, 1, (reps, warmup, draws))[0]),
        ("sharded, 1 process", launch(rank_body, 1, (reps, warmup, draws))[0]),
        ("sharded, 2 processes", launch(rank_body, 2, (reps, warmup, draws))[0]),
    ]
    base = rows[0][1]
    print(f"MLP {D_IN}-{'-'.join(map(str, HIDDEN))}-1 on {N} points, float32, 1 thread per process")
    print(f"HMC: 5 leapfrog steps, {warmup} warmup + {draws} draws, seed 0 in every row\n")
    print("| setting | µs / gradient | speed-up | all-reduce share | ESS(lp) | ESS/s |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        same = torch.allclose(r["last"], base["last"], atol=1e-3)
        print(
            f"| {name} | {r['us']:.0f} | {base['us'] / r['us']:.2f}x | {100 * r['share']:.1f} % "
            f"| {r['ess']:.1f} | {r['ess'] / r['seconds']:.2f} |"
            + ("" if same else " (chain differs)")
        )


if __name__ == "__main__":
    main()
