r"""The process group of a sharded chain: ranks, the writer, joining, and failure notices.

Every process (a *rank*) of a sharded run holds the whole chain and evaluates the
potential on its own shard of the data; the ranks meet once per evaluation in one
all-reduce (:mod:`bnn_mcmc.distributed.potential`).  Rank 0, the *writer*, stores the
draws and writes every file; the other ranks (*followers*) run the same sampler with
the same seed and write nothing.

A process group made here carries a ``timeout``: a rank that hangs makes the
collectives of the others fail after it instead of waiting for ever.  A rank that
stops with an exception posts a *failure notice* (its rank and the error) on the
rendezvous store before it exits, so the ranks whose all-reduce then fails can name
it (:func:`failed_ranks`).
"""

from __future__ import annotations

import os
import sys
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist

#: Seconds a collective waits for the other ranks before it fails.
DEFAULT_TIMEOUT = 120.0

#: Prefix of the failure notices on the rendezvous store.
NOTICE_PREFIX = "bnn_mcmc/failed/"


class DistributedError(RuntimeError):
    """A sharded run could not go on: a rank failed, died, hung or disagreed.

    Attributes
    ----------
    ranks : list of int
        The ranks named as the cause (empty when unknown).
    secondary : bool
        Whether this rank stops only because another rank failed first.
    """

    def __init__(self, message: str, ranks: list[int] | None = None, secondary: bool = False):
        super().__init__(message)
        self.ranks = list(ranks or [])
        self.secondary = bool(secondary)


class _Notices:
    """Holder of the store on which failure notices are posted (one per process)."""

    store: dist.Store | None = None
    world_size: int = 1


def set_notice_store(store: dist.Store | None, world_size: int) -> None:
    """Use ``store`` (shared by all ranks) for failure notices; installs the exit hook.

    Called by :func:`bnn_mcmc.distributed.launch` and :func:`init_from_env`.  The hook
    (:data:`sys.excepthook`) posts the notice of an exception that ends this process.
    """
    _Notices.store = store
    _Notices.world_size = int(world_size)
    if store is not None and sys.excepthook is not _post_and_report:
        _post_and_report.previous = sys.excepthook
        sys.excepthook = _post_and_report


def post_failure(error: BaseException) -> None:
    """Post this rank's failure notice (the error text), if a notice store is set."""
    if _Notices.store is None or not dist.is_initialized():
        return
    text = "".join(traceback.format_exception_only(type(error), error)).strip()
    try:
        _Notices.store.set(f"{NOTICE_PREFIX}{dist.get_rank()}", text)
    except Exception:  # the store may be gone with its host; the launcher still knows
        pass


def _post_and_report(kind, value, tb) -> None:
    post_failure(value)
    _post_and_report.previous(kind, value, tb)


_post_and_report.previous = sys.excepthook


def failed_ranks() -> dict[int, str]:
    """The ranks that posted a failure notice, with their error text (empty if unknown)."""
    store = _Notices.store
    if store is None:
        return {}
    found = {}
    for r in range(_Notices.world_size):
        key = f"{NOTICE_PREFIX}{r}"
        try:
            if store.check([key]):
                found[r] = store.get(key).decode(errors="replace")
        except Exception:  # the store's host (rank 0 or the launcher) may be gone
            break
    return found


def default_backend() -> str:
    """``'nccl'`` when CUDA is available (and built with NCCL), else ``'gloo'``."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def init_from_env(backend: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Join the process group described by the ``env://`` variables (``torchrun``'s).

    ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
    this calls :func:`torch.distributed.init_process_group` with them and ``timeout``
    (seconds) on every collective.  With ``nccl``, rank ``LOCAL_RANK`` selects its
    CUDA device.  Does nothing when a default group exists (e.g. made by
    :func:`~bnn_mcmc.distributed.launch`).

    Raises
    ------
    DistributedError
        If the variables are missing (the script was not started by a launcher).
    """
    if dist.is_initialized():
        return
    if not float(timeout) > 0:
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}.")
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise DistributedError(
            f"environment variables {missing} are not set: start the script with "
            "`torchrun --nproc-per-node N script.py` or bnn_mcmc.distributed.launch."
        )
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    wait = timedelta(seconds=float(timeout))
    dist.init_process_group(backend, init_method="env://", timeout=wait)
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun's agent hosts the store at MASTER_ADDR:MASTER_PORT; join it as a client
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            is_master=False,
            timeout=wait,
        )
        set_notice_store(store, dist.get_world_size())


def rank(group=None) -> int:
    """This process's rank in ``group`` (0 without a process group)."""
    return dist.get_rank(group) if dist.is_initialized() else 0


def world_size(group=None) -> int:
    """Number of ranks in ``group`` (1 without a process group)."""
    return dist.get_world_size(group) if dist.is_initialized() else 1


def is_writer(group=None) -> bool:
    """Whether this rank stores draws and writes output (rank 0, or no process group)."""
    return rank(group) == 0


def communication_device(group=None) -> torch.device:
    """Where reduced buffers live: the CPU for ``gloo``, this rank's CUDA device for ``nccl``."""
    if dist.is_initialized() and dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def collective_failed(what: str, err: BaseException, group=None) -> DistributedError:
    """The error of a failed collective: names the ranks that posted a failure notice."""
    notices = {r: t for r, t in failed_ranks().items() if r != rank(group)}
    if notices:
        named = "; ".join(f"rank {r}: {t}" for r, t in sorted(notices.items()))
        cause = f"rank(s) {sorted(notices)} failed ({named})"
    else:
        cause = (
            "another rank stopped, died or did not answer within the process group's timeout "
            "(the launcher's report names it)"
        )
    return DistributedError(
        f"{what} failed on rank {rank(group)}: {cause}. [{type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}]",
        ranks=sorted(notices),
        secondary=True,
    )
