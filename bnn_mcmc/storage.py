"""Storage of draws and per-transition statistics: in memory or streamed to disk.

Draws are written, detached, into preallocated CPU blocks of ``block_size``
rows (whatever device the chain runs on), so memory grows by whole blocks and
no autograd history is kept.  Statistics are kept in matching numpy blocks,
one array per name.

With ``thin=k`` only every ``k``-th offered transition is kept (the ``k``-th,
``2k``-th, ...).

With a ``directory`` the store *streams*: it keeps one block of ``chunk_size``
rows in memory and writes each full block to disk as a chunk, so memory does
not grow with the number of draws.  The on-disk format is

* ``draws_000000.npy`` — a ``(rows, dim)`` array of draws,
* ``stats_000000.npy`` — a structured array with one field per statistic,
* ``index.json`` — ``dim``, ``dtype``, ``stat_names`` and the list of
  committed chunks: each with its row count and, per file, the file name
  (relative to the directory), SHA-256 checksum, dtype and shape.  Reads
  verify all of them and name the file that fails.

Every file is written by :func:`bnn_mcmc.runfolder.atomic_write` (a fresh,
non-following temporary file moved into place with :func:`os.replace`, atomic
on POSIX), and a chunk enters ``index.json`` only
after both its files exist.  Hence a reader — the same run, another process
while the run goes on, or anyone after the run was killed — always sees a
consistent prefix of the chain: :func:`read_chunks`.  ``.npy`` needs nothing
beyond numpy, is memory-mappable, never needs pickle to load, and an append
touches no existing file (netCDF/HDF5 appends rewrite metadata in place and a
kill mid-write can corrupt the whole file).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .runfolder import (
    DamagedRunError,
    atomic_write,
    confine,
    json_bytes,
    read_bytes,
    read_json,
    sha256,
)

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

INDEX_NAME = "index.json"


def _stats_dtype(stat_names: tuple[str, ...]) -> np.dtype:
    return np.dtype([(name, STAT_DTYPES[name]) for name in stat_names])


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _chunk_entry(name: str, data: bytes, array: np.ndarray) -> dict:
    """What ``index.json`` records of one chunk file: name, checksum, dtype and shape."""
    return {
        "file": name,
        "sha256": sha256(data),
        "dtype": array.dtype.str if array.dtype.names is None else None,
        "shape": list(array.shape),
    }


def check_chunk_list(directory: Path, chunks: object, source: str | os.PathLike) -> list[dict]:
    """Validate the chunk list of an index or checkpoint: well-formed, names confined."""
    if not isinstance(chunks, list):
        raise DamagedRunError(f"{source}: the chunk list is not a list; restore the file.")
    for k, chunk in enumerate(chunks):
        if not isinstance(chunk, dict) or not {"draws", "stats", "rows"} <= chunk.keys():
            raise DamagedRunError(f"{source}: chunk {k} is malformed; restore the file.")
        rows = chunk["rows"]
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise DamagedRunError(f"{source}: chunk {k} has an invalid row count {rows!r}.")
        for key in ("draws", "stats"):
            entry = chunk[key]
            name = entry["file"] if isinstance(entry, dict) else entry
            confine(directory, name, source)
    return [dict(c) for c in chunks]


def _chunk_file(chunk: dict, key: str) -> str:
    entry = chunk[key]
    return entry["file"] if isinstance(entry, dict) else entry


def _load_chunk(
    directory: Path, chunk: dict, key: str, source: Path, dim: int, dtype
) -> np.ndarray:
    """Read one chunk file and check it against its index entry; errors name the file."""
    entry = chunk[key]
    if not isinstance(entry, dict) or "sha256" not in entry:
        raise DamagedRunError(
            f"{source}: chunk {_chunk_file(chunk, key)!r} has no checksum (a folder of an older "
            "version of bnn_mcmc or an edited index); restore the file."
        )
    path = confine(directory, entry["file"], source)
    data = read_bytes(path, source)
    if sha256(data) != entry["sha256"]:
        raise DamagedRunError(
            f"{path} does not match its checksum in {source}: the file was changed, truncated "
            "or corrupted on disk; restore it from a copy of the run folder."
        )
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:
        raise DamagedRunError(f"{path} is not a valid .npy file ({err}); restore it.") from None
    rows = chunk["rows"]
    expected = (rows, dim) if key == "draws" else (rows,)
    if tuple(array.shape) != expected or list(array.shape) != entry["shape"]:
        raise DamagedRunError(
            f"{path} holds shape {tuple(array.shape)}, {source} records {expected}; restore it."
        )
    if array.dtype != dtype:
        raise DamagedRunError(
            f"{path} holds dtype {array.dtype}, {source} records {dtype}; restore it."
        )
    return array


def read_chunks(directory: str | os.PathLike) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read the committed draws and statistics of a streamed store.

    Safe while the run is still writing and after it was killed: only chunks
    listed in ``index.json`` are read.  Every chunk is checked against its
    index entry (SHA-256 checksum, dtype, shape and row count), and every file
    name is confined to ``directory`` (:func:`bnn_mcmc.runfolder.confine`).

    Returns
    -------
    (draws, stats)
        A ``(n, dim)`` array and one ``(n,)`` array per statistic.

    Raises
    ------
    DamagedRunError
        Naming the file that is missing, altered or outside the folder.
    """
    directory = Path(directory)
    index_path = directory / INDEX_NAME
    if not index_path.is_file():
        raise FileNotFoundError(
            f"{index_path} does not exist; pass the directory of a streamed store "
            "(output_dir/draws or output_dir/chain_00/draws)."
        )
    index = read_json(index_path, "index of streamed draws")
    try:
        dim, names = int(index["dim"]), tuple(index["stat_names"])
        dtype = np.dtype(index["dtype"])
        stats_dtype = _stats_dtype(names)
        chunks = index["chunks"]
    except (KeyError, TypeError, ValueError) as err:
        raise DamagedRunError(f"{index_path} is malformed ({err!r}); restore it.") from None
    chunks = check_chunk_list(directory, chunks, index_path)
    if index.get("num_draws", sum(c["rows"] for c in chunks)) != sum(c["rows"] for c in chunks):
        raise DamagedRunError(
            f"{index_path} records {index['num_draws']} draws but its chunks hold "
            f"{sum(c['rows'] for c in chunks)}; the index was edited: restore it."
        )
    draws = [_load_chunk(directory, c, "draws", index_path, dim, dtype) for c in chunks]
    stats = [_load_chunk(directory, c, "stats", index_path, dim, stats_dtype) for c in chunks]
    if not draws:
        return np.empty((0, dim), dtype), {name: np.empty(0, STAT_DTYPES[name]) for name in names}
    table = np.concatenate(stats)
    return np.concatenate(draws), {name: np.ascontiguousarray(table[name]) for name in names}


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
        Rows per preallocated block (in memory).
    thin
        Keep every ``thin``-th offered draw.
    directory
        Stream to this directory in chunks of ``block_size`` rows (see the
        module docstring); ``None`` keeps everything in memory.
    """

    def __init__(
        self,
        dim: int,
        dtype: torch.dtype,
        stat_names: tuple[str, ...],
        block_size: int = 1024,
        thin: int = 1,
        directory: str | os.PathLike | None = None,
    ):
        if isinstance(thin, bool) or not isinstance(thin, int) or thin < 1:
            raise ValueError(f"thin must be a positive int; got {thin!r}.")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size (chunk_size) must be a positive int; got {block_size!r}.")
        self.dim, self.dtype, self.stat_names = dim, dtype, tuple(stat_names)
        self.block_size = block_size
        self.thin = thin
        self.directory = Path(directory) if directory is not None else None
        #: The run folder named in write errors (the parent of ``directory``).
        self.run_dir = None if self.directory is None else self.directory.parent
        self._blocks: list[Tensor] = []
        self._stat_blocks: list[dict[str, np.ndarray]] = []
        self._length = 0
        self._seen = 0
        self._chunks: list[dict] = []
        self._flushed = 0
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._write_index()

    def __len__(self) -> int:
        return self._length

    @property
    def streaming(self) -> bool:
        """Whether draws go to disk."""
        return self.directory is not None

    # ------------------------------------------------------------------ writing
    def append(self, position: Tensor, stats: Mapping[str, object]) -> None:
        """Offer one draw (copied to CPU, detached); kept when it is a ``thin``-th one."""
        self._seen += 1
        if self._seen % self.thin:
            return
        row = (self._length - self._flushed) % self.block_size
        if row == 0:
            if self.streaming and self._blocks:
                self.flush()
            self._blocks.append(torch.empty((self.block_size, self.dim), dtype=self.dtype))
            self._stat_blocks.append(
                {name: np.empty(self.block_size, STAT_DTYPES[name]) for name in self.stat_names}
            )
        self._blocks[-1][row].copy_(position.detach())
        block = self._stat_blocks[-1]
        for name in self.stat_names:
            block[name][row] = stats[name]
        self._length += 1

    def flush(self) -> None:
        """Write the buffered rows to disk as one chunk (streaming stores only)."""
        if not self.streaming or self._length == self._flushed:
            return
        rows = self._length - self._flushed
        k = len(self._chunks)
        draws = np.ascontiguousarray(self._blocks[-1][:rows].numpy())
        table = np.empty(rows, _stats_dtype(self.stat_names))
        for name in self.stat_names:
            table[name] = self._stat_blocks[-1][name][:rows]
        entry = {"rows": rows}
        for key, array in (("draws", draws), ("stats", table)):
            name = f"{key}_{k:06d}.npy"
            data = _npy_bytes(array)
            atomic_write(self.directory / name, data, self.run_dir)
            entry[key] = _chunk_entry(name, data, array)
        self._chunks.append(entry)
        self._flushed = self._length
        self._blocks, self._stat_blocks = [], []
        self._write_index()

    def _write_index(self) -> None:
        index = {
            "dim": self.dim,
            "dtype": str(self.dtype).removeprefix("torch."),
            "stat_names": list(self.stat_names),
            "num_draws": self._flushed,
            "chunks": self._chunks,
        }
        atomic_write(self.directory / INDEX_NAME, json_bytes(index), self.run_dir)

    # ------------------------------------------------------------------ reading
    def _memory_rows(self) -> tuple[Tensor, dict[str, np.ndarray]]:
        n = self._length - self._flushed
        if not self._blocks:
            return torch.empty((0, self.dim), dtype=self.dtype), {
                name: np.empty(0, STAT_DTYPES[name]) for name in self.stat_names
            }
        draws = torch.cat(self._blocks)[:n]
        stats = {
            name: np.concatenate([b[name] for b in self._stat_blocks])[:n]
            for name in self.stat_names
        }
        return draws, stats

    def draws(self) -> Tensor:
        """All stored draws as one ``(n, dim)`` tensor (read from disk when streaming)."""
        draws, _ = self._memory_rows()
        if self.streaming and self._chunks:
            disk, _ = read_chunks(self.directory)
            return torch.cat([torch.from_numpy(disk), draws])
        return draws

    def stats(self) -> dict[str, Tensor]:
        """Each statistic as a tensor with one entry per stored draw."""
        _, stats = self._memory_rows()
        if self.streaming and self._chunks:
            _, disk = read_chunks(self.directory)
            stats = {name: np.concatenate([disk[name], stats[name]]) for name in self.stat_names}
        return {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in stats.items()}

    def drop_first(self, n: int | None = None) -> None:
        """Forget all draws (``n=None``) or only the first ``n``."""
        if n is not None and n < 0:
            raise ValueError(f"n must be non-negative; got {n}.")
        keep = 0 if n is None else max(self._length - n, 0)
        draws, stats = self.draws()[self._length - keep :].clone(), self.stats()
        stats = {name: v[self._length - keep :] for name, v in stats.items()}
        self._reset()
        self._refill(draws, stats)

    def _reset(self) -> None:
        self._blocks, self._stat_blocks, self._length, self._flushed = [], [], 0, 0
        if self.streaming:
            for chunk in self._chunks:
                for key in ("draws", "stats"):
                    path = confine(self.directory, _chunk_file(chunk, key), self.directory)
                    path.unlink(missing_ok=True)
            self._chunks = []
            self._write_index()

    def _refill(self, draws: Tensor, stats: Mapping[str, Tensor]) -> None:
        """Store ``draws`` (already thinned) in bulk, without counting them as offered."""
        n = draws.shape[0]
        if self.streaming:
            seen, thin = self._seen, self.thin
            self.thin = 1
            for i in range(n):
                self.append(draws[i], {name: stats[name][i].item() for name in self.stat_names})
            self.thin, self._seen = thin, seen
            return
        for start in range(0, n, self.block_size):
            rows = min(self.block_size, n - start)
            block = torch.empty((self.block_size, self.dim), dtype=self.dtype)
            block[:rows].copy_(draws[start : start + rows])
            stat_block = {}
            for name in self.stat_names:
                stat_block[name] = np.empty(self.block_size, STAT_DTYPES[name])
                stat_block[name][:rows] = np.asarray(stats[name][start : start + rows])
            self._blocks.append(block)
            self._stat_blocks.append(stat_block)
        self._length = n

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """The content for a checkpoint.

        In memory: draws and statistics as tensors.  Streaming: the buffer is
        flushed first and only the list of committed chunks is recorded.
        """
        if self.streaming:
            self.flush()
            return {
                "seen": self._seen,
                "length": self._length,
                "chunks": [dict(c) for c in self._chunks],
            }
        return {"seen": self._seen, "draws": self.draws(), "stats": self.stats()}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a :meth:`state_dict`; a streaming store drops chunks written after it."""
        if self.streaming != ("chunks" in state):
            raise ValueError(
                "checkpoint and store disagree on streaming: resume with the output_dir "
                "of the run that wrote the checkpoint."
            )
        if self.streaming:
            self._blocks, self._stat_blocks = [], []
            self._chunks = check_chunk_list(self.directory, state["chunks"], "the checkpoint")
            self._length = self._flushed = int(state["length"])
            self._write_index()
        else:
            self._blocks, self._stat_blocks, self._length = [], [], 0
            self._refill(state["draws"], state["stats"])
        self._seen = int(state["seen"])
