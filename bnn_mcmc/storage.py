"""In-memory storage of draws and per-transition statistics.

Draws are written, detached, into preallocated CPU blocks of ``block_size``
rows (whatever device the chain runs on), so memory grows by whole blocks and
no autograd history is kept.  Statistics are kept in matching numpy blocks,
one array per name.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

#: numpy dtype of each statistic name (ArviZ's ``sample_stats`` schema plus ``accepted``).
STAT_DTYPES: dict[str, type] = {
    "lp": np.float64,
    "acceptance_rate": np.float64,
    "accepted": np.bool_,
    "step_size": np.float64,
    "n_steps": np.int64,
    "tree_depth": np.int64,
    "diverging": np.bool_,
    "energy": np.float64,
    "energy_error": np.float64,
    "reached_max_tree_depth": np.bool_,
}


class DrawStore:
    """Append-only store of ``(dim,)`` draws and their statistics.

    Parameters
    ----------
    dim
        Length of a draw.
    dtype
        Torch dtype of the stored draws.
    stat_names
        The statistics recorded with each draw (keys of :data:`STAT_DTYPES`).
    block_size
        Rows per preallocated block.
    """

    def __init__(
        self, dim: int, dtype: torch.dtype, stat_names: tuple[str, ...], block_size: int = 1024
    ):
        self.dim, self.dtype, self.stat_names = dim, dtype, tuple(stat_names)
        self.block_size = block_size
        self._blocks: list[Tensor] = []
        self._stat_blocks: list[dict[str, np.ndarray]] = []
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, position: Tensor, stats: Mapping[str, object]) -> None:
        """Store one draw (copied to CPU, detached) with its statistics."""
        row = self._length % self.block_size
        if row == 0:
            self._blocks.append(torch.empty((self.block_size, self.dim), dtype=self.dtype))
            self._stat_blocks.append(
                {name: np.empty(self.block_size, STAT_DTYPES[name]) for name in self.stat_names}
            )
        self._blocks[-1][row].copy_(position.detach())
        block = self._stat_blocks[-1]
        for name in self.stat_names:
            block[name][row] = stats[name]
        self._length += 1

    def draws(self) -> Tensor:
        """All stored draws as one ``(n, dim)`` tensor."""
        if not self._blocks:
            return torch.empty((0, self.dim), dtype=self.dtype)
        return torch.cat(self._blocks)[: self._length]

    def stats(self) -> dict[str, Tensor]:
        """Each statistic as a tensor with one entry per stored draw."""
        return {
            name: torch.from_numpy(
                np.concatenate([b[name] for b in self._stat_blocks])[: self._length]
                if self._stat_blocks
                else np.empty(0, STAT_DTYPES[name])
            )
            for name in self.stat_names
        }

    def drop_first(self, n: int | None = None) -> None:
        """Forget all draws (``n=None``) or only the first ``n``."""
        if n is None or n >= self._length:
            self._blocks, self._stat_blocks, self._length = [], [], 0
            return
        if n < 0:
            raise ValueError(f"n must be non-negative; got {n}.")
        draws, stats = self.draws()[n:].clone(), self.stats()
        self._blocks, self._stat_blocks, self._length = [], [], 0
        for i in range(draws.shape[0]):
            self.append(draws[i], {name: stats[name][n + i].item() for name in self.stat_names})

    def state_dict(self) -> dict:
        """Draws and statistics as tensors (for checkpoints)."""
        return {"draws": self.draws(), "stats": self.stats()}

    def load_state_dict(self, state: Mapping) -> None:
        """Replace the content by a :meth:`state_dict`."""
        self._blocks, self._stat_blocks, self._length = [], [], 0
        draws, stats = state["draws"], state["stats"]
        for i in range(draws.shape[0]):
            self.append(draws[i], {name: stats[name][i].item() for name in self.stat_names})
