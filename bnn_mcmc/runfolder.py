"""Run folders: confined paths, safe atomic writes, checksums and the settings manifest.

A *run folder* holds everything a chain (or a :class:`~bnn_mcmc.MultiChainHMC`
experiment) writes: checkpoints, streamed draws, ``index.json`` files and a
``manifest.json``.  Three rules make it relocatable and trustworthy:

* **Relative names only.**  Every file name stored inside the folder is
  relative to the folder; a name read back is resolved by :func:`confine`,
  which refuses absolute paths, ``..`` components and symbolic links that
  lead outside the folder.  Whoever resumes a run says where it is; the
  folder never says where it was.
* **Atomic, non-following writes.**  :func:`atomic_write` creates a fresh
  temporary file with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under an
  unpredictable name, so a link planted in the folder is never written
  through; the bytes are flushed and ``fsync``-ed, then moved over the target
  with :func:`os.replace` (atomic on POSIX) and the directory entry is synced.
  A kill at any moment leaves either the old or the new file.
* **Named failures.**  A write that fails (full disk, quota, permissions)
  raises :class:`RunFolderWriteError` naming the file and the remedy; a file
  that fails a check raises :class:`DamagedRunError` naming the file.

The manifest records the settings a run cannot change on resume (chain
class, number of chains, dimension, dtype); :func:`check_manifest` compares
them with what a resume finds and names what changed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

MANIFEST_NAME = "manifest.json"
#: Version of the on-disk layout (index entries with checksums, relative names).
FORMAT_VERSION = 2


class DamagedRunError(ValueError):
    """A run file is missing, truncated, altered or refers outside its folder."""


class RunFolderWriteError(OSError):
    """Writing a run file failed (full disk, quota, permissions); the old file is intact."""


class SettingsMismatchError(ValueError):
    """A resume would continue a run with other settings or another potential."""


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def confine(folder: str | os.PathLike, name: object, source: str | os.PathLike) -> Path:
    """The path of ``name`` (read from the run file ``source``) inside ``folder``.

    Parameters
    ----------
    folder
        The run folder (or a sub-folder of it) the name is relative to.
    name
        A file name as stored in a run file.
    source
        The file the name was read from (named in the error).

    Raises
    ------
    DamagedRunError
        When ``name`` is not a string, is absolute, has a ``..`` component,
        or resolves (following symbolic links) outside ``folder``.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise DamagedRunError(f"{source}: file name {name!r} is not a valid relative name.")
    rel = Path(name)
    if rel.is_absolute() or os.path.isabs(name) or name.startswith(("/", "\\")):
        raise DamagedRunError(
            f"{source}: file name {name!r} is absolute; run files may only name files inside "
            f"their folder {folder}. The file was altered: restore it from a copy."
        )
    if ".." in rel.parts:
        raise DamagedRunError(
            f"{source}: file name {name!r} leaves the run folder ('..'); the file was altered: "
            "restore it from a copy."
        )
    base = Path(folder)
    path = base / rel
    if not _is_inside(Path(os.path.realpath(path)), Path(os.path.realpath(base))):
        raise DamagedRunError(
            f"{source}: {name!r} is a symbolic link leading outside the run folder {folder}; "
            "refusing to use it. Replace the link by the file itself."
        )
    return path


def _remedy(run_dir: str | os.PathLike | None) -> str:
    where = f"resume({str(run_dir)!r})" if run_dir is not None else "resume() on the run folder"
    return (
        f"free disk space (or fix the permissions), then {where} continues from the last checkpoint"
    )


def atomic_write(
    path: str | os.PathLike, data: bytes, run_dir: str | os.PathLike | None = None
) -> None:
    """Replace ``path`` by a file holding ``data``, atomically and without following links.

    Parameters
    ----------
    path
        The target file; its folder must exist.
    data
        The complete new content.
    run_dir
        The run folder, named in the remedy of an error.

    Raises
    ------
    RunFolderWriteError
        When creating, writing, syncing or renaming fails; the previous file
        (if any) is intact and the temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    fd = -1
    try:
        fd = os.open(tmp, flags, 0o644)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except OSError as err:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        name = errno.errorcode.get(err.errno, "error") if err.errno else "error"
        raise RunFolderWriteError(
            err.errno,
            f"cannot write {path}: {err.strerror or err} ({name}); the previous version of the "
            f"file is intact; {_remedy(run_dir)}.",
        ) from err
    _sync_directory(path.parent)


_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files that killed writes of :func:`atomic_write` left in ``folder``.

    Only names of the form ``.<name>.<16 hex digits>.tmp`` are removed (a link
    of that name is removed as a link, never followed).  Call it only when no
    other process writes the run.  Returns how many were removed.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if _TEMPORARY.match(entry.name) and not entry.is_dir(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def _sync_directory(folder: Path) -> None:
    """Make a rename durable (best effort: not every file system supports it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_bytes(path: Path, source: str | os.PathLike | None = None) -> bytes:
    """The content of a run file; a missing one is a :class:`DamagedRunError` naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        hint = f" (listed in {source})" if source is not None else ""
        raise DamagedRunError(
            f"{path}{hint} is missing; the run folder is incomplete: copy the whole folder again "
            "or restore the file."
        ) from None


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data`` (the checksum recorded for every chunk)."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """The settings of a run that a resume must not change.

    Attributes
    ----------
    chain_type : name of the sampler class (``'HMC'``, ``'NUTS'``, ...)
    num_chains : number of chains (1 for a single sampler)
    dim : length of a position
    dtype : torch dtype name of the positions
    format_version : layout version of the folder
    """

    chain_type: str
    num_chains: int
    dim: int
    dtype: str
    format_version: int = FORMAT_VERSION


def write_manifest(folder: str | os.PathLike, manifest: Manifest) -> None:
    """Write ``folder/manifest.json`` atomically."""
    data = json.dumps(asdict(manifest), indent=1).encode()
    atomic_write(Path(folder) / MANIFEST_NAME, data, folder)


def read_manifest(folder: str | os.PathLike) -> Manifest | None:
    """The manifest of ``folder``; ``None`` for a folder written before manifests existed."""
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        raw = json.loads(read_bytes(path))
        return Manifest(**raw)
    except (ValueError, TypeError) as err:
        raise DamagedRunError(
            f"{path} is damaged ({type(err).__name__}); restore it from a copy of the run folder."
        ) from None


def check_manifest(folder: str | os.PathLike, found: Manifest, force: bool = False) -> None:
    """Compare the manifest of ``folder`` with the settings ``found`` on resume.

    Raises
    ------
    SettingsMismatchError
        Naming every field that differs, unless ``force``.
    """
    saved = read_manifest(folder)
    if saved is None or force:
        return
    changed = [
        f"{k}: manifest {getattr(saved, k)!r}, found {getattr(found, k)!r}"
        for k in ("chain_type", "num_chains", "dim", "dtype")
        if getattr(saved, k) != getattr(found, k)
    ]
    if changed:
        raise SettingsMismatchError(
            f"{Path(folder) / MANIFEST_NAME} disagrees with the run files: "
            + "; ".join(changed)
            + ". A run file was edited or files of different runs were mixed; restore the "
            "folder from a copy, or pass force=True if you mean it."
        )


def potential_tolerance(dtype_name: str) -> float:
    """Relative tolerance for recomputed potentials: ``1e-4`` (float32/16), ``1e-8`` (float64)."""
    return 1e-8 if dtype_name == "float64" else 1e-4


def check_potential_fingerprint(
    source: str | os.PathLike,
    saved_u: float,
    fresh_u: float,
    saved_grad_norm: float | None,
    fresh_grad_norm: float | None,
    dtype_name: str,
    force: bool = False,
) -> None:
    """Compare :math:`U` and :math:`\\|\\nabla U\\|` at the saved position with fresh values.

    The potential is code and cannot be saved; its values at the saved
    position identify it.  They agree within :func:`potential_tolerance`
    (relative, plus the same absolute amount) when the same potential is
    passed again.

    Raises
    ------
    SettingsMismatchError
        When a value differs, unless ``force``.
    """
    if force:
        return
    rtol = potential_tolerance(dtype_name)

    def same(a: float, b: float) -> bool:
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=rtol, abs_tol=rtol)

    problems = []
    if not same(saved_u, fresh_u):
        problems.append(f"U = {fresh_u:.6g} there, the checkpoint recorded {saved_u:.6g}")
    if saved_grad_norm is not None and fresh_grad_norm is not None:
        if not same(saved_grad_norm, fresh_grad_norm):
            problems.append(
                f"|grad U| = {fresh_grad_norm:.6g} there, the checkpoint recorded "
                f"{saved_grad_norm:.6g}"
            )
    if problems:
        raise SettingsMismatchError(
            f"{source}: the potential passed to resume is not the one of the run: "
            + "; ".join(problems)
            + " (at the saved position). Pass the same potential (same data, network, prior "
            "and likelihood), or force=True to continue with the new one."
        )


def json_bytes(obj: object) -> bytes:
    """``obj`` as compact JSON bytes (what index and meta files hold)."""
    return json.dumps(obj).encode()


def read_json(path: Path, what: str) -> dict:
    """A JSON run file as a dict; damaged or missing ones name the file."""
    data = read_bytes(path)
    try:
        obj = json.loads(data)
    except ValueError:
        raise DamagedRunError(
            f"{path} is not valid JSON ({what}); it was truncated or edited: restore it from a "
            "copy of the run folder."
        ) from None
    if not isinstance(obj, dict):
        raise DamagedRunError(f"{path} does not hold a JSON object ({what}); restore it.")
    return obj
