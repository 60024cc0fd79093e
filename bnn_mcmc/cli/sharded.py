"""``bnn-mcmc sample run.toml --nproc N``: every chain of the run sharded over N processes.

The command starts N local ranks (:func:`bnn_mcmc.distributed.launch`, one torch
thread each).  Every rank builds the run's problem, keeps its contiguous shard of the
data (:func:`~bnn_mcmc.distributed.local_shard`) and runs the run's chains one after
the other on :func:`~bnn_mcmc.sharded_pot_energy` (same seeds on every rank, so the
same chains); rank 0 alone writes the output folder (draws, checkpoints, tensorboard,
the summary and figures), which has the layout of a one-process run, so
``bnn-mcmc diagnose`` and ``compare`` read it unchanged.  ``--resume`` is not
supported with ``--nproc`` yet (use :func:`bnn_mcmc.distributed.resume_sharded`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ..config import from_dict


def _rank_main(config: dict, base_dir: str) -> int:
    """Body of each rank (module level: picklable)."""
    from ..distributed import is_writer, local_shard, sharded_pot_energy
    from ..multichain import MultiChainHMC
    from .engine import CHAIN_DIR, TIMING_FILE, initial_positions, prepare_output, sampler_kwargs
    from .problem import build_problem

    cfg = from_dict(config, Path(base_dir))
    t0 = time.perf_counter()
    problem = build_problem(cfg)
    xs, ys = local_shard(problem.data.x, problem.data.y)
    potential = sharded_pot_energy(
        problem.net,
        xs,
        ys,
        likelihood=problem.likelihood,
        prior=problem.prior,
        temperature=cfg.likelihood["temperature"],
    )
    run, s = cfg.run, cfg.sampler
    writer = is_writer()
    output = {}
    if writer:
        out = prepare_output(cfg, resume=False)
        output = {
            "output_dir": out / CHAIN_DIR,
            # a checkpoint at the end at least: the launching process reads the chains back
            "checkpoint_every": run["checkpoint_every"] or s["warmup"] + s["draws"] * s["thin"],
            "writer": str(out / "tensorboard") if run["tensorboard"] else None,
        }
    mc = MultiChainHMC(
        initial_positions(problem, run["seed"], run["chains"]),
        potential,
        chain_type=s["type"],
        seed=run["seed"],
        backend="sequential",
        thin=s["thin"],
        **output,
        **sampler_kwargs(cfg),
    )
    if s["warmup"] > 0:
        mc.warmup(
            s["warmup"],
            target_accept=s["target_accept"],
            adapt_mass=None if s["adapt_mass"] == "none" else s["adapt_mass"],
        )
    t1 = time.perf_counter()
    mc.simulate_chains(s["draws"] * s["thin"])
    t2 = time.perf_counter()
    if not writer:
        return 0
    import json

    timing = {
        "warmup_seconds": t1 - t0,
        "sampling_seconds": t2 - t1,
        "num_grad_evals": sum(c.num_grad_evals for c in mc.chains),
        "nproc": potential.world_size,
        "communication_share": potential.times.communication_share,
    }
    (out / TIMING_FILE).write_text(json.dumps(timing, indent=2))
    return 0


def sample_sharded(cfg, nproc: int, resume: bool, finish: Callable) -> int:
    """Run ``cfg`` with every chain sharded over ``nproc`` local processes.

    ``finish(cfg, problem, mc, out, seconds)`` writes the summary and figures of the
    chains, read back here from rank 0's checkpoints.
    """
    from ..distributed import launch
    from ..multichain import MultiChainHMC
    from .engine import CHAIN_DIR, potential_factory
    from .problem import build_problem

    if resume:
        raise ValueError(
            "--resume is not supported with --nproc yet; resume a sharded chain in Python "
            "with bnn_mcmc.distributed.resume_sharded, or rerun without --resume."
        )
    print(
        f"{cfg.sampler['type'].upper()}: {cfg.run['chains']} chain(s), each sharded over "
        f"{nproc} processes -> {cfg.output_dir}",
        flush=True,
    )
    t0 = time.perf_counter()
    launch(_rank_main, nproc, (cfg.as_dict(), str(cfg.base_dir)))
    out = cfg.output_dir
    mc = MultiChainHMC.resume(out / CHAIN_DIR, potential_factory(cfg), backend="sequential")
    return finish(cfg, build_problem(cfg), mc, out, time.perf_counter() - t0)
