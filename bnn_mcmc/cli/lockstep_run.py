"""Running a lockstep ensemble (``sampler.type = 'chees'`` or ``'meads'``) from a run description.

The chains of ChEES-HMC and MEADS share their tuning, so they run as one object
(:class:`~bnn_mcmc.multichain.chees.ChEESHMC`, :class:`~bnn_mcmc.multichain.meads.MEADS`)
in this process, their potential batched over the chain axis.  The ensemble is written
to ``<output_dir>/chains/ensemble.pt`` after warmup and every ``run.checkpoint_every``
transitions of sampling; ``bnn-mcmc sample --resume`` reloads the last one and ends with
the draws an uninterrupted run would have given (a run killed during warmup, which
cannot be checkpointed half way, warms up again from the same seed: the same warmup).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import torch

from ..config import RunConfig
from ..multichain.chees import ChEESHMC
from ..multichain.ensemble import LockstepEnsemble, Trace
from ..multichain.meads import MEADS
from ..runfolder import atomic_write
from .problem import Problem, build_problem

ENSEMBLE_FILE = "ensemble.pt"

#: Statistics written to tensorboard, per chain, as ``tag: stats key``.
SCALARS = {
    "potential": "lp",
    "hamiltonian": "energy",
    "acceptance": "acceptance_rate",
    "step_size": "step_size",
    "n_steps": "n_steps",
    "trajectory_length": "trajectory_length",
}


class LockstepRun(NamedTuple):
    """A finished ensemble and the wall time of this call's warmup and sampling."""

    ensemble: LockstepEnsemble
    warmup_seconds: float
    sampling_seconds: float


def lockstep_kwargs(cfg: RunConfig) -> dict:
    """The ensemble's settings given in the file (the class defaults otherwise)."""
    s = cfg.sampler
    names = {}
    if s["type"] == "chees":
        names = {
            "step_size": "stepsize",
            "trajectory_length": "trajectory_length",
            "max_steps": "max_steps",
            "learning_rate": "learning_rate",
        }
    return {arg: s[k] for k, arg in names.items() if s.get(k) is not None}


def build_ensemble(
    cfg: RunConfig, problem: Problem, starts: list[torch.Tensor]
) -> LockstepEnsemble:
    """The ensemble of ``cfg`` at ``starts`` (one row per chain)."""
    cls = ChEESHMC if cfg.sampler["type"] == "chees" else MEADS
    return cls(torch.stack(starts), problem.potential, seed=cfg.run["seed"], **lockstep_kwargs(cfg))


def save_ensemble(ensemble: LockstepEnsemble, folder: Path) -> None:
    """Write the ensemble's state atomically to ``folder / ENSEMBLE_FILE``."""
    import io

    buf = io.BytesIO()
    torch.save(ensemble.state_dict(), buf)
    atomic_write(folder / ENSEMBLE_FILE, buf.getvalue(), folder)


def write_tensorboard(ensemble: LockstepEnsemble, logdir: Path) -> None:
    """Warmup and sampling statistics of every chain, one event folder per chain."""
    from tensorboardX import SummaryWriter

    for view in ensemble.chains:
        writer = SummaryWriter(str(logdir / f"chain_{view.index}"))
        step = 0
        for stats in (view.warmup_stats, view.stats):
            n = len(next(iter(stats.values()))) if stats else 0
            for i in range(n):
                for tag, key in SCALARS.items():
                    if key in stats:
                        value = float(stats[key][i])
                        writer.add_scalar(tag, -value if key == "lp" else value, step)
                step += 1
        writer.close()


def run_lockstep(
    cfg: RunConfig, problem: Problem, out: Path, starts: list[torch.Tensor], resume: bool
) -> LockstepRun:
    """Warm up and sample the ensemble of ``cfg`` (or continue a killed run with ``resume``).

    Raises
    ------
    ValueError
        For a backend other than ``'vectorized'``, or ``run.devices`` naming several devices.
    """
    run, s = cfg.run, cfg.sampler
    if run["backend"] != "vectorized":
        raise ValueError(
            f"sampler.type = {s['type']!r} moves all chains in lockstep in one process: set "
            f"run.backend = 'vectorized' (got {run['backend']!r})."
        )
    devices = run["devices"] or ["cpu"]
    if len(set(devices)) > 1:
        raise ValueError(
            f"sampler.type = {s['type']!r} runs every chain on one device; run.devices names "
            f"{devices}."
        )
    if devices[0] != "cpu":  # data, network and potential on that device
        problem = build_problem(cfg, devices[0])
        starts = [w.to(devices[0]) for w in starts]
    t0 = time.perf_counter()
    folder = out / "chains"
    folder.mkdir(parents=True, exist_ok=True)
    ensemble = build_ensemble(cfg, problem, starts)
    path = folder / ENSEMBLE_FILE
    if resume and path.is_file():
        ensemble.load_state_dict(torch.load(path, weights_only=True, map_location=ensemble.device))
    warm = len(ensemble.warmup_trace.draws) > 0 or s["warmup"] == 0
    if not warm:
        ensemble.warmup(s["warmup"], target_accept=s["target_accept"], adapt_mass=_mass(cfg))
        save_ensemble(ensemble, folder)
    t1 = time.perf_counter()
    total = s["draws"] * s["thin"]
    every = run["checkpoint_every"]
    while len(ensemble.trace.draws) < total:
        ensemble.simulate_chains(min(every, total - len(ensemble.trace.draws)))
        save_ensemble(ensemble, folder)
    t2 = time.perf_counter()
    if s["thin"] > 1:
        thin_trace(ensemble.trace, s["thin"])
    if run["tensorboard"]:
        write_tensorboard(ensemble, out / "tensorboard")
    return LockstepRun(ensemble, t1 - t0, t2 - t1)


def thin_trace(trace: Trace, thin: int) -> None:
    """Keep every ``thin``-th transition of ``trace`` (the last of each block), in place."""
    trace.draws = trace.draws[thin - 1 :: thin]
    trace.stats = {k: v[thin - 1 :: thin] for k, v in trace.stats.items()}


def _mass(cfg: RunConfig) -> str | None:
    mass = cfg.sampler["adapt_mass"]
    return None if mass == "none" else mass
