"""Running the chains of a run description with :class:`~bnn_mcmc.multichain.MultiChainHMC`.

The potential travels as a :class:`~bnn_mcmc.multichain.PotentialFactory` around the
(JSON-able) run description, so every backend — in process, loky workers, Dask
workers on other machines, several GPUs — rebuilds the data and network where the
chain runs.  Draws stream to ``<output_dir>/chains`` and every chain checkpoints
every ``run.checkpoint_every`` transitions, so ``bnn-mcmc sample --resume`` continues
a killed run and ends with the draws an uninterrupted run would have given.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path

import torch

from ..config import RunConfig, from_dict
from ..multichain import MultiChainHMC, PotentialFactory
from ..multichain.lockstep import LOCKSTEP_TYPES
from ..multichain.runlog import IncompleteRunError
from ..runfolder import atomic_write, read_json
from .problem import Problem, build_problem

CHAIN_DIR = "chains"
CONFIG_FILE = "config.json"
TIMING_FILE = "timing.json"


def _build_potential(config: dict, base_dir: str, device: torch.device):
    """Top-level (picklable) factory body: the run's potential on ``device``."""
    return build_problem(from_dict(config, base_dir), device).potential


def potential_factory(cfg: RunConfig) -> PotentialFactory:
    """A factory that rebuilds ``cfg``'s potential on any device, in any process."""
    return PotentialFactory(functools.partial(_build_potential, cfg.as_dict(), str(cfg.base_dir)))


def initial_positions(problem: Problem, seed: int, chains: int) -> list[torch.Tensor]:
    """One start per chain, PyTorch's default initialisation seeded ``seed * 1000 + k``."""
    return [problem.initial_position(seed * 1000 + k) for k in range(chains)]


def sampler_kwargs(cfg: RunConfig) -> dict:
    """The sampler settings given in the file (the samplers' own defaults otherwise)."""
    names = {
        "step_size": "stepsize",
        "num_steps": "num_steps",
        "max_tree_depth": "max_tree_depth",
        "proposal_std": "proposal_std",
    }
    return {arg: cfg.sampler[k] for k, arg in names.items() if cfg.sampler[k] is not None}


def _dask_client(cfg: RunConfig):
    """A ``distributed.Client`` on a throw-away ``LocalCluster`` (no address given)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=cfg.run["num_parallel"], threads_per_worker=1, processes=True)
    return Client(cluster)


def prepare_output(cfg: RunConfig, resume: bool) -> Path:
    out = cfg.output_dir
    saved = out / CONFIG_FILE
    if resume:
        if not saved.is_file():
            raise ValueError(f"--resume: {out} holds no run to resume ({CONFIG_FILE} missing).")
        changed = _changed_sections(read_json(saved, "run description"), cfg.as_dict())
        if changed:
            raise ValueError(
                f"--resume: the config differs from the one saved in {saved} (in "
                f"{', '.join(changed)}); resume with the same file."
            )
    elif (out / CHAIN_DIR).exists():
        raise ValueError(
            f"{out} already holds a run; pass --resume to continue it, or choose another "
            "run.output_dir (--out)."
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(saved, json.dumps(cfg.as_dict(), indent=2).encode(), out)
    return out


def _changed_sections(saved: dict, current: dict) -> list[str]:
    """The ``section.key`` names that differ, ignoring ``run.output_dir``.

    The output folder may have been moved or copied (or named by ``--out``):
    where the run is now is where it continues.
    """

    def flat(d: dict) -> dict:
        items = {
            f"{s}.{k}": v for s, sec in d.items() if isinstance(sec, dict) for k, v in sec.items()
        }
        items.pop("run.output_dir", None)
        return items

    a, b = flat(saved), flat(current)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def run_chains(cfg: RunConfig, problem: Problem, resume: bool = False):
    """Warm up and sample every chain of ``cfg`` (or finish a killed run with ``resume``).

    Returns the :class:`~bnn_mcmc.multichain.MultiChainHMC`, or for ``sampler.type``
    ``'chees'``/``'meads'`` the lockstep ensemble (:mod:`bnn_mcmc.cli.lockstep_run`);
    wall times of warmup and sampling are written to ``timing.json`` in the output folder.
    """
    out = prepare_output(cfg, resume)
    run, s = cfg.run, cfg.sampler
    if s["type"] in LOCKSTEP_TYPES:
        from .lockstep_run import run_lockstep

        starts = initial_positions(problem, run["seed"], run["chains"])
        done = run_lockstep(cfg, problem, out, starts, resume)
        timing = {
            "warmup_seconds": done.warmup_seconds,
            "sampling_seconds": done.sampling_seconds,
            "num_grad_evals": done.ensemble.num_grad_evals,
        }
        atomic_write(out / TIMING_FILE, json.dumps(timing, indent=2).encode(), out)
        return done.ensemble
    client = (
        _dask_client(cfg) if run["backend"] == "dask" and not run["scheduler_address"] else None
    )
    backend = run["backend"]
    common = {
        "backend": backend,
        "client": client,
        "scheduler_address": run["scheduler_address"],
    }
    factory = potential_factory(cfg)
    par = run["num_parallel"]
    try:
        t0 = time.perf_counter()
        if resume and not any((out / CHAIN_DIR).glob("chain_*/checkpoint.pt")):
            # killed before the first checkpoint: nothing was sampled, start afresh
            shutil.rmtree(out / CHAIN_DIR, ignore_errors=True)
            resume = False
        mc = None
        if resume:
            try:
                mc = MultiChainHMC.resume(out / CHAIN_DIR, factory, num_parallel=par, **common)
            except IncompleteRunError:
                pass  # killed while the chains were being created: nothing ran, create them again
        if mc is None:
            mc = MultiChainHMC(
                initial_positions(problem, run["seed"], run["chains"]),
                factory,
                chain_type=s["type"],
                seed=run["seed"],
                devices=run["devices"],
                writer=str(out / "tensorboard") if run["tensorboard"] else None,
                output_dir=out / CHAIN_DIR,
                checkpoint_every=run["checkpoint_every"],
                thin=s["thin"],
                **common,
                **sampler_kwargs(cfg),
            )
        if any(c.warmup_trajectory.shape[0] == 0 for c in mc.chains) and s["warmup"] > 0:
            mc.warmup(
                s["warmup"],
                target_accept=s["target_accept"],
                adapt_mass=None if s["adapt_mass"] == "none" else s["adapt_mass"],
                num_parallel=par,
            )
        t1 = time.perf_counter()
        todo = [i for i, c in enumerate(mc.chains) if c.num_states == 0]
        if todo:
            mc.simulate_chains(s["draws"] * s["thin"], num_chains=todo, num_parallel=par)
        t2 = time.perf_counter()
    finally:
        if client is not None:
            client.close()
    timing = {
        "warmup_seconds": t1 - t0,
        "sampling_seconds": t2 - t1,
        "num_grad_evals": sum(c.num_grad_evals for c in mc.chains),
    }
    atomic_write(out / TIMING_FILE, json.dumps(timing, indent=2).encode(), out)
    return mc
