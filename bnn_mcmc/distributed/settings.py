r"""Start-up agreement of the ranks: one all-gather of a settings hash.

The ranks of a sharded chain never exchange their decisions: they agree because they
run the same code on the same state with the same seed.  A rank started with another
seed, step size, start, network or feature shape would drift away silently (or make
the all-reduce fail on buffers of other lengths), so :func:`check_same_settings`
compares them once, before the first evaluation.  Each rank hashes a canonical JSON
text of its settings with SHA-256 (two 64-bit words per part), and the hashes of the
two parts — the *data layout* (feature shapes and dtypes of the shard) and the *chain
settings* (seed, sampler options, dimension, dtype, start) — travel with the shard's
number of points in **one** all-gather.  Only when a hash differs from rank 0's are
the settings themselves gathered, to name the ranks and the keys that differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from .group import DistributedError, collective_failed, communication_device, rank, world_size

_WORDS = 2  # 64-bit words of each part's hash


def canonical_json(settings: Any) -> str:
    """A deterministic JSON text of ``settings`` (keys sorted; tensors by shape, dtype, hash)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, (torch.dtype, torch.device)):
            return str(obj)
        if isinstance(obj, torch.Tensor):
            data = obj.detach().cpu().contiguous()
            digest = hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()
            return {"shape": list(obj.shape), "dtype": str(obj.dtype), "sha256": digest[:16]}
        if isinstance(obj, (tuple, torch.Size)):
            return list(obj)
        if isinstance(obj, np.generic):
            return obj.item()
        return f"<{type(obj).__qualname__}>"

    return json.dumps(settings, sort_keys=True, default=default, separators=(",", ":"))


def settings_hash(settings: Any) -> list[int]:
    """SHA-256 of :func:`canonical_json` as two signed 64-bit integers."""
    digest = hashlib.sha256(canonical_json(settings).encode()).digest()
    return [int(v) for v in np.frombuffer(digest, dtype="<i8")[:_WORDS]]


class Agreement(NamedTuple):
    """What :func:`check_same_settings` learnt.

    Attributes
    ----------
    num_points : list of int
        The number of points of each rank's shard, in rank order.
    failed_ranks : list of int
        The ranks that said they failed to build their part.
    """

    num_points: list[int]
    failed_ranks: list[int]


def _differing_keys(mine: Any, theirs: Any, prefix: str = "") -> list[str]:
    if isinstance(mine, Mapping) and isinstance(theirs, Mapping):
        out: list[str] = []
        for k in sorted(set(mine) | set(theirs), key=str):
            out += _differing_keys(mine.get(k), theirs.get(k), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".") or "(value)"] if mine != theirs else []


def check_same_settings(
    layout: Any, settings: Any, num_points: int = 0, failed: bool = False, group=None
) -> Agreement:
    """Check that every rank has the same data ``layout`` and chain ``settings``.

    Collective: every rank of ``group`` calls it once, at the start.

    Parameters
    ----------
    layout
        The shard's feature shapes and dtypes (anything JSON-able).
    settings
        Seed, sampler options, dimension, dtype, start... (anything JSON-able;
        tensors enter by shape, dtype and a hash of their bytes).
    num_points
        This rank's number of data points (may differ between ranks).
    failed
        Whether this rank failed to build its part (reported in ``failed_ranks``).
    group
        The process group (default: the default group; without one nothing is sent).

    Returns
    -------
    Agreement
        The number of points of every rank and the ranks that failed, in rank order.

    Raises
    ------
    DistributedError
        Naming the ranks whose layout or settings differ from rank 0's and the keys
        that differ (identical on every rank).
    """
    size = world_size(group)
    if size == 1:
        return Agreement([int(num_points)], [0] if failed else [])
    payload = settings_hash(layout) + settings_hash(settings) + [int(num_points), int(failed)]
    mine = torch.tensor(payload, dtype=torch.int64, device=communication_device(group))
    rows = [torch.empty_like(mine) for _ in range(size)]
    try:
        dist.all_gather(rows, mine, group=group)
    except RuntimeError as err:
        raise collective_failed("the start-up check of the settings", err, group) from err
    table = [r.cpu().tolist() for r in rows]
    bad_layout = [r for r in range(size) if table[r][:_WORDS] != table[0][:_WORDS]]
    bad_settings = [
        r for r in range(size) if table[r][_WORDS : 2 * _WORDS] != table[0][_WORDS : 2 * _WORDS]
    ]
    if bad_layout or bad_settings:
        texts: list[Any] = [None] * size
        plain = json.loads(canonical_json({"layout": layout, "settings": settings}))
        dist.all_gather_object(texts, plain, group=group)
        if bad_layout:
            shapes = "; ".join(f"rank {r}: {texts[r]['layout']}" for r in [0, *bad_layout])
            raise DistributedError(
                f"the shards of rank(s) {bad_layout} have other feature shapes or dtypes than "
                f"rank 0's ({shapes}); give every rank inputs and targets of the same shape "
                "after the first (data-point) axis and the same dtype (this is rank "
                f"{rank(group)}).",
                ranks=bad_layout,
            )
        details = "; ".join(
            f"rank {r}: {', '.join(_differing_keys(texts[0]['settings'], texts[r]['settings']))}"
            for r in bad_settings
        )
        raise DistributedError(
            f"rank(s) {bad_settings} were started with other settings than rank 0 (differing: "
            f"{details}); start every rank with the same seed, sampler options and initial "
            f"position (this is rank {rank(group)}).",
            ranks=bad_settings,
        )
    return Agreement([row[-2] for row in table], [r for r in range(size) if table[r][-1]])


def describe(obj: Any) -> Any:
    """A rank-independent description of an option object (for :func:`settings_hash`).

    Plain values and tensors stay; other objects become their class name with their
    plain and tensor attributes (never a memory address, which differs between
    processes).
    """
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [describe(v) for v in obj]
    attrs = {}
    for key, value in sorted(vars(obj).items()) if hasattr(obj, "__dict__") else ():
        if isinstance(value, (bool, int, float, str, type(None), torch.Tensor)):
            attrs[key] = value
    return {"type": type(obj).__qualname__, **attrs}
