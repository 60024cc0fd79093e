r"""Output formats of a hypernetwork and conversions between them.

A hypernetwork generating the tensors with shapes ``target_shapes``
:math:`= (s_1, \dots, s_K)` for a batch of :math:`B` inputs can return them as

``'flattened'``
    one tensor of shape ``(B, N)`` with :math:`N = \sum_k \prod s_k` (``num_outputs``);
    row :math:`b` is the concatenation of the row-major flattened tensors of sample
    :math:`b`.  This is the format a batched main network takes.
``'sequential'``
    a list of length :math:`B` whose entries are lists of :math:`K` tensors of shapes
    :math:`s_1, \dots, s_K`.
``'squeezed'``
    as ``'sequential'``, except that for :math:`B = 1` the outer list is dropped and a
    list of :math:`K` tensors is returned.

All conversions go through ``'flattened'``; list formats hold views of one tensor, so no
sample is copied separately.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FORMATS = ("squeezed", "sequential", "flattened")


def check_shapes(target_shapes: Sequence[Sequence[int]], name: str = "target_shapes") -> list:
    """Validate a list of tensor shapes and return it as a list of lists of ints.

    Raises
    ------
    ValueError
        If the list is empty or a shape has a non-positive entry.
    TypeError
        If an entry is not a sequence of integers.
    """
    if isinstance(target_shapes, (str, bytes)) or not isinstance(target_shapes, Sequence):
        raise TypeError(f"{name} must be a list of shapes (lists of ints), got {target_shapes!r}")
    if len(target_shapes) == 0:
        raise ValueError(f"{name} must contain at least one shape")
    shapes = []
    for shape in target_shapes:
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
            raise TypeError(f"every entry of {name} must be a list of ints, got {shape!r}")
        if len(shape) == 0 or any(not isinstance(d, int) or d <= 0 for d in shape):
            raise ValueError(
                f"every entry of {name} must be a non-empty list of positive ints, got {shape!r}"
            )
        shapes.append([int(d) for d in shape])
    return shapes


def numel(shape: Sequence[int]) -> int:
    """Number of elements of a tensor of the given shape."""
    return int(math.prod(shape))


def check_format(ret_format: str, name: str = "ret_format") -> None:
    """Raise ``ValueError`` unless ``ret_format`` is one of :data:`FORMATS`."""
    if ret_format not in FORMATS:
        raise ValueError(f"{name} must be one of {FORMATS}, got {ret_format!r}")


def flat_to_tensors(flat: torch.Tensor, target_shapes: list) -> list[torch.Tensor]:
    """Split ``(B, N)`` into one tensor of shape ``(B, *s_k)`` per target shape (views)."""
    sizes = [numel(s) for s in target_shapes]
    parts = torch.split(flat, sizes, dim=1)
    return [p.reshape(flat.shape[0], *s) for p, s in zip(parts, target_shapes)]


def to_flattened(hnet_out, src_format: str, target_shapes: list) -> torch.Tensor:
    """Convert an output in ``src_format`` to the ``(B, N)`` flattened tensor."""
    check_format(src_format, "src_format")
    n_out = sum(numel(s) for s in target_shapes)
    if src_format == "flattened":
        if not torch.is_tensor(hnet_out) or hnet_out.dim() != 2 or hnet_out.shape[1] != n_out:
            raise ValueError(
                f"a 'flattened' hypernetwork output must be a tensor of shape (B, {n_out})"
            )
        return hnet_out
    if not isinstance(hnet_out, (list, tuple)) or len(hnet_out) == 0:
        raise TypeError(f"a {src_format!r} hypernetwork output must be a non-empty list")
    if src_format == "squeezed" and torch.is_tensor(hnet_out[0]):
        samples = [hnet_out]
    else:
        samples = hnet_out
    rows = []
    for sample in samples:
        if len(sample) != len(target_shapes):
            raise ValueError(
                f"each sample of a {src_format!r} output must hold {len(target_shapes)} tensors"
            )
        for t, s in zip(sample, target_shapes):
            if list(t.shape) != list(s):
                raise ValueError(
                    f"tensor of shape {list(t.shape)} in a {src_format!r} output does not "
                    f"match target shape {s}"
                )
        rows.append(torch.cat([t.reshape(-1) for t in sample]))
    return torch.stack(rows)


def from_flattened(flat: torch.Tensor, trgt_format: str, target_shapes: list):
    """Convert a ``(B, N)`` flattened tensor to ``trgt_format``."""
    check_format(trgt_format, "trgt_format")
    if trgt_format == "flattened":
        return flat
    per_tensor = flat_to_tensors(flat, target_shapes)
    samples = [list(ts) for ts in zip(*(t.unbind(0) for t in per_tensor))]
    if trgt_format == "squeezed" and len(samples) == 1:
        return samples[0]
    return samples
