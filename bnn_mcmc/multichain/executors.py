"""Running chain tasks: in this process, in loky worker processes, or on a Dask cluster.

A task carries a chain's complete state (:meth:`bnn_mcmc.samplers.Sampler.state_dict`:
tensors on CPU, numbers and strings — never autograd graphs), its potential or
potential factory, and its device; the work to do (a warmup, a number of
transitions) is recorded in the state, and the worker finishes it
(:meth:`bnn_mcmc.samplers.Sampler.continue_run`).  The worker rebuilds the
chain, runs it and sends the new state back, or the state reached before an
exception together with the formatted error, so chains that finished keep
their draws and a failed chain is named.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..options import Backend, choices
from ..samplers import Sampler
from .potentials import PotentialSpec, build_potential

BACKENDS = choices(Backend)


class ChainError(RuntimeError):
    """One or more chains failed; ``errors`` maps each chain index to its error text."""

    def __init__(self, errors: dict[int, str]):
        self.errors = dict(sorted(errors.items()))
        lines = [f"chain {i} failed:\n{text}" for i, text in self.errors.items()]
        super().__init__(
            f"{len(errors)} chain(s) failed ({', '.join(map(str, self.errors))}); the other "
            "chains kept their draws.\n" + "\n".join(lines)
        )


@dataclass
class ChainTask:
    """What a worker needs to run one chain (all of it picklable)."""

    index: int
    state: dict
    potential: PotentialSpec
    device: str
    options: dict = field(default_factory=dict)
    writer_dir: str | None = None
    threads: int | None = None
    remote: bool = False


def worker_logger(logger: logging.Logger, index: int) -> logging.Logger:
    """The chain's logger in a worker process.

    A :class:`logging.Logger` travels by name only: its handlers and level
    stay in the parent.  A logger with no handlers in the worker gets a
    console handler naming the chain (and level INFO when it has none), so
    its messages are not silently dropped.
    """
    if not logger.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"%(asctime)s chain {index}: %(message)s"))
        logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    return logger


def run_chain_task(task: ChainTask) -> tuple[int, dict, str | None]:
    """Rebuild the chain, finish its recorded work, return ``(index, state, error or None)``."""
    if task.threads is not None:
        torch.set_num_threads(task.threads)
    device = torch.device(task.device)
    writer = None
    options = dict(task.options)
    position = options.pop("progress_position", None)
    label = options.pop("progress_label", None)
    if task.remote and options.get("logger") is not None:
        options["logger"] = worker_logger(options["logger"], task.index)
    if task.writer_dir is not None:
        from tensorboardX import SummaryWriter

        writer = options["writer"] = SummaryWriter(task.writer_dir)
    try:
        sampler = Sampler.from_state_dict(
            task.state, build_potential(task.potential, device), device=device, **options
        )
    except Exception:
        return task.index, task.state, traceback.format_exc()
    sampler.progress_position, sampler.progress_label = position, label
    error = None
    try:
        sampler.continue_run()
    except Exception:
        error = traceback.format_exc()
    finally:
        if writer is not None:
            writer.close()
    return task.index, sampler.state_dict(), error


def threads_per_worker(num_parallel: int) -> int:
    """``torch`` threads per worker so that ``num_parallel`` workers share the cores."""
    return max(1, (os.cpu_count() or 1) // num_parallel)


def run_tasks(
    tasks: Sequence[ChainTask], backend: str, num_parallel: int, client=None
) -> tuple[dict[int, dict], dict[int, str]]:
    """Run ``tasks``; return the new states and the errors, by chain index.

    A worker process that dies takes its pending tasks with it: the chains
    whose results did not come back are reported as failed (their state is
    the one before the call).
    """
    if backend == "sequential":
        results = [run_chain_task(t) for t in tasks]
        return _split(results, tasks, None)
    from joblib import Parallel, delayed, parallel_config

    threads = threads_per_worker(num_parallel)
    for t in tasks:
        t.threads, t.remote = threads, True
    config = {"backend": "loky"} if backend == "joblib" else {"backend": "dask", "client": client}
    results, crash = [], None
    try:
        with parallel_config(**config):
            for r in Parallel(n_jobs=num_parallel, return_as="generator_unordered")(
                delayed(run_chain_task)(t) for t in tasks
            ):
                results.append(r)
    except Exception:
        crash = traceback.format_exc()
    return _split(results, tasks, crash)


def _split(results, tasks, crash: str | None):
    states, errors = {}, {}
    for index, state, error in results:
        states[index] = state
        if error is not None:
            errors[index] = error
    if crash is not None:
        for t in tasks:
            if t.index not in states:
                errors[t.index] = f"the worker running it crashed or was cancelled:\n{crash}"
    return states, errors
