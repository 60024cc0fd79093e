"""Fault injection (issue 16): a run killed at EVERY atomic write resumes to the same draws.

A reference run counts its atomic writes (the ``os.replace`` of each file into place).  Then,
for every write ``k`` and both sides of it — just before the rename (the temporary file is
left behind) and just after it (before anything else happens) — a fresh run is stopped there,
and the job is continued the way a user would: resume when the folder holds a run, start
afresh when it does not, and make the calls that resume did not already finish.  The final
draws, statistics and the files on disk must equal the uninterrupted run's bit for bit.

In-process kills raise a ``BaseException`` that no library code catches (the process state
is then thrown away: the job continues only from the folder); two cases also ``os._exit`` a
subprocess at a write, the real thing.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bnn_mcmc import HMC
from bnn_mcmc.multichain import MultiChainHMC
from bnn_mcmc.multichain.runlog import IncompleteRunError
from bnn_mcmc.storage import read_chunks

TRIED = {"single": 0, "multi": 0}


class Killed(BaseException):
    """A kill at a write: escapes every ``except Exception``."""


def gauss(w):
    return 0.5 * (w**2).sum()


def start():
    return torch.full((3,), 0.5, dtype=torch.float64)


# ------------------------------------------------------------------ the jobs
def job_single(folder: Path) -> HMC:
    """Warmup 6 + 10 draws of one HMC chain, continuing whatever ``folder`` holds."""
    if (folder / "checkpoint.pt").exists():
        s = HMC.resume(folder, gauss)
    else:
        s = HMC(start(), gauss, stepsize=0.3, num_steps=2, seed=3)
        s.configure_output(folder, checkpoint_every=5, chunk_size=4)
    if s.num_states == 0 and len(s.warmup_trajectory) == 0:
        s.warmup(6)
    if s.num_states == 0:
        s.simulate_chain(10)
    return s


def job_multi(folder: Path) -> MultiChainHMC:
    """Two HMC chains, warmup 4 + 5 draws, continuing whatever ``folder`` holds."""
    try:
        m = MultiChainHMC.resume(folder, gauss)
    except (FileNotFoundError, IncompleteRunError):
        m = MultiChainHMC(
            [start(), -start()],
            gauss,
            "hmc",
            seed=5,
            output_dir=folder,
            checkpoint_every=4,
            chunk_size=4,
            stepsize=0.3,
            num_steps=2,
        )
    done = len(json.loads((folder / "multichain.json").read_text())["calls"])
    if done < 1:
        m.warmup(4)
    if done < 2:
        m.simulate_chains(5)
    return m


# ------------------------------------------------------------------ injection
def _patch_replace(monkeypatch, folder: Path, kill_at: int | None, side: str) -> dict:
    real = os.replace
    count = {"n": 0}
    root = str(folder)

    def replace(src, dst, *args, **kwargs):
        if not str(dst).startswith(root):
            return real(src, dst, *args, **kwargs)
        k = count["n"]
        count["n"] += 1
        if k == kill_at and side == "before":
            raise Killed
        real(src, dst, *args, **kwargs)
        if k == kill_at and side == "after":
            raise Killed

    monkeypatch.setattr(os, "replace", replace)
    return count


def _resumable(folder: Path) -> bool:
    """Whether the job will resume (not start afresh) from ``folder``."""
    meta = folder / "multichain.json"
    if meta.exists():
        return json.loads(meta.read_text())["committed"]
    return (folder / "checkpoint.pt").exists()


def _files(folder: Path) -> dict[str, bytes]:
    """Chunk files and indices (checkpoints differ only in counters of finished calls)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*.npy"))
        if not p.name.startswith(".")
    }


def _check_every_write(tmp_path, monkeypatch, job, read):
    # fsync makes each write durable across power loss, which no test can check here; a kill
    # (what is tested) does not depend on it, and skipping it makes the cases ~3x faster
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    real_replace = os.replace
    ref_dir = tmp_path / "reference"
    count = _patch_replace(monkeypatch, ref_dir, None, "before")
    ref = read(job(ref_dir))
    n_writes = count["n"]
    monkeypatch.setattr(os, "replace", real_replace)
    ref_files = _files(ref_dir)
    assert n_writes > 15
    tried = 0
    for k in range(n_writes):
        for side in ("before", "after"):
            folder = tmp_path / f"k{k}{side}"
            _patch_replace(monkeypatch, folder, k, side)
            with pytest.raises(Killed):
                job(folder)
            monkeypatch.setattr(os, "replace", real_replace)
            resumable = _resumable(folder)
            got = read(job(folder))
            for a, b in zip(got, ref):
                assert torch.equal(a, b), f"write {k} ({side}): draws differ"
            assert _files(folder) == ref_files, f"write {k} ({side}): chunk files differ"
            if resumable:  # resume removed the temporary file the kill left behind
                assert not list(folder.rglob(".*.tmp")), f"write {k} ({side}): stale files"
            tried += 1
    return n_writes, tried


def _read_single(s):
    stats = s.stats
    return [s.samples(), s.warmup_trajectory, stats["lp"], stats["acceptance_rate"]]


def _read_multi(m):
    return [
        m.samples(),
        *[c.warmup_trajectory for c in m.chains],
        *[c.stats["lp"] for c in m.chains],
    ]


def test_single_chain_killed_at_every_write_resumes_bit_for_bit(tmp_path, monkeypatch):
    n_writes, tried = _check_every_write(tmp_path, monkeypatch, job_single, _read_single)
    TRIED["single"] = tried
    assert tried == 2 * n_writes
    on_disk = torch.from_numpy(read_chunks(tmp_path / f"k{n_writes // 2}before" / "draws")[0])
    assert torch.equal(on_disk, job_single(tmp_path / "reference").samples())


def test_multichain_killed_at_every_write_resumes_bit_for_bit(tmp_path, monkeypatch):
    n_writes, tried = _check_every_write(tmp_path, monkeypatch, job_multi, _read_multi)
    TRIED["multi"] = tried
    assert tried == 2 * n_writes


SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[3])
    from pathlib import Path
    import test_runfolder_faults as t
    kill_at, count, real = int(sys.argv[2]), [0], os.replace
    def replace(src, dst):
        real(src, dst)
        count[0] += 1
        if count[0] == kill_at:
            os._exit(9)
    os.replace = replace
    t.job_single(Path(sys.argv[1]))
    """
)


@pytest.mark.parametrize("kill_at", [13])
def test_os_exit_at_a_write_in_a_subprocess(tmp_path, kill_at):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    folder = tmp_path / "run"
    rc = subprocess.run(
        [sys.executable, str(script), str(folder), str(kill_at), str(Path(__file__).parent)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ).returncode
    assert rc == 9
    got = _read_single(job_single(folder))
    ref = _read_single(job_single(tmp_path / "reference"))
    assert all(torch.equal(a, b) for a, b in zip(got, ref))


def test_zz_report_fault_counts(capsys):
    with capsys.disabled():
        print(f"\nfault injection cases: single {TRIED['single']}, multichain {TRIED['multi']}")
