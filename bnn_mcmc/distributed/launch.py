r"""Starting the ranks of a sharded run on one machine: :func:`launch`.

:func:`launch` starts ``nproc`` new processes (``spawn``), which meet on a
:class:`torch.distributed.TCPStore` hosted by the launching process on a port the
operating system chose (bound to port 0: no race for a "free" port).  Each joins the
process group (``gloo`` by default, with a timeout on every collective), calls
``fn(*args)`` and writes its return value to a file in a private temporary folder;
nothing travels through ``multiprocessing`` queues or managers.  When a rank raises
or dies, the others stop by themselves (their next collective fails, naming it), or
are stopped after a grace period, and :class:`LaunchError` names the rank that
failed first with its error; ranks that only stopped because of it are listed after
it.  Files a rank already wrote stay as they are (draws are written in complete
chunks and checkpoints atomically), so the run can be resumed.

Several machines, or one without this launcher: ``torchrun`` (see the README), with
:func:`~bnn_mcmc.distributed.group.init_from_env` at the start of the script.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..checks import check_count
from .group import DEFAULT_TIMEOUT, DistributedError, post_failure, set_notice_store

#: Seconds the other ranks get to stop by themselves after one failed.
GRACE_SECONDS = 10.0
#: Host of the rendezvous store of :func:`launch` (one machine).
LOCAL_HOST = "127.0.0.1"


class RankFailure(NamedTuple):
    """One rank that did not finish.

    Attributes
    ----------
    rank : int
    exitcode : int or None
        The process's exit code (negative: killed by that signal).
    error : str
        Its traceback, or how it ended.
    secondary : bool
        Whether it stopped only because another rank had failed first.
    """

    rank: int
    exitcode: int | None
    error: str
    secondary: bool


class LaunchError(DistributedError):
    """One or more ranks failed; ``failures`` lists them, the first cause first."""

    def __init__(self, failures: Sequence[RankFailure]):
        order = sorted(failures, key=lambda f: (f.secondary, f.rank))
        self.failures = order
        first = order[0]
        others = [f.rank for f in order[1:]]
        tail = f"; rank(s) {others} stopped after it" if others else ""
        super().__init__(
            f"rank {first.rank} failed{tail}:\n{first.error}",
            ranks=[f.rank for f in order if not f.secondary] or [first.rank],
        )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _worker(
    rank: int,
    nproc: int,
    port: int,
    backend: str,
    timeout: float,
    threads: int,
    fn: Callable,
    args: tuple,
    folder: str,
) -> None:
    """Body of each spawned rank: join the group, run ``fn``, write the result file."""
    os.environ.update(
        {
            "MASTER_ADDR": LOCAL_HOST,
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(nproc),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(nproc),
        }
    )
    torch.set_num_threads(threads)
    out = Path(folder)
    wait = timedelta(seconds=timeout)
    try:
        store = dist.TCPStore(LOCAL_HOST, port, is_master=False, timeout=wait)
        if backend == "nccl":
            torch.cuda.set_device(rank % max(torch.cuda.device_count(), 1))
        dist.init_process_group(
            backend, store=dist.PrefixStore("pg", store), rank=rank, world_size=nproc, timeout=wait
        )
        set_notice_store(store, nproc)
        value = fn(*args)
        _write_atomic(out / f"result_{rank}.pkl", pickle.dumps(value))
    except BaseException as err:  # reported through the folder (and the store), then exit
        post_failure(err)
        report = {
            "error": traceback.format_exc(),
            "secondary": bool(getattr(err, "secondary", False)),
        }
        _write_atomic(out / f"error_{rank}.json", json.dumps(report).encode())
        os._exit(1)  # no teardown of the group: the peers may be gone
    try:
        dist.destroy_process_group()
    finally:
        os._exit(0)


def launch(
    fn: Callable[..., Any],
    nproc: int,
    args: Sequence[Any] = (),
    *,
    backend: str = "gloo",
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float | None = None,
    threads: int = 1,
    start_method: str = "spawn",
    preload: Sequence[str] = (),
    grace: float = GRACE_SECONDS,
) -> list[Any]:
    """Run ``fn(*args)`` in ``nproc`` new local processes that form one process group.

    Parameters
    ----------
    fn
        A module-level (picklable) function; inside it the default process group
        exists (``sharded_pot_energy``, ``torch.distributed.get_rank`` work).  A script
        that calls ``launch`` must guard its own start with ``if __name__ == "__main__":``
        (``spawn`` imports it in every rank).
    nproc
        Number of ranks.
    args
        Picklable arguments, the same for every rank.
    backend
        ``'gloo'`` (CPU) or ``'nccl'`` (one CUDA device per rank).
    timeout
        Seconds a collective waits for the other ranks before it fails.
    deadline
        Seconds after which every rank still running is stopped (default: none).
    threads
        ``torch.set_num_threads`` in each rank.
    start_method
        ``'spawn'`` (a fresh interpreter per rank) or ``'forkserver'`` (ranks forked
        from one clean server process, which imports torch once per session: much
        faster when launching repeatedly, as tests do).  ``'fork'`` is refused (a
        forked torch process can deadlock in its thread pools).
    preload
        Modules the fork server imports once (``start_method='forkserver'`` only;
        it takes effect when the server starts).
    grace
        Seconds the other ranks get to stop by themselves (and report why) after one
        failed, before they are killed.

    Returns
    -------
    list
        ``fn``'s (picklable) return value of each rank, in rank order.

    Raises
    ------
    LaunchError
        Naming the rank that failed first (raised, died, or passed the deadline), with
        its traceback, and the ranks that stopped after it.
    """
    nproc = check_count("nproc", nproc, 1)
    threads = check_count("threads", threads, 1)
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl'; got {backend!r}.")
    if not callable(fn):
        raise TypeError(f"fn must be a module-level function; got {type(fn).__name__}.")
    if not float(timeout) > 0:
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}.")
    if start_method not in ("spawn", "forkserver"):
        raise ValueError(f"start_method must be 'spawn' or 'forkserver'; got {start_method!r}.")
    folder = Path(tempfile.mkdtemp(prefix="bnn_mcmc_launch_"))
    store = dist.TCPStore(
        LOCAL_HOST, 0, None, True, timedelta(seconds=float(timeout)), wait_for_workers=False
    )
    ctx = mp.get_context(start_method)
    if preload:
        ctx.set_forkserver_preload(list(preload))
    procs = [
        ctx.Process(
            target=_worker,
            args=(
                r,
                nproc,
                store.port,
                backend,
                float(timeout),
                threads,
                fn,
                tuple(args),
                str(folder),
            ),
            name=f"bnn_mcmc-rank{r}",
            daemon=False,  # a rank may start processes of its own; killed in `finally`
        )
        for r in range(nproc)
    ]
    try:
        for p in procs:
            p.start()
        failures = _watch(procs, folder, deadline, float(grace))
        if failures:
            raise LaunchError(failures)
        return [pickle.loads((folder / f"result_{r}.pkl").read_bytes()) for r in range(nproc)]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
        shutil.rmtree(folder, ignore_errors=True)
        del store


def _watch(procs, folder: Path, deadline: float | None, grace: float) -> list[RankFailure]:
    """Wait for every rank; stop the rest a grace period after the first failure."""
    ended: dict[int, RankFailure | None] = {}
    stop_at = None if deadline is None else time.monotonic() + float(deadline)
    first_failure = None
    while len(ended) < len(procs):
        now = time.monotonic()
        for r, p in enumerate(procs):
            if r in ended or p.is_alive():
                continue
            p.join()
            ended[r] = _ending(r, p.exitcode, folder)
            if ended[r] is not None and first_failure is None:
                first_failure = now
        late = stop_at is not None and now > stop_at
        if late or (first_failure is not None and now - first_failure > grace):
            why = (
                f"stopped by the launcher: the deadline of {deadline} s passed"
                if late
                else "stopped by the launcher after another rank failed"
            )
            for r, p in enumerate(procs):
                if r not in ended:
                    p.kill()
                    p.join()
                    ended[r] = RankFailure(r, p.exitcode, why, secondary=not late)
        time.sleep(0.02)
    return [f for f in ended.values() if f is not None]


def _ending(rank: int, exitcode: int | None, folder: Path) -> RankFailure | None:
    """How rank ``rank`` ended: ``None`` for success, else its failure."""
    report = folder / f"error_{rank}.json"
    if report.is_file():
        data = json.loads(report.read_text())
        return RankFailure(rank, exitcode, data["error"], data["secondary"])
    if exitcode == 0 and (folder / f"result_{rank}.pkl").is_file():
        return None
    return RankFailure(rank, exitcode, f"the process died with exit code {exitcode}", False)
