r"""One chain on every rank: output on rank 0 only, resume from rank 0's checkpoint.

Every rank builds the same sampler (same start, options and seed) on its
:class:`~bnn_mcmc.distributed.potential.ShardedPotential`; their states stay equal
bit for bit.  Rank 0 (the writer) stores the draws and writes ``output_dir``,
checkpoints and tensorboard logs; the followers store nothing
(:func:`configure_rank_output`).

Resuming after all ranks were restarted: rank 0 reads ``output_dir/checkpoint.pt``
and **broadcasts its bytes** (so the followers need no access to rank 0's disk —
several machines work as well as one); every rank decodes them with
``torch.load(weights_only=True)``; the followers drop the output part (draws on disk,
checkpoint schedule), and every rank rebuilds the sampler and finishes its
interrupted call (:func:`resume_sampler`).  The draws then equal those of an
uninterrupted run.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from ..checkpoint import CHECKPOINT_NAME, rebuild_sampler
from .checks import check_same_settings
from .group import DistributedError, communication_device, is_writer, world_size

#: ``thin`` of a follower's draw store: it keeps no draw (the chain itself is unchanged).
FOLLOWER_THIN = 2**62


def configure_rank_output(
    sampler,
    output_dir: str | os.PathLike | None = None,
    thin: int = 1,
    checkpoint_every: int | None = None,
    chunk_size: int = 256,
    group=None,
    keep_draws: bool = False,
) -> None:
    """:meth:`~bnn_mcmc.samplers.Sampler.configure_output` on rank 0; no output elsewhere.

    Followers keep no draws (their chain is the writer's), unless ``keep_draws``,
    with which they keep them in memory (thinned by ``thin``) — for tests and for
    small runs.
    """
    if is_writer(group):
        sampler.configure_output(output_dir, thin, checkpoint_every, chunk_size)
    else:
        sampler.configure_output(None, thin if keep_draws else FOLLOWER_THIN, None, chunk_size)


def broadcast_checkpoint(path: str | os.PathLike, group=None) -> dict:
    """Rank 0's checkpoint file (or ``path/checkpoint.pt``), decoded on every rank.

    Collective.  Two broadcasts: the length (``-1`` when rank 0 has no such file,
    and then every rank raises :class:`FileNotFoundError`), then the bytes.
    """
    path = Path(path)
    if path.suffix != ".pt":  # a run's folder
        path = path / CHECKPOINT_NAME
    data = b""
    if is_writer(group):
        data = path.read_bytes() if path.is_file() else b""
    if world_size(group) > 1:
        device = communication_device(group)
        size = torch.tensor([len(data) if data else -1], dtype=torch.int64, device=device)
        src = dist.get_global_rank(group, 0) if group is not None else 0
        dist.broadcast(size, src=src, group=group)
        n = int(size)
        if n > 0:
            buf = (
                torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
                if data
                else torch.empty(n, dtype=torch.uint8, device=device)
            )
            dist.broadcast(buf, src=src, group=group)
            data = buf.cpu().numpy().tobytes()
    if not data:
        raise FileNotFoundError(
            f"rank 0 has no checkpoint at {path}; was the run started with output_dir and "
            "checkpoint_every (on rank 0)?"
        )
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def follower_state(state: dict) -> dict:
    """A checkpoint of rank 0 turned into a follower's: same chain, no output, no draws."""
    out = dict(state)
    out["output"] = {
        "output_dir": None,
        "thin": FOLLOWER_THIN,
        "checkpoint_every": None,
        "chunk_size": state["output"]["chunk_size"],
    }
    dim = state["position"].shape[-1]
    for key in ("draws", "warmup_draws"):
        out[key] = {
            "seen": state[key]["seen"],
            "draws": torch.empty((0, dim), dtype=state["position"].dtype),
            "stats": {},
        }
    return out


def resume_sampler(
    output_dir: str | os.PathLike,
    pot_energy_func: Callable[[Tensor], Tensor],
    group=None,
    **kwargs,
):
    """Rebuild the chain from rank 0's checkpoint on every rank and finish its call.

    The sharded counterpart of :meth:`bnn_mcmc.samplers.Sampler.resume`: collective,
    called by every rank with its own sharded potential.  ``kwargs`` are the options
    that are not saved (``logger``, ``writer``, ``writer_tag``, ``progress``,
    ``device``); give writers to rank 0 only (:func:`~bnn_mcmc.distributed.rank_output`).
    Returns the sampler (with the draws on rank 0).
    """
    state = broadcast_checkpoint(output_dir, group)
    if not is_writer(group):
        state = follower_state(state)
    sampler = rebuild_sampler(state, pot_energy_func, **kwargs)
    sampler.continue_run()
    return sampler


def check_in_sync(tensor: Tensor, what: str = "the chain's position", group=None) -> None:
    """Raise unless ``tensor`` holds the same bits on every rank (one all-gather of a hash)."""
    digest = hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    try:
        check_same_settings({what: digest}, group=group)
    except DistributedError as err:
        raise DistributedError(
            f"{what} differs between ranks: the chains drifted apart ({err})"
        ) from err
