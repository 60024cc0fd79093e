r"""Start-up agreement of the ranks: one all-gather of a settings hash.

The ranks of a sharded chain never exchange their decisions; they agree because
they run the same code on the same state with the same seed.  A rank started with
another seed, step size, network, feature shape or likelihood would drift away
silently, so :func:`check_same_settings` compares them once at the start: every
rank hashes a canonical JSON text of its settings (SHA-256, 4 × 64 bits), the
hashes (and a few per-rank counts, such as the shard size) travel in **one**
all-gather, and a rank whose hash differs from rank 0's is named in the error,
with the keys that differ (these are gathered only when the check fails).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from .group import DistributedError, communication_device, rank, world_size

_HASH_WORDS = 4
#: Most per-rank integers :func:`check_same_settings` gathers with the hash.
MAX_COUNTS = 8


def canonical_json(settings: Any) -> str:
    """A deterministic JSON text of ``settings`` (keys sorted; dtypes, shapes, paths as text)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, (torch.dtype, torch.device)):
            return str(obj)
        if isinstance(obj, (torch.Size, tuple, set, frozenset)):
            return sorted(obj) if isinstance(obj, (set, frozenset)) else list(obj)
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, torch.Tensor):
            return {"shape": list(obj.shape), "dtype": str(obj.dtype), "sum": float(obj.sum())}
        return repr(obj)

    return json.dumps(settings, sort_keys=True, default=default, separators=(",", ":"))


def settings_hash(settings: Any) -> list[int]:
    """SHA-256 of :func:`canonical_json` as four signed 64-bit integers."""
    digest = hashlib.sha256(canonical_json(settings).encode()).digest()
    return [int(v) for v in np.frombuffer(digest, dtype="<i8")[:_HASH_WORDS]]


class GatheredCounts(NamedTuple):
    """What :func:`check_same_settings` learnt: the per-rank counts, rank by rank."""

    counts: list[list[int]]

    def column(self, j: int) -> list[int]:
        """Count ``j`` of every rank."""
        return [row[j] for row in self.counts]


def _differing_keys(mine: Any, theirs: Any, prefix: str = "") -> list[str]:
    if isinstance(mine, Mapping) and isinstance(theirs, Mapping):
        keys = sorted(set(mine) | set(theirs), key=str)
        out: list[str] = []
        for k in keys:
            out += _differing_keys(mine.get(k), theirs.get(k), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".") or "(value)"] if mine != theirs else []


def check_same_settings(settings: Any, counts: Sequence[int] = (), group=None) -> GatheredCounts:
    """Check that every rank of ``group`` has the same ``settings``; gather ``counts``.

    Parameters
    ----------
    settings
        Anything JSON-able (dicts, lists, numbers, strings; dtypes and shapes are
        written as text): seeds, sampler options, feature shapes, the run file...
    counts
        Integers that may differ between ranks (e.g. the shard size); they travel in
        the same all-gather and come back for every rank.
    group
        The process group (default: the default group).  Without a process group
        (a single process) nothing is sent.

    Returns
    -------
    GatheredCounts
        ``counts`` of every rank, in rank order.

    Raises
    ------
    DistributedError
        Naming the ranks whose settings differ from rank 0's, and the keys that
        differ.
    """
    counts = [int(c) for c in counts]
    if world_size(group) == 1:
        return GatheredCounts([counts])
    if len(counts) > MAX_COUNTS:
        raise ValueError(f"at most {MAX_COUNTS} counts travel with the hash; got {len(counts)}.")
    device = communication_device(group)
    # fixed length (hash, number of counts, counts padded): one all-gather, whatever the caller
    payload = settings_hash(settings) + [len(counts)] + counts + [0] * (MAX_COUNTS - len(counts))
    mine = torch.tensor(payload, dtype=torch.int64, device=device)
    rows = [torch.empty_like(mine) for _ in range(world_size(group))]
    dist.all_gather(rows, mine, group=group)
    table = [[int(v) for v in r.cpu()] for r in rows]
    head = _HASH_WORDS + 1  # the hash and the number of counts must agree
    bad = [r for r, row in enumerate(table) if row[:head] != table[0][:head]]
    if bad:
        texts: list[Any] = [None] * world_size(group)
        dist.all_gather_object(texts, json.loads(canonical_json(settings)), group=group)
        details = "; ".join(
            f"rank {r}: {', '.join(_differing_keys(texts[0], texts[r])) or 'hash only'}"
            for r in bad
        )
        raise DistributedError(
            f"rank(s) {bad} were started with other settings than rank 0 (differing: "
            f"{details}); start every rank with the same seed, options and data layout "
            f"(this is rank {rank(group)})."
        )
    return GatheredCounts([row[head : head + len(counts)] for row in table])


def describe(obj: Any) -> Any:
    """A rank-independent description of an option object for :func:`settings_hash`.

    ``None`` and plain values stay; objects become their class name with their plain
    attributes (no memory addresses, which differ between processes).
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if callable(obj) and not hasattr(obj, "__dict__") or hasattr(obj, "__qualname__"):
        return {"callable": getattr(obj, "__qualname__", type(obj).__qualname__)}
    attrs = {}
    for key, value in sorted(vars(obj).items()) if hasattr(obj, "__dict__") else ():
        if isinstance(value, (bool, int, float, str, type(None))):
            attrs[key] = value
        elif isinstance(value, torch.Tensor):
            attrs[key] = {"shape": list(value.shape), "dtype": str(value.dtype)}
    return {"type": type(obj).__qualname__, **attrs}


def report_failures(failure: BaseException | None, what: str, group=None) -> None:
    """Raise on every rank if ``failure`` is set on any: gather who failed, name them.

    Collective: every rank of ``group`` must call it, with its own exception or
    ``None``.  The rank that failed raises a :class:`DistributedError` chained to its
    exception; the others raise one naming it.
    """
    size = world_size(group)
    flag = torch.tensor([0 if failure is None else 1], device=communication_device(group))
    if size > 1:
        dist.all_reduce(flag, group=group)
    if int(flag) == 0:
        return
    mine = None if failure is None else f"{type(failure).__name__}: {failure}"
    reports: list[Any] = [mine]
    if size > 1:
        reports = [None] * size
        dist.all_gather_object(reports, mine, group=group)
    failed = {r: text for r, text in enumerate(reports) if text is not None}
    text = "; ".join(f"rank {r}: {t}" for r, t in failed.items())
    message = f"{what} failed on rank(s) {sorted(failed)} ({text})"
    if failure is not None:
        raise DistributedError(f"{message}; this is rank {rank(group)}") from failure
    raise DistributedError(f"{message}; rank {rank(group)} stops with them")
