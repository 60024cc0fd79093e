r"""Where a test input lies relative to the training inputs: in the data, in a gap, outside.

A bounding box of the training inputs counts a gap between two clusters of data as
"inside".  Here a test input :math:`x` is *near the data* when its distance to the nearest
training input is at most :math:`c\,\tilde d`, where :math:`\tilde d` is the median
nearest-neighbour distance among the training inputs (``factor`` :math:`c`, default 2);
otherwise it is *far*: in a gap when it lies within the bounding box, *outside* when it
does not.  In one dimension this finds a gap between data clusters exactly when the gap is
wider than :math:`2c\,\tilde d`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class DataRegions(NamedTuple):
    """Boolean masks over the test inputs (disjoint, covering all of them).

    Attributes
    ----------
    near : Tensor
        Within ``factor`` median nearest-neighbour distances of a training input.
    gap : Tensor
        Far from every training input but inside the bounding box.
    outside : Tensor
        Far from every training input and outside the bounding box.
    """

    near: Tensor
    gap: Tensor
    outside: Tensor


def find_regions(train_inputs: Tensor, test_inputs: Tensor, factor: float = 2.0) -> DataRegions:
    """Split ``test_inputs`` ``(n, ...)`` into near / gap / outside (see module docstring).

    Parameters
    ----------
    train_inputs : Tensor
        ``(N, ...)`` training inputs, ``N >= 2``.
    test_inputs : Tensor
        ``(n, ...)`` test inputs with the same trailing shape.
    factor : float
        :math:`c`, in units of the median nearest-neighbour distance.
    """
    if train_inputs.shape[0] < 2:
        raise ValueError("train_inputs must hold at least 2 points to find the data's spacing.")
    if not float(factor) > 0:
        raise ValueError(f"factor must be positive, got {factor!r}.")
    xt = train_inputs.reshape(train_inputs.shape[0], -1).double()
    xs = test_inputs.reshape(test_inputs.shape[0], -1).double()
    if xs.shape[1] != xt.shape[1]:
        raise ValueError("test_inputs and train_inputs must have the same feature shape.")
    d_train = torch.cdist(xt, xt)
    d_train.fill_diagonal_(float("inf"))
    spacing = d_train.min(1).values.median()
    near = torch.cdist(xs, xt).min(1).values <= factor * spacing
    lo, hi = xt.min(0).values, xt.max(0).values
    in_box = ((xs >= lo) & (xs <= hi)).all(1)
    return DataRegions(near=near, gap=~near & in_box, outside=~near & ~in_box)
