r"""Resuming a sharded chain after every rank was restarted.

Only rank 0 writes checkpoints (``output_dir/checkpoint.pt``), so only rank 0 reads
one: :func:`broadcast_checkpoint` sends its bytes to the other ranks (two
broadcasts: the length, then the bytes), and every rank decodes them with
``torch.load(weights_only=True)``.  The followers need no access to rank 0's disk,
so a run over several machines resumes as one on a single machine does.  The
followers drop the output part of the snapshot (draws on disk, checkpoint schedule;
:func:`follower_state`), every rank rebuilds the sampler on its own sharded
potential and finishes the interrupted call (:func:`resume_sharded`).  The draws then
equal those of an uninterrupted run.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from ..checkpoint import CHECKPOINT_NAME
from ..samplers import Sampler
from ..samplers.base import FOLLOWER_THIN
from .group import collective_failed, communication_device, is_writer, world_size


def broadcast_checkpoint(path: str | os.PathLike, group=None) -> dict:
    """Rank 0's checkpoint (a ``.pt`` file or ``path/checkpoint.pt``), decoded on every rank.

    Collective.  Raises :class:`FileNotFoundError` on every rank when rank 0 has none.
    """
    path = Path(path)
    if path.suffix != ".pt":
        path = path / CHECKPOINT_NAME
    data = path.read_bytes() if is_writer(group) and path.is_file() else b""
    if world_size(group) > 1:
        device = communication_device(group)
        src = 0 if group is None else dist.get_global_rank(group, 0)
        try:
            size = torch.tensor([len(data) or -1], dtype=torch.int64, device=device)
            dist.broadcast(size, src=src, group=group)
            n = int(size)
            if n > 0:
                if data:
                    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
                else:
                    buf = torch.empty(n, dtype=torch.uint8, device=device)
                dist.broadcast(buf, src=src, group=group)
                data = buf.cpu().numpy().tobytes()
        except RuntimeError as err:
            raise collective_failed("the broadcast of the checkpoint", err, group) from err
    if not data:
        raise FileNotFoundError(
            f"rank 0 has no checkpoint at {path}; was the run started with output_dir and "
            "checkpoint_every?"
        )
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def follower_state(state: dict) -> dict:
    """Rank 0's snapshot turned into a follower's: the same chain, no output, no draws."""
    out = dict(state)
    out["output"] = {
        "output_dir": None,
        "thin": FOLLOWER_THIN,
        "checkpoint_every": None,
        "chunk_size": state["output"]["chunk_size"],
    }
    empty = torch.empty((0, state["position"].shape[-1]), dtype=state["position"].dtype)
    for key in ("draws", "warmup_draws"):
        out[key] = {"seen": state[key]["seen"], "draws": empty, "stats": {}}
    return out


def resume_sharded(
    output_dir: str | os.PathLike,
    pot_energy_func: Callable[[Tensor], Tensor],
    group=None,
    **kwargs,
):
    """Rebuild a sharded chain from rank 0's checkpoint on every rank and finish its call.

    The counterpart of :meth:`bnn_mcmc.samplers.Sampler.resume`; collective, called
    by every rank with its own sharded potential.  ``kwargs`` are the options that are
    not saved (``logger``, ``writer``, ``writer_tag``, ``progress``, ``device``).
    Returns the sampler (with the draws on rank 0).
    """
    state = broadcast_checkpoint(output_dir, group)
    folder = None
    if is_writer(group):  # rank 0 continues in the folder given (wherever it is now)
        folder = Path(os.path.abspath(output_dir))
        if folder.is_file():
            folder = folder.parent
    else:
        state = follower_state(state)
    sampler = Sampler.from_state_dict(state, pot_energy_func, folder=folder, **kwargs)
    sampler.continue_run()
    return sampler
