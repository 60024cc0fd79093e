r"""Resuming a sharded chain, or a sharded run of several chains, after every rank was restarted.

Only rank 0 writes checkpoints (``output_dir/checkpoint.pt``), so only rank 0 reads
one: :func:`broadcast_bytes` sends its bytes to the other ranks (two broadcasts: the
length, then the bytes), and every rank decodes them with
``torch.load(weights_only=True)``.  The followers need no access to rank 0's disk,
so a run over several machines resumes as one on a single machine does.  The
followers drop the output part of the snapshot (draws on disk, checkpoint schedule;
:func:`follower_state`), every rank rebuilds the sampler on its own sharded
potential and finishes the interrupted call (:func:`resume_sharded`).  The draws then
equal those of an uninterrupted run.

A :class:`~bnn_mcmc.multichain.MultiChainHMC` run with the ``'sequential'`` backend
on a sharded potential (what ``bnn-mcmc sample --nproc N`` runs) resumes with
:func:`resume_sharded_run`: rank 0 sends the call journal (``multichain.json``) and
every chain's checkpoint in one payload, then resumes the run folder with
:meth:`MultiChainHMC.resume <bnn_mcmc.multichain.MultiChainHMC.resume>`; the other
ranks rebuild the same chains (:class:`FollowerChains`) and make the same calls in
the same order — the order of the collectives is what keeps the ranks together.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from ..checkpoint import CHECKPOINT_NAME, load_checkpoint
from ..multichain.runlog import record_call
from ..samplers import Sampler
from ..samplers.base import FOLLOWER_THIN
from .group import collective_failed, communication_device, is_writer, world_size


def broadcast_bytes(data: bytes, group=None, what: str = "the broadcast") -> bytes:
    """Rank 0's ``data`` on every rank (the other ranks' ``data`` is ignored); collective.

    Two broadcasts: the length (``-1`` for none, returned as ``b""``), then the bytes.
    """
    if world_size(group) == 1:
        return data
    device = communication_device(group)
    src = 0 if group is None else dist.get_global_rank(group, 0)
    try:
        size = torch.tensor([len(data) or -1], dtype=torch.int64, device=device)
        dist.broadcast(size, src=src, group=group)
        n = int(size)
        if n <= 0:
            return b""
        if is_writer(group):
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
        else:
            buf = torch.empty(n, dtype=torch.uint8, device=device)
        dist.broadcast(buf, src=src, group=group)
    except RuntimeError as err:
        raise collective_failed(what, err, group) from err
    return buf.cpu().numpy().tobytes()


def broadcast_checkpoint(path: str | os.PathLike, group=None) -> dict:
    """Rank 0's checkpoint (a ``.pt`` file or ``path/checkpoint.pt``), decoded on every rank.

    Collective.  Raises :class:`FileNotFoundError` on every rank when rank 0 has none.
    """
    path = Path(path)
    if path.suffix != ".pt":
        path = path / CHECKPOINT_NAME
    data = path.read_bytes() if is_writer(group) and path.is_file() else b""
    data = broadcast_bytes(data, group, "the broadcast of the checkpoint")
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


# ------------------------------------------------------------ runs of several chains


class FollowerChains:
    """The chains of a sequential multi-chain run as a follower rank holds them.

    A follower keeps no draws and writes nothing; it must only evaluate the sharded
    potential at the same positions, in the same order, as rank 0's
    :class:`~bnn_mcmc.multichain.MultiChainHMC` (``backend='sequential'``) does: every
    call records its work in every chain first (a warmup's step-size search evaluates
    the potential) and then runs the chains one after the other.

    Parameters
    ----------
    chains
        The follower's samplers, in chain order.
    """

    def __init__(self, chains: list[Sampler]):
        self.chains = list(chains)

    def _call(self, call: dict) -> None:
        for chain in self.chains:
            record_call(chain, call)
        self.continue_runs()

    def continue_runs(self) -> None:
        """Finish every chain's recorded call, one chain after the other."""
        for chain in self.chains:
            chain.continue_run()

    def warmup(
        self,
        num_steps: int,
        target_accept: float | None = None,
        adapt_mass: str | None = "diag",
        adapt_step_size: bool = True,
    ) -> None:
        """As :meth:`bnn_mcmc.multichain.MultiChainHMC.warmup`."""
        for chain in self.chains:
            chain.check_warmup_options(num_steps, target_accept, adapt_mass)
        self._call(
            {
                "kind": "warmup",
                "num_steps": num_steps,
                "target_accept": target_accept,
                "adapt_mass": adapt_mass,
                "adapt_step_size": adapt_step_size,
            }
        )

    def simulate_chains(self, num_states: int) -> None:
        """As :meth:`bnn_mcmc.multichain.MultiChainHMC.simulate_chains`."""
        self._call({"kind": "sample", "num_states": num_states})


class ResumedRun(NamedTuple):
    """What :func:`resume_sharded_run` returns on every rank.

    Attributes
    ----------
    run : MultiChainHMC or FollowerChains
        Rank 0's run (writing into the folder) or a follower's chains; both offer
        ``chains``, ``warmup(num_steps, target_accept, adapt_mass)`` and
        ``simulate_chains(num_states)`` for the calls that follow.
    calls : list of dict
        The run's call journal (``kind`` ``'warmup'`` or ``'sample'`` and its
        arguments), the same on every rank: which calls the run has made.
    """

    run: object
    calls: list[dict]


def resume_sharded_run(
    output_dir: str | os.PathLike,
    pot_energy_func: Callable[[Tensor], Tensor],
    group=None,
    progress: bool = False,
) -> ResumedRun:
    """Resume a sequential multi-chain run on a sharded potential; collective.

    Rank 0 reads ``output_dir`` (a :class:`~bnn_mcmc.multichain.MultiChainHMC` run
    folder) and sends its call journal and every chain's checkpoint to the other
    ranks in one payload; then rank 0 resumes the folder with
    ``MultiChainHMC.resume(output_dir, pot_energy_func, backend='sequential')``
    (which checks it and finishes every chain's interrupted call), and every other
    rank rebuilds the same chains from the snapshots, without output, and makes the
    same evaluations in the same order.  The draws equal those of the uninterrupted
    run bit for bit.

    Raises
    ------
    FileNotFoundError
        On every rank, when rank 0 finds no run in ``output_dir``.
    DistributedError
        When a rank fails or is lost meanwhile (e.g. rank 0 finds the folder damaged).
    """
    from ..multichain import CHAIN_TYPES, MultiChainHMC
    from ..multichain.runlog import chain_dir, read_meta

    folder = Path(os.path.abspath(output_dir))
    payload = b""
    if is_writer(group):
        meta = read_meta(folder, CHAIN_TYPES)
        states = [load_checkpoint(chain_dir(folder, i)) for i in range(meta.num_chains)]
        buffer = io.BytesIO()
        torch.save({"calls": list(meta.calls), "states": states}, buffer)
        payload = buffer.getvalue()
    payload = broadcast_bytes(payload, group, "the broadcast of the run's checkpoints")
    if not payload:  # pragma: no cover - rank 0 raised instead of sending nothing
        raise FileNotFoundError(f"rank 0 found no run in {folder}.")
    content = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    calls = list(content["calls"])
    if is_writer(group):
        run = MultiChainHMC.resume(folder, pot_energy_func, backend="sequential", progress=progress)
        return ResumedRun(run, calls)
    chains = []
    for i, state in enumerate(content["states"]):
        chain = Sampler.from_state_dict(
            follower_state(state), pot_energy_func, writer_tag=f"chain{i}/", progress=progress
        )
        chain.progress_position, chain.progress_label = i, f"chain{i}/"
        chains.append(chain)
    if calls:  # as MultiChainHMC.resume: chains killed before recording the last call do now
        last = calls[-1]
        for i in last["chains"]:
            if chains[i].run_call < len(calls):
                record_call(chains[i], last)
                chains[i].run_call = len(calls)
    followers = FollowerChains(chains)
    followers.continue_runs()
    return ResumedRun(followers, calls)
