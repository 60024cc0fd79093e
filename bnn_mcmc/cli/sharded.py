"""``bnn-mcmc sample run.toml --nproc N``: every chain of the run sharded over N processes.

The command (or a ``[parallel]`` table with ``nproc = N`` in the run file) starts N
local ranks (:func:`bnn_mcmc.distributed.launch`, one torch thread each).  Every rank
builds the run's problem, keeps its contiguous shard of the data
(:func:`~bnn_mcmc.distributed.local_shard`) and runs the run's chains one after the
other on :func:`~bnn_mcmc.sharded_pot_energy` (same seeds on every rank, so the same
chains); rank 0 alone writes the output folder (draws, checkpoints, tensorboard, the
summary and figures), which has the layout of a one-process run, so
``bnn-mcmc diagnose`` and ``compare`` read it unchanged.

``--resume`` continues a run killed (any rank, or the launcher) with all ranks
restarted: the launching process checks the folder (the same run file, the same
number of processes), then rank 0 reads the checkpoints and sends them to the
others (:func:`~bnn_mcmc.distributed.resume.resume_sharded_run`).  The draws equal
those of the uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import ConfigError, RunConfig, from_dict

#: How the ranks start: a fresh interpreter per rank (``'spawn'``) or forked from a
#: clean server that imported torch once (``'forkserver'``, where the platform has it).
START_METHOD = (
    "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
)
#: What the fork server imports once.
PRELOAD = ("torch", "bnn_mcmc.cli.sharded")
#: Modes of the ranks: a new run, or the continuation of a killed one.
FRESH, RESUME = "fresh", "resume"


def rank_main(config: dict, base_dir: str, mode: str = FRESH) -> int:
    """Body of each rank (module level: picklable)."""
    from ..distributed import is_writer, local_shard, sharded_pot_energy
    from ..distributed.resume import resume_sharded_run
    from ..multichain import MultiChainHMC
    from ..samplers.base import FOLLOWER_THIN
    from .engine import CHAIN_DIR, TIMING_FILE, initial_positions, sampler_kwargs
    from .problem import build_problem

    cfg = from_dict(config, Path(base_dir))
    t0 = time.perf_counter()
    device = "cpu"
    if (cfg.parallel.get("backend") or "gloo") == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    problem = build_problem(cfg, device)
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
    out = cfg.output_dir
    calls: list[dict] = []
    if mode == RESUME:
        mc, calls = resume_sharded_run(out / CHAIN_DIR, potential)
    else:
        output: dict = {"thin": FOLLOWER_THIN}  # a follower keeps no draws
        if writer:
            output = {
                "output_dir": out / CHAIN_DIR,
                "checkpoint_every": run["checkpoint_every"],
                "thin": s["thin"],
                "writer": str(out / "tensorboard") if run["tensorboard"] else None,
            }
        mc = MultiChainHMC(
            initial_positions(problem, run["seed"], run["chains"]),
            potential,
            chain_type=s["type"],
            seed=run["seed"],
            backend="sequential",
            **output,
            **sampler_kwargs(cfg),
        )
    # the run's program: warmup (if any), then sampling; a resumed run skips the calls its
    # journal holds (the same journal on every rank, so every rank makes the same calls)
    done = {c["kind"] for c in calls}
    if s["warmup"] > 0 and not done:
        mc.warmup(
            s["warmup"],
            target_accept=s["target_accept"],
            adapt_mass=None if s["adapt_mass"] == "none" else s["adapt_mass"],
        )
    t1 = time.perf_counter()
    if "sample" not in done:
        mc.simulate_chains(s["draws"] * s["thin"])
    t2 = time.perf_counter()
    if not writer:
        return 0
    timing = {
        "warmup_seconds": t1 - t0,
        "sampling_seconds": t2 - t1,
        "num_grad_evals": sum(c.num_grad_evals for c in mc.chains),
        "nproc": potential.world_size,
        "communication_share": potential.times.communication_share,
        "resumed": mode == RESUME,
    }
    (out / TIMING_FILE).write_text(json.dumps(timing, indent=2))
    return 0


def with_nproc(cfg: RunConfig, nproc: int) -> RunConfig:
    """``cfg`` with ``parallel.nproc = nproc`` (saved in the run folder, checked on resume)."""
    raw = cfg.as_dict()
    raw["parallel"] = {**raw.get("parallel", {}), "nproc": int(nproc)}
    return from_dict(raw, cfg.base_dir)


def prepare_sharded(cfg: RunConfig, nproc: int, resume: bool) -> tuple[RunConfig, str]:
    """Check and prepare the output folder in the launching process; returns the mode.

    Returns ``cfg`` with ``parallel.nproc`` set and :data:`FRESH` or :data:`RESUME`.
    A ``--resume`` of a run killed before its chains were saved starts it afresh
    (nothing was sampled), as a one-process run does.

    Raises
    ------
    ValueError
        When ``--resume`` finds no run, a run of another number of processes, or
        another run file; or a new run finds the folder taken.
    """
    from ..multichain import CHAIN_TYPES
    from ..multichain.runlog import IncompleteRunError, read_meta
    from ..runfolder import read_json
    from .engine import CHAIN_DIR, CONFIG_FILE, prepare_output

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 2:
        raise ValueError(f"--nproc must be an integer >= 2 for a sharded run; got {nproc!r}.")
    saved = cfg.output_dir / CONFIG_FILE
    if resume and saved.is_file():
        before = read_json(saved, "run description").get("parallel", {}).get("nproc")
        if before is None:
            raise ValueError(
                f"--resume: the run in {cfg.output_dir} was not sharded; resume it without "
                "--nproc (and without [parallel] nproc)."
            )
        if before != nproc:
            raise ValueError(
                f"--resume: the run in {cfg.output_dir} was sharded over {before} processes, "
                f"not {nproc}; resume it with --nproc {before} (another number of processes "
                "sums the shards in another order, so the draws would no longer equal those "
                "of an uninterrupted run)."
            )
    cfg = with_nproc(cfg, nproc)
    out = prepare_output(cfg, resume)
    if not resume:
        return cfg, FRESH
    chains = out / CHAIN_DIR
    if not any(chains.glob("chain_*/checkpoint.pt")):
        shutil.rmtree(chains, ignore_errors=True)  # killed before the first checkpoint
        return cfg, FRESH
    try:
        read_meta(chains, CHAIN_TYPES)
    except IncompleteRunError:  # killed while the chains were created: MultiChainHMC redoes it
        return cfg, FRESH
    return cfg, RESUME


def launch_options(cfg: RunConfig) -> dict:
    """Keyword arguments of :func:`~bnn_mcmc.distributed.launch` from ``[parallel]``."""
    from ..distributed import DEFAULT_TIMEOUT

    par = cfg.parallel
    backend = par.get("backend") or "gloo"
    nproc = par["nproc"]
    if backend == "nccl" and torch.cuda.device_count() < nproc:
        raise ConfigError(
            f"parallel.backend = 'nccl' needs one CUDA device per process: {nproc} processes, "
            f"{torch.cuda.device_count()} device(s) here; use backend = 'gloo' or fewer processes."
        )
    return {
        "backend": backend,
        "timeout": par.get("timeout") or DEFAULT_TIMEOUT,
        "start_method": START_METHOD,
        "preload": PRELOAD if START_METHOD == "forkserver" else (),
    }


def sample_sharded(cfg: RunConfig, nproc: int, resume: bool, finish: Callable) -> int:
    """Run ``cfg`` with every chain sharded over ``nproc`` local processes.

    ``finish(cfg, problem, mc, out, seconds)`` writes the summary and figures of the
    chains, read back here from rank 0's checkpoints.
    """
    from ..distributed import launch
    from ..multichain import MultiChainHMC
    from .engine import CHAIN_DIR, potential_factory
    from .problem import build_problem

    cfg, mode = prepare_sharded(cfg, nproc, resume)
    options = launch_options(cfg)
    what = "continuing" if mode == RESUME else "running"
    print(
        f"{cfg.sampler['type'].upper()}: {what} {cfg.run['chains']} chain(s), each sharded over "
        f"{nproc} processes ({options['backend']}) -> {cfg.output_dir}",
        flush=True,
    )
    t0 = time.perf_counter()
    launch(rank_main, nproc, (cfg.as_dict(), str(cfg.base_dir), mode), **options)
    out = cfg.output_dir
    mc = MultiChainHMC.resume(out / CHAIN_DIR, potential_factory(cfg), backend="sequential")
    return finish(cfg, build_problem(cfg), mc, out, time.perf_counter() - t0)
