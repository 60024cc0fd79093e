"""The run file of a :class:`~bnn_mcmc.MultiChainHMC` folder: settings and call journal.

``multichain.json`` records the chain type, number of chains, seeds and
devices, whether the run's creation completed (``committed``: every chain's
initial checkpoint exists), and a journal of the calls made
(``warmup``/``simulate_chains`` with their arguments and chains).

A call is journaled *before* any chain records it, and each chain's
checkpoint stores how many journaled calls it has recorded
(``Sampler.run_call``).  A run killed between the per-chain checkpoints of a
call therefore resumes consistently: the chains that had not yet recorded the
last call record it on resume (the recording is a deterministic function of
the chain's saved state), and every chain finishes it.

Alongside it ``manifest.json`` (:mod:`bnn_mcmc.runfolder`) holds the settings
that must not change; :func:`read_meta` cross-checks both and the chain folders.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..runfolder import (
    DamagedRunError,
    Manifest,
    SettingsMismatchError,
    atomic_write,
    json_bytes,
    read_json,
    write_manifest,
)

META_NAME = "multichain.json"


class IncompleteRunError(DamagedRunError):
    """The creation of a run was interrupted before every chain was saved: nothing ran."""


@dataclass
class RunMeta:
    """Content of ``multichain.json``."""

    chain_type: str
    num_chains: int
    seed: int
    seeds: list[int]
    devices: list[str]
    committed: bool = False
    calls: list[dict] = field(default_factory=list)


def chain_dir(output_dir: Path, index: int) -> Path:
    """The folder of chain ``index`` inside the run folder."""
    return output_dir / f"chain_{index:02d}"


def write_meta(folder: Path, meta: RunMeta) -> None:
    """Write ``multichain.json`` atomically."""
    atomic_write(folder / META_NAME, json_bytes(asdict(meta)), folder)


def write_run_manifest(folder: Path, meta: RunMeta, class_name: str, dim: int, dtype: str) -> None:
    """Write the run's ``manifest.json`` (settings a resume must find unchanged)."""
    write_manifest(folder, Manifest(class_name, meta.num_chains, dim, dtype))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_meta(folder: Path, chain_types: dict[str, type]) -> RunMeta:
    """Read and check ``multichain.json`` against the chain folders present.

    Raises
    ------
    FileNotFoundError
        When the folder holds no MultiChainHMC run.
    DamagedRunError
        When the file is malformed or disagrees with the chain folders
        (:class:`IncompleteRunError` when the run's creation was interrupted).
    """
    path = folder / META_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is {folder} a MultiChainHMC run?")
    raw = read_json(path, "MultiChainHMC settings")
    try:
        meta = RunMeta(**raw)
    except TypeError as err:
        raise DamagedRunError(f"{path} is malformed ({err}); restore it from a copy.") from None
    if meta.chain_type not in chain_types:
        raise DamagedRunError(
            f"{path}: chain_type {meta.chain_type!r} is not one of {tuple(chain_types)}; the file "
            "was edited: restore it."
        )
    n = meta.num_chains
    if not _is_int(n) or n < 1:
        raise DamagedRunError(f"{path}: num_chains {n!r} is not a positive int; restore it.")
    for key in ("seeds", "devices"):
        value = getattr(meta, key)
        if not isinstance(value, list) or len(value) != n:
            raise DamagedRunError(
                f"{path}: {key} must list one entry per chain ({n}); got {value!r}. The file was "
                "edited: restore it."
            )
    if not all(_is_int(s) and 0 <= s < 2**63 for s in meta.seeds):
        raise DamagedRunError(f"{path}: seeds must be ints in [0, 2**63); restore it.")
    if not meta.committed:
        raise IncompleteRunError(
            f"{folder}: the run was killed while it was being created, before every chain was "
            "saved; nothing was sampled. Create it again with MultiChainHMC(..., "
            f"output_dir={str(folder)!r}) (the interrupted creation is replaced)."
        )
    present = sorted(p.name for p in folder.glob("chain_*") if p.is_dir())
    expected = [chain_dir(folder, i).name for i in range(n)]
    if present != expected:
        raise DamagedRunError(
            f"{path} records {n} chain(s) ({', '.join(expected)}) but the folder holds "
            f"{', '.join(present) or 'none'}; the file was edited or chain folders were removed "
            "or added: restore the folder from a copy."
        )
    return meta


def check_chain_class(folder: Path, index: int, found: str, expected: str) -> None:
    """A chain checkpoint must hold a chain of the run's type."""
    if found != expected:
        raise SettingsMismatchError(
            f"{chain_dir(folder, index)}: the checkpoint holds a {found} chain but "
            f"{folder / META_NAME} says {expected}; the file was edited or folders of different "
            "runs were mixed: restore the folder from a copy."
        )


def clear_interrupted_creation(folder: Path, num_chains: int) -> None:
    """Remove the chain files of a creation that never committed (nothing was sampled)."""
    import shutil

    for i in range(num_chains):
        d = chain_dir(folder, i)
        if d.is_dir() and not d.is_symlink():
            shutil.rmtree(d)
    for name in (META_NAME, "manifest.json"):
        try:
            os.unlink(folder / name)
        except FileNotFoundError:
            pass


def record_call(chain, call: dict, initial_step: float | None = None) -> None:
    """Record the journaled ``call`` (``kind`` ``'warmup'`` or ``'sample'``) in ``chain``.

    Nothing runs yet: the chain's :meth:`~bnn_mcmc.samplers.Sampler.continue_run` (or a
    lockstep driver) does the work.  ``initial_step`` is the result of a warmup's
    initial step-size search already run for this chain (the vectorized backend
    searches for all chains at once); without it the chain runs its own search.
    """
    if call["kind"] == "sample":
        chain.schedule_sampling(call["num_states"])
        return
    chain.schedule_warmup(
        call["num_steps"],
        call["target_accept"],
        call["adapt_mass"],
        call["adapt_step_size"],
        initial_step,
    )
