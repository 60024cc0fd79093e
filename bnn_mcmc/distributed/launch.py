r"""Starting the ranks of a sharded run: local processes here, or ``torchrun``.

On one machine, :func:`launch` starts ``nproc`` processes (``spawn``), each of which
joins a process group (``gloo`` by default, with a timeout on every collective),
calls ``fn(*args)`` and sends its return value back.  When a rank raises or dies,
the launcher gives the others a few seconds to stop on their own (their next
all-reduce fails at once when a peer's connection closes), then terminates them,
and raises a :class:`LaunchError` naming the rank that failed first, with its
traceback.  Files a rank had already written stay as they were (the samplers write
draws in complete chunks and checkpoints atomically), so the run can be resumed.

The usual launcher for several machines is ``torchrun``; a script needs
:func:`~bnn_mcmc.distributed.group.init_from_env` at its start::

    # one machine, 4 processes
    torchrun --standalone --nproc-per-node 4 script.py
    # two machines with 8 GPUs each, run on both (rank 0's host as the rendezvous)
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \
        --rdzv-endpoint HOST0:29400 --rdzv-id run42 script.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

from ..checks import check_count
from .group import DEFAULT_TIMEOUT, DistributedError, init_from_env
from .potential import PEER_LOST

#: Seconds the other ranks get to stop by themselves after one failed.
GRACE_SECONDS = 10.0
#: Seconds a dead rank's report may take to arrive.
REPORT_SECONDS = 2.0


class RankFailure(NamedTuple):
    """One rank that did not finish: its rank, exit code (if it died) and error text."""

    rank: int
    exitcode: int | None
    error: str

    @property
    def secondary(self) -> bool:
        """Whether it stopped only because another rank had failed first."""
        return (
            PEER_LOST in self.error
            or "stops with them" in self.error
            or ("terminated by the launcher" in self.error)
        )


class LaunchError(DistributedError):
    """One or more ranks failed; ``failures`` lists them, the first cause first."""

    def __init__(self, failures: Sequence[RankFailure]):
        order = sorted(failures, key=lambda f: (f.secondary, f.rank))
        self.failures = order
        first = order[0]
        others = [f.rank for f in order[1:]]
        tail = f"; rank(s) {others} stopped after it" if others else ""
        super().__init__(f"rank {first.rank} failed{tail}:\n{first.error}")


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (for ``MASTER_PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int,
    nproc: int,
    port: int,
    backend: str,
    timeout: float,
    threads: int,
    fn: Callable,
    args: tuple,
    results: mp.Queue,
) -> None:
    """Body of each spawned rank: join the group, run ``fn``, send back the result."""
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(nproc),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(nproc),
        }
    )
    torch.set_num_threads(threads)
    try:
        init_from_env(backend, timeout)
        value = fn(*args)
    except BaseException:  # sent to the launcher, which names this rank
        results.put((rank, False, traceback.format_exc()))
        results.close()
        results.join_thread()
        os._exit(1)  # skip the group's teardown: the peers may be gone
    results.put((rank, True, value))
    results.close()
    results.join_thread()
    dist.destroy_process_group()


def launch(
    fn: Callable[..., Any],
    nproc: int,
    args: Sequence[Any] = (),
    *,
    backend: str = "gloo",
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float | None = None,
    threads: int = 1,
) -> list[Any]:
    """Run ``fn(*args)`` in ``nproc`` new local processes that form one process group.

    Parameters
    ----------
    fn
        A module-level (picklable) function; inside it the process group exists
        (:func:`~bnn_mcmc.distributed.group.rank`, :func:`~bnn_mcmc.sharded_pot_energy`).
    nproc
        Number of ranks.
    args
        Picklable arguments, the same for every rank.
    backend
        ``'gloo'`` (CPU) or ``'nccl'`` (one CUDA device per rank, by local rank).
    timeout
        Seconds a collective waits for the other ranks before it fails.
    deadline
        Seconds after which the launcher stops every rank (default: none).
    threads
        ``torch.set_num_threads`` in each rank.

    Returns
    -------
    list
        ``fn``'s return value on each rank, in rank order.

    Raises
    ------
    LaunchError
        Naming the rank that failed (raised, or died with an exit code or signal)
        first, with its traceback, and the ranks that stopped after it.
    """
    nproc = check_count("nproc", nproc, 1)
    threads = check_count("threads", threads, 1)
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl'; got {backend!r}.")
    if not callable(fn):
        raise TypeError(f"fn must be a module-level function; got {type(fn).__name__}.")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_worker,
            args=(r, nproc, port, backend, float(timeout), threads, fn, tuple(args), results),
            name=f"bnn_mcmc-rank{r}",
        )
        for r in range(nproc)
    ]
    for p in procs:
        p.start()
    values: dict[int, Any] = {}
    failures: dict[int, RankFailure] = {}
    stop_at = None if deadline is None else time.monotonic() + float(deadline)
    first_failure_at: float | None = None
    dead_since: dict[int, float] = {}
    try:
        while len(values) + len(failures) < nproc:
            try:
                r, ok, payload = results.get(timeout=0.1)
                if ok:
                    values[r] = payload
                else:
                    failures[r] = RankFailure(r, None, payload)
            except queue.Empty:
                pass
            now = time.monotonic()
            for r, p in enumerate(procs):
                if r in values or r in failures or p.is_alive():
                    continue
                # dead: its report may still be in the queue; without one after a moment it
                # died unreported (killed, out of memory, os._exit, a crash)
                dead_since.setdefault(r, now)
                if now - dead_since[r] > REPORT_SECONDS:
                    failures[r] = RankFailure(
                        r, p.exitcode, f"the process died with exit code {p.exitcode}"
                    )
            if failures and first_failure_at is None:
                first_failure_at = now
            if first_failure_at is not None and now - first_failure_at > GRACE_SECONDS:
                _terminate(procs, values, failures, "terminated by the launcher after a failure")
            if stop_at is not None and now > stop_at:
                _terminate(
                    procs,
                    values,
                    failures,
                    f"terminated by the launcher: the deadline of {deadline} s passed",
                    secondary=False,
                )
    finally:
        for p in procs:
            p.join(timeout=GRACE_SECONDS)
            if p.is_alive():
                p.kill()
                p.join()
    if failures:
        raise LaunchError(list(failures.values()))
    return [values[r] for r in range(nproc)]


def _terminate(procs, values, failures, why: str, secondary: bool = True) -> None:
    for r, p in enumerate(procs):
        if r in values or r in failures:
            continue
        p.kill()
        p.join()
        text = why if secondary else why.replace("terminated by the launcher", "stopped")
        failures[r] = RankFailure(r, p.exitcode, text)
