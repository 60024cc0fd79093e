"""Run folders of single chains (issue 16): relocatable, confined, verified, named errors.

Tiny Gaussian targets and a few dozen transitions: the tests are about files, not statistics;
every resumed run is compared bit for bit with an uninterrupted one.
"""

import errno
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bnn_mcmc import HMC, NUTS, MetropolisHastings
from bnn_mcmc.runfolder import (
    DamagedRunError,
    RunFolderWriteError,
    SettingsMismatchError,
    atomic_write,
    confine,
)
from bnn_mcmc.samplers import Sampler
from bnn_mcmc.storage import read_chunks

#: Adversarial cases tried by this file (counted for the report): name -> handled.
CASES: dict[str, bool] = {}


def gauss(w):
    return 0.5 * (w**2).sum()


def shifted(w):
    return 0.5 * ((w - 1.0) ** 2).sum()


def start():
    return torch.full((3,), 0.5, dtype=torch.float64)


def new_run(folder, cls=HMC, seed=3, **kwargs):
    s = cls(start(), gauss, seed=seed, **kwargs)
    s.configure_output(folder, checkpoint_every=7, chunk_size=4)
    return s


def reference(cls=HMC, n_warm=10, n=30, **kwargs):
    s = cls(start(), gauss, seed=3, **kwargs)
    s.warmup(n_warm)
    s.simulate_chain(n)
    return s.samples()


class Stop(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way catches it."""


def _evals_of_reference(cls, **kwargs) -> int:
    calls = {"n": 0}

    def counting(w):
        calls["n"] += 1
        return gauss(w)

    s = cls(start(), counting, seed=3, **kwargs)
    s.warmup(10)
    s.simulate_chain(30)
    return calls["n"]


def interrupted_run(folder, monkeypatch=None, cls=HMC, fraction=0.6, **kwargs):
    """A run of 10 warmup + 30 draws killed after ``fraction`` of its potential evaluations."""
    limit = int(fraction * _evals_of_reference(cls, **kwargs))
    calls = {"n": 0}

    def counting(w):
        calls["n"] += 1
        if calls["n"] > limit:
            raise Stop
        return gauss(w)

    s = cls(start(), counting, seed=3, **kwargs)
    s.configure_output(folder, checkpoint_every=7, chunk_size=4)
    with pytest.raises(Stop):
        s.warmup(10)
        s.simulate_chain(30)
    assert (Path(folder) / "checkpoint.pt").exists()
    return s


@pytest.mark.parametrize("how", ["move", "copy", "relative_cwd"])
def test_resume_of_moved_copied_or_relative_folder_writes_only_inside_it(
    tmp_path, monkeypatch, how
):
    ref = reference()
    first = tmp_path / "a" / "run"
    first.parent.mkdir()
    monkeypatch.chdir(first.parent)
    interrupted_run(Path("run") if how == "relative_cwd" else first)
    before = sorted(p.relative_to(first) for p in first.rglob("*"))
    snapshot = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    if how == "move":
        target = tmp_path / "b" / "moved"
        target.parent.mkdir()
        shutil.move(str(first), target)
        monkeypatch.chdir(tmp_path)
        s = Sampler.resume(target, gauss)
    elif how == "copy":
        target = tmp_path / "copy"
        shutil.copytree(first, target)
        s = HMC.resume(target, gauss)
        assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == snapshot
    else:
        target = first
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        s = HMC.resume(Path("..") / "a" / "run", gauss)
        assert list((tmp_path / "elsewhere").iterdir()) == []
    assert torch.equal(s.samples(), ref)
    assert torch.equal(torch.from_numpy(read_chunks(target / "draws")[0]), ref)
    assert before  # the interrupted run had written files
    if how == "move":
        assert not first.exists()  # the old place is not recreated
    text = b"".join(p.read_bytes() for p in target.rglob("*.json"))
    assert str(tmp_path).encode() not in text  # no absolute path recorded
    CASES[f"resume after {how}"] = True


def test_resume_detects_another_potential_and_force_overrides(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    interrupted_run(folder, monkeypatch)
    with pytest.raises(SettingsMismatchError, match="potential passed to resume") as err:
        HMC.resume(folder, shifted)
    assert "force=True" in str(err.value) and "checkpoint.pt" in str(err.value)
    s = HMC.resume(folder, shifted, force=True)
    assert s.samples().shape == (30, 3)
    CASES["another potential"] = CASES["force=True"] = True


def test_resume_refuses_arguments_it_cannot_honour(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    interrupted_run(folder, monkeypatch)
    for bad in ({"stepsize": 0.1}, {"num_steps": 5}, {"seed": 1}):
        with pytest.raises(TypeError, match="cannot honour"):
            HMC.resume(folder, gauss, **bad)
        CASES[f"resume({next(iter(bad))}=)"] = True


def test_manifest_mismatch_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    interrupted_run(folder, monkeypatch)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["dim"] = 4
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SettingsMismatchError, match="dim: manifest 4, found 3"):
        HMC.resume(folder, gauss)
    CASES["edited manifest"] = True


# ------------------------------------------------------------------ confinement
def test_confine_refuses_absolute_parent_and_escaping_links(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "outside.npy").write_bytes(b"x")
    os.symlink(tmp_path / "outside.npy", run / "link.npy")
    for name in ("../outside.npy", str(tmp_path / "outside.npy"), "a/../../x", "", 3):
        with pytest.raises(DamagedRunError, match="index.json"):
            confine(run, name, "index.json")
    with pytest.raises(DamagedRunError, match="symbolic link"):
        confine(run, "link.npy", "index.json")
    assert confine(run, "draws_000000.npy", "index.json") == run / "draws_000000.npy"
    CASES.update({"traversal ..": True, "absolute name": True, "escaping symlink": True})


def test_read_chunks_and_clear_refuse_names_outside_the_run(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    s = new_run(folder)
    s.simulate_chain(12)
    victim = tmp_path / "victim.npy"
    np.save(victim, np.zeros((4, 3)))
    index_path = folder / "draws" / "index.json"
    index = json.loads(index_path.read_text())
    for name in ("../../victim.npy", str(victim)):
        edited = json.loads(json.dumps(index))
        edited["chunks"][0]["draws"]["file"] = name
        index_path.write_text(json.dumps(edited))
        with pytest.raises(DamagedRunError, match="index.json"):
            read_chunks(folder / "draws")
    # the same names in the checkpoint: resume refuses, nothing outside is deleted
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
    ckpt["draws"]["chunks"][0]["draws"]["file"] = "../../victim.npy"
    torch.save(ckpt, folder / "checkpoint.pt")
    with pytest.raises(DamagedRunError, match="leaves the run folder"):
        HMC.resume(folder, gauss)
    assert victim.exists()
    CASES["read outside via index"] = CASES["delete outside via checkpoint"] = True


@pytest.mark.parametrize("name", ["checkpoint.pt.tmp", "index.json.tmp", "manifest.json.tmp"])
def test_atomic_writes_never_follow_a_planted_link(tmp_path, name):
    folder = tmp_path / "run"
    s = new_run(folder)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    for where in (folder, folder / "draws"):
        link = where / name
        link.unlink(missing_ok=True)
        os.symlink(target, link)
    s.simulate_chain(15)
    s.save_checkpoint()
    assert target.read_text() == "keep me"
    # a link planted at the target itself is replaced, not written through
    (folder / "checkpoint.pt").unlink()
    os.symlink(target, folder / "checkpoint.pt")
    s.save_checkpoint()
    assert target.read_text() == "keep me" and not (folder / "checkpoint.pt").is_symlink()
    CASES[f"symlink at {name}"] = True


# ------------------------------------------------------------------ chunk integrity
def _damage(folder, how):
    draws = folder / "draws"
    index = json.loads((draws / "index.json").read_text())
    chunk = draws / index["chunks"][0]["draws"]["file"]
    if how == "short":
        np.save(chunk, np.load(chunk)[:-1])
    elif how == "flipped":
        data = bytearray(chunk.read_bytes())
        data[-3] ^= 0x10
        chunk.write_bytes(bytes(data))
    elif how == "retyped":
        np.save(chunk, np.load(chunk).astype(np.float32))
    elif how == "retyped_index":
        index["dtype"] = "float32"
        (draws / "index.json").write_text(json.dumps(index))
    elif how == "rows_edited":
        index["chunks"][0]["rows"] = 3
        (draws / "index.json").write_text(json.dumps(index))
    elif how == "missing":
        chunk.unlink()
    elif how == "truncated_index":
        text = (draws / "index.json").read_text()
        (draws / "index.json").write_text(text[: len(text) // 2])
    return chunk


@pytest.mark.parametrize(
    "how",
    ["short", "flipped", "retyped", "retyped_index", "rows_edited", "missing", "truncated_index"],
)
def test_damaged_chunks_are_detected_and_named(tmp_path, how):
    folder = tmp_path / "run"
    s = new_run(folder)
    s.simulate_chain(12)
    chunk = _damage(folder, how)
    with pytest.raises(DamagedRunError) as err:
        read_chunks(folder / "draws")
    in_index = how in ("retyped_index", "rows_edited", "truncated_index")
    named = "index.json" if in_index else chunk.name
    assert named in str(err.value)
    with pytest.raises(DamagedRunError):
        s.samples()
    CASES[f"chunk {how}"] = True


# ------------------------------------------------------------------ damaged checkpoints
def _pickled_object(path):
    import pickle

    path.write_bytes(pickle.dumps(Path("/etc/passwd")))


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "empty",
        "garbage",
        "pickle",
        "wrong_keys",
        "not_dict",
        "nan_step",
        "negative_step",
        "bad_mass",
        "nan_mass",
        "dense_not_pd",
        "bad_position",
    ],
)
def test_damaged_checkpoints_give_an_error_naming_the_file(tmp_path, monkeypatch, how):
    folder = tmp_path / "run"
    interrupted_run(folder, monkeypatch)
    path = folder / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(3000))
    elif how == "pickle":
        _pickled_object(path)
    else:
        if how == "wrong_keys":
            state = {"position": state["position"]}
        elif how == "not_dict":
            state = [1, 2, 3]
        elif how == "nan_step":
            state["step_size"] = math.nan
        elif how == "negative_step":
            state["step_size"] = -0.1
        elif how == "bad_mass":
            state["metric"] = {"kind": "diag", "inv_mass": torch.tensor([1.0, -1.0, 1.0])}
        elif how == "nan_mass":
            state["metric"] = {"kind": "scalar", "inv_mass": math.nan}
        elif how == "dense_not_pd":
            state["metric"] = {"kind": "dense", "inv_mass": -torch.eye(3, dtype=torch.float64)}
        elif how == "bad_position":
            state["position"] = torch.full((3,), math.inf, dtype=torch.float64)
        torch.save(state, path)
    with pytest.raises(DamagedRunError) as err:
        HMC.resume(folder, gauss)
    text = str(err.value)
    assert str(path) in text and "restore" in text
    assert "weights_only=False" not in text
    CASES[f"checkpoint {how}"] = True


# ------------------------------------------------------------------ full disk
def _try_tmpfs(where: Path) -> bool:
    where.mkdir()
    rc = os.system(f"mount -t tmpfs -o size=96k tmpfs {where} 2>/dev/null")
    return rc == 0


def test_disk_full_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    s = new_run(folder)
    s.simulate_chain(8)
    old = (folder / "checkpoint.pt").read_bytes()
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(RunFolderWriteError) as err:
        s.save_checkpoint()
    monkeypatch.setattr(os, "write", real_write)
    text = str(err.value)
    assert "checkpoint.pt" in text and "ENOSPC" in text and "free disk space" in text
    assert str(folder) in text and err.value.errno == errno.ENOSPC
    assert (folder / "checkpoint.pt").read_bytes() == old
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    CASES["disk full (monkeypatched ENOSPC)"] = True


def test_disk_full_on_a_real_small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    if not _try_tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        s = HMC(torch.zeros(2000, dtype=torch.float64), gauss, seed=0, num_steps=1)
        s.configure_output(mnt / "run", checkpoint_every=5, chunk_size=4)
        with pytest.raises(RunFolderWriteError, match="free disk space"):
            s.simulate_chain(200)
    finally:
        os.system(f"umount {mnt}")
    CASES["disk full (tmpfs)"] = True


def test_atomic_write_error_leaves_no_temporary_file(tmp_path):
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    try:
        if os.access(tmp_path / "ro", os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(RunFolderWriteError, match="ro/x.json"):
            atomic_write(tmp_path / "ro" / "x.json", b"{}")
    finally:
        os.chmod(tmp_path / "ro", 0o700)


# ------------------------------------------------------------------ item 7 input checks
@pytest.mark.parametrize("seed", [-1, 2**63, 2**70])
def test_seed_range_is_one_rule(seed):
    from bnn_mcmc.multichain import MultiChainHMC

    with pytest.raises(ValueError, match=r"seed must lie in \[0, 2\*\*63\)"):
        HMC(start(), gauss, seed=seed)
    with pytest.raises(ValueError, match=r"seed must lie in \[0, 2\*\*63\)"):
        MultiChainHMC([start(), start()], gauss, seed=seed)
    CASES[f"seed={seed}"] = True


def test_sampler_argument_gaps_are_closed():
    with pytest.raises(ValueError, match="max_tree_depth must be <= 30"):
        NUTS(start(), gauss, max_tree_depth=10**6)
    for bad in (-1.0, "0.5", math.inf, torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)):
        with pytest.raises((TypeError, ValueError), match="proposal_std"):
            MetropolisHastings(start(), gauss, proposal_std=bad)
    s = HMC(start(), gauss, seed=0)
    for bad in (-0.1, math.nan, "x"):
        with pytest.raises((TypeError, ValueError), match="step_size"):
            s.step_size = bad
    s.step_size = 0.25
    assert s.stepsize == 0.25
    CASES.update({"max_tree_depth=1e6": True, "proposal_std bad": True, ".step_size=": True})


def test_multichain_starts_and_chain_indices():
    from bnn_mcmc.multichain import MultiChainHMC

    with pytest.raises(ValueError, match="same length; got lengths \\[3, 4\\]"):
        MultiChainHMC([start(), torch.zeros(4, dtype=torch.float64)], gauss)
    m = MultiChainHMC([start(), start()], gauss, seed=0)
    with pytest.raises(ValueError, match="distinct chain indices"):
        m.simulate_chains(2, num_chains=[True])
    CASES["starts of different lengths"] = CASES["num_chains=[True]"] = True


def test_nn_pot_energy_integer_inputs_and_infinite_temperature():
    from bnn_mcmc.bnn import MLP, nn_pot_energy

    net = MLP(n_in=1, n_out=1, hidden_layers=(3,))
    x = torch.arange(5).unsqueeze(1)
    y = torch.zeros(5, 1)
    with pytest.raises(TypeError, match="inputs must be a floating tensor, got torch.int64"):
        nn_pot_energy(net, x, y)
    with pytest.raises(ValueError, match="temperature must be positive and finite"):
        nn_pot_energy(net, x.float(), y, temperature=math.inf)
    with pytest.raises(TypeError, match="targets of a real-valued likelihood"):
        nn_pot_energy(net, x.float(), y.long())
    CASES["int64 inputs"] = CASES["int64 targets"] = CASES["temperature=inf (API)"] = True


def test_batched_potential_that_disagrees_is_caught_at_start():
    from bnn_mcmc.multichain import MultiChainHMC

    def wrong(w):
        return 0.5 * (w**2).sum(-1) + 1.0

    m = MultiChainHMC(
        [start(), start()], gauss, seed=0, backend="vectorized", batched_pot_energy_func=wrong
    )
    with pytest.raises(ValueError, match="batched_pot_energy_func disagrees"):
        m.simulate_chains(2)
    ok = MultiChainHMC(
        [start(), start()],
        gauss,
        seed=0,
        backend="vectorized",
        batched_pot_energy_func=lambda w: 0.5 * (w**2).sum(-1),
    )
    ok.simulate_chains(2)
    CASES["batched potential disagrees"] = True


@pytest.mark.parametrize(
    "section,key,value",
    [
        ("likelihood", "temperature", "inf"),
        ("likelihood", "noise_std", "nan"),
        ("prior", "scale", "inf"),
        ("run", "seed", "-1"),
        ("data", "seed", "-1"),
        ("sampler", "max_tree_depth", "1000000"),
    ],
)
def test_toml_rejects_non_finite_values_and_negative_seeds(tmp_path, section, key, value):
    from bnn_mcmc.config import ConfigError, load_config

    extra = '\ntype = "nuts"' if section == "sampler" else ""
    lines = '[data]\nname = "cubic"\n' if section != "data" else ""
    body = f"{lines}[{section}]\n{key} = {value}{extra}\n"
    if section == "data":
        body = f'[data]\nname = "cubic"\n{key} = {value}\n'
    path = tmp_path / "run.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        load_config(path)
    CASES[f"toml {section}.{key}={value}"] = True


def test_zz_report_case_count(capsys):
    """Prints the number of adversarial cases tried and handled (for the issue's note)."""
    with capsys.disabled():
        print(f"\nrunfolder cases handled: {sum(CASES.values())}/{len(CASES)}")
