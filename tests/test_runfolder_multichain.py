"""Run folders of MultiChainHMC and of the CLI (issue 16): relocatable, checked, consistent.

Tiny Gaussian targets, two or three chains and a handful of draws; resumed runs are compared
bit for bit with uninterrupted ones.
"""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from bnn_mcmc.multichain import MultiChainHMC
from bnn_mcmc.multichain.executors import ChainError
from bnn_mcmc.multichain.runlog import IncompleteRunError
from bnn_mcmc.runfolder import DamagedRunError, RunFolderWriteError, SettingsMismatchError
from bnn_mcmc.storage import read_chunks


class Killed(BaseException):
    """A kill: escapes every ``except Exception``."""


def gauss(w):
    return 0.5 * (w**2).sum()


def shifted(w):
    return 0.5 * ((w - 1.0) ** 2).sum()


def starts(n=3):
    return [torch.full((2,), 0.2 * (i + 1), dtype=torch.float64) for i in range(n)]


OPTIONS = {"checkpoint_every": 3, "chunk_size": 4, "stepsize": 0.3, "num_steps": 2}


def new_run(folder, n=3, chain_type="hmc"):
    return MultiChainHMC(starts(n), gauss, chain_type, seed=7, output_dir=folder, **OPTIONS)


def reference(folder, n=3):
    m = MultiChainHMC(starts(n), gauss, "hmc", seed=7, output_dir=folder, **OPTIONS)
    m.warmup(5)
    m.simulate_chains(6)
    return m.samples()


def kill_at_write(monkeypatch, k):
    """Stop the process (a BaseException) just before the ``k``-th atomic rename."""
    real, count = os.replace, {"n": 0}

    def replace(src, dst):
        count["n"] += 1
        if count["n"] == k:
            raise Killed
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return real


def interrupted(folder, monkeypatch, k=40):
    real = kill_at_write(monkeypatch, k)
    with pytest.raises(Killed):
        m = new_run(folder)
        m.warmup(5)
        m.simulate_chains(6)
    monkeypatch.setattr(os, "replace", real)


@pytest.mark.parametrize("how", ["move", "copy", "relative_cwd"])
def test_moved_copied_relative_multichain_run_resumes_in_the_folder_given(
    tmp_path, monkeypatch, how
):
    ref = reference(tmp_path / "reference")
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    first = tmp_path / "a" / "run"
    interrupted(Path("run") if how == "relative_cwd" else first, monkeypatch)
    original = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    if how == "move":
        target = tmp_path / "b"
        shutil.move(str(first), target)
    elif how == "copy":
        target = tmp_path / "copy"
        shutil.copytree(first, target)
    else:
        target = first
        (tmp_path / "other").mkdir()
        monkeypatch.chdir(tmp_path / "other")
    m = MultiChainHMC.resume(Path("../a/run") if how == "relative_cwd" else target, gauss)
    if json.loads((target / "multichain.json").read_text())["calls"][-1]["kind"] == "warmup":
        m.simulate_chains(6)
    assert torch.equal(m.samples(), ref)
    for i in range(3):
        disk = torch.from_numpy(read_chunks(target / f"chain_{i:02d}" / "draws")[0])
        assert torch.equal(disk, ref[i])
    if how == "move":
        assert not first.exists()
    if how == "copy":
        assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == original
    if how == "relative_cwd":
        assert list((tmp_path / "other").iterdir()) == []


def test_kill_between_the_first_per_chain_checkpoints_resumes_or_restarts(tmp_path, monkeypatch):
    ref = reference(tmp_path / "reference")
    # the 2nd chain's checkpoint of the first call (k found by counting the writes)
    folder = tmp_path / "run"
    real = kill_at_write(monkeypatch, 10**9)
    new_run(tmp_path / "count")
    monkeypatch.setattr(os, "replace", real)
    created = len(list((tmp_path / "count").rglob("*.json"))) + 3  # + 3 initial checkpoints
    for k in range(1, created + 6):
        folder = tmp_path / f"k{k}"
        real = kill_at_write(monkeypatch, k)
        with pytest.raises(Killed):
            m = new_run(folder)
            m.warmup(5)
        monkeypatch.setattr(os, "replace", real)
        try:
            m = MultiChainHMC.resume(folder, gauss)
        except (FileNotFoundError, IncompleteRunError) as err:
            assert "nothing was sampled" in str(err) or "not found" in str(err)
            m = new_run(folder)  # a creation that never committed is replaced
            m.warmup(5)
        if not json.loads((folder / "multichain.json").read_text())["calls"]:
            m.warmup(5)
        m.simulate_chains(6)
        assert torch.equal(m.samples(), ref), k


def test_another_potential_is_detected_and_force_continues(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    interrupted(folder, monkeypatch)
    with pytest.raises(SettingsMismatchError, match="chain_00.*not the one of the run"):
        MultiChainHMC.resume(folder, shifted)
    m = MultiChainHMC.resume(folder, shifted, force=True)
    assert m.num_chains == 3


@pytest.mark.parametrize(
    "edit,match",
    [
        ({"num_chains": 1}, "one entry per chain"),
        ({"num_chains": 1, "seeds": [1], "devices": ["cpu"]}, "records 1 chain"),
        ({"num_chains": 5}, "one entry per chain"),
        ({"num_chains": 5, "seeds": [1] * 5, "devices": ["cpu"] * 5}, "records 5 chain"),
        ({"chain_type": "nuts"}, "holds a HMC chain but"),
        ({"chain_type": "slice"}, "is not one of"),
        ({"seeds": [-1, 2, 3]}, "seeds must be ints"),
        ({"committed": False}, "nothing was sampled"),
    ],
)
def test_edited_multichain_json_is_refused(tmp_path, monkeypatch, edit, match):
    folder = tmp_path / "run"
    interrupted(folder, monkeypatch)
    meta = json.loads((folder / "multichain.json").read_text())
    meta.update(edit)
    (folder / "multichain.json").write_text(json.dumps(meta))
    with pytest.raises((DamagedRunError, SettingsMismatchError), match=match):
        MultiChainHMC.resume(folder, gauss)


def test_mixed_chain_folders_are_refused(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    interrupted(folder, monkeypatch)
    other = MultiChainHMC(
        [torch.zeros(3, dtype=torch.float64)] * 3,
        gauss,
        seed=1,
        output_dir=tmp_path / "o",
        **OPTIONS,
    )
    assert other.num_chains == 3
    shutil.rmtree(folder / "chain_01")
    shutil.copytree(tmp_path / "o" / "chain_01", folder / "chain_01")
    with pytest.raises(SettingsMismatchError, match="dim"):
        MultiChainHMC.resume(folder, gauss)


def test_disk_full_in_a_multichain_run_names_the_file_and_keeps_memory_equal_to_disk(
    tmp_path, monkeypatch
):
    folder = tmp_path / "run"
    m = new_run(folder)
    m.warmup(5)
    real = os.write
    count = {"n": 0}

    def write(fd, data):
        count["n"] += 1
        if count["n"] > 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises((ChainError, RunFolderWriteError)) as err:
        m.simulate_chains(6)
    monkeypatch.setattr(os, "write", real)
    text = str(err.value)
    assert "ENOSPC" in text and "free disk space" in text and str(folder) in text
    for i, chain in enumerate(m.chains):  # memory equals the last checkpoint on disk
        saved = torch.load(folder / f"chain_{i:02d}" / "checkpoint.pt", weights_only=True)
        assert chain.num_states == saved["counters"]["num_transitions"]
        assert torch.equal(chain.position, saved["position"])
    resumed = MultiChainHMC.resume(folder, gauss)
    assert torch.equal(resumed.samples(), reference(tmp_path / "reference"))


# ------------------------------------------------------------------ the CLI
TOML = """
[data]
name = "cubic"
n = 8

[network]
hidden = [3]
dtype = "float64"

[sampler]
type = "hmc"
warmup = 4
draws = 5
num_steps = 2

[run]
chains = 2
seed = 1
output_dir = "out"
checkpoint_every = 2
tensorboard = false
"""


def _cli_run(toml: Path, resume: bool):
    from bnn_mcmc.cli.engine import run_chains
    from bnn_mcmc.cli.problem import build_problem
    from bnn_mcmc.config import load_config

    cfg = load_config(toml)
    return run_chains(cfg, build_problem(cfg), resume=resume)


@pytest.mark.parametrize("how", ["move", "copy"])
def test_cli_project_moved_or_copied_resumes_in_place(tmp_path, monkeypatch, how):
    ref_project = tmp_path / "ref"
    ref_project.mkdir()
    (ref_project / "run.toml").write_text(TOML)
    ref = _cli_run(ref_project / "run.toml", False).samples()
    project = tmp_path / "p"
    project.mkdir()
    (project / "run.toml").write_text(TOML)
    real = kill_at_write(monkeypatch, 30)
    with pytest.raises(Killed):
        _cli_run(project / "run.toml", False)
    monkeypatch.setattr(os, "replace", real)
    original = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    target = tmp_path / "moved"
    (shutil.move if how == "move" else shutil.copytree)(str(project), str(target))
    monkeypatch.chdir(tmp_path)
    mc = _cli_run(target / "run.toml", True)
    assert torch.equal(mc.samples(), ref)
    assert (target / "out" / "timing.json").exists()
    if how == "move":
        assert not project.exists()
    else:
        assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file()} == original
