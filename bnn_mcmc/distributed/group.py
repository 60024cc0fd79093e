r"""The process group of a sharded chain: who am I, who writes, how to join.

Every process (a *rank*) of a sharded run holds the same chain and evaluates the
potential on its own shard of the data; the ranks meet once per evaluation in an
all-reduce (:mod:`bnn_mcmc.distributed.potential`).  Only rank 0 — the *writer* —
stores draws and writes files; the others (*followers*) run the same sampler with
the same seed and keep nothing.

Backends: ``gloo`` on CPU, ``nccl`` when every rank has a CUDA device
(:func:`default_backend`).  A process group made here carries a timeout, so a rank
that hangs makes the others fail after ``timeout`` instead of waiting forever.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

#: Seconds a collective may wait for the other ranks before it fails.
DEFAULT_TIMEOUT = 300.0


class DistributedError(RuntimeError):
    """A sharded evaluation could not complete: a rank failed, died or disagreed."""


def default_backend() -> str:
    """``'nccl'`` when CUDA is available (and built with NCCL), else ``'gloo'``."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def init_from_env(backend: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Join the process group described by the ``env://`` variables (torchrun's).

    ``torchrun`` (and :func:`bnn_mcmc.distributed.launch.launch`) set ``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; this calls
    :func:`torch.distributed.init_process_group` with them and a ``timeout`` on every
    collective.  With ``nccl``, rank ``LOCAL_RANK`` selects its CUDA device first.
    Does nothing if a default group already exists.

    Raises
    ------
    DistributedError
        If the variables are missing (the script was not started by a launcher).
    """
    if dist.is_initialized():
        return
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise DistributedError(
            f"environment variables {missing} are not set: start the script with "
            "`torchrun --nproc-per-node N script.py` or bnn_mcmc.distributed.launch."
        )
    if not float(timeout) > 0:
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}.")
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timedelta(seconds=float(timeout)))


def rank(group=None) -> int:
    """This process's rank in ``group`` (0 without a process group)."""
    return dist.get_rank(group) if dist.is_initialized() else 0


def world_size(group=None) -> int:
    """Number of ranks in ``group`` (1 without a process group)."""
    return dist.get_world_size(group) if dist.is_initialized() else 1


def is_writer(group=None) -> bool:
    """Whether this rank stores draws and writes output (rank 0, or no process group)."""
    return rank(group) == 0


def rank_output(output_dir: str | os.PathLike | None, group=None) -> Path | None:
    """``output_dir`` on the writer, ``None`` on the other ranks.

    Pass it wherever a sampler takes an output folder or a tensorboard writer
    directory, so only rank 0 writes::

        sampler.configure_output(rank_output("runs/a"), checkpoint_every=100)
    """
    if output_dir is None or not is_writer(group):
        return None
    return Path(output_dir)


def communication_device(group=None) -> torch.device:
    """Where the all-reduce buffer lives: CPU for ``gloo``, this rank's CUDA device for ``nccl``."""
    if dist.is_initialized() and dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
