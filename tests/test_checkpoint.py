"""Checkpoints, streaming and resuming: a SIGKILLed run resumes to the same draws, bit for bit."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from bnn_mcmc import NUTS
from bnn_mcmc.multichain import MultiChainHMC
from bnn_mcmc.samplers import Sampler
from bnn_mcmc.storage import read_chunks


def gauss(w):
    return 0.5 * (w**2).sum()


SCRIPT = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from bnn_mcmc.multichain import MultiChainHMC
    def gauss(w):
        return 0.5 * (w ** 2).sum()
    m = MultiChainHMC(torch.zeros(2, 3), gauss, "nuts", seed=11, output_dir=sys.argv[1],
                      checkpoint_every=10, chunk_size=8)
    m.warmup(60)
    m.simulate_chains(int(sys.argv[2]))
    """
)


def reference(num_states):
    m = MultiChainHMC(torch.zeros(2, 3), gauss, "nuts", seed=11)
    m.warmup(60)
    m.simulate_chains(num_states)
    return m


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    n = 1500
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(n)])
    index = out / "chain_00" / "draws" / "index.json"
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until sampling has written some chunks
        if index.exists() and read_chunks(index.parent)[0].shape[0] >= 40:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial, _ = read_chunks(index.parent)  # readable after the crash
    assert 40 <= partial.shape[0] < n
    resumed = MultiChainHMC.resume(out, gauss)
    ref = reference(n)
    assert torch.equal(resumed.samples(), ref.samples())
    for k, v in ref.chains[1].stats.items():
        assert torch.equal(resumed.chains[1].stats[k], v), k
    assert torch.equal(resumed.chains[0].warmup_trajectory, ref.chains[0].warmup_trajectory)


def test_single_chain_resume_and_memory_bound(tmp_path):
    ref = NUTS(torch.zeros(3), gauss, seed=2)
    ref.warmup(50)
    ref.simulate_chain(100)
    run = NUTS(torch.zeros(3), gauss, seed=2)
    run.configure_output(tmp_path / "a", checkpoint_every=25, chunk_size=16)
    run.warmup(50)
    run.simulate_chain(100)
    assert len(run._draws._blocks) <= 1  # only the current chunk is in memory
    assert torch.equal(run.samples(), ref.samples())
    # take a mid-run checkpoint, as a killed process would leave it, and resume it
    mid = NUTS(torch.zeros(3), gauss, seed=2)
    mid.configure_output(tmp_path / "b", checkpoint_every=1000)
    mid.warmup(50)
    mid.simulate_chain(37)
    mid._pending_sampling = 63
    mid.save_checkpoint()
    resumed = Sampler.resume(tmp_path / "b", gauss)
    assert isinstance(resumed, NUTS)
    assert torch.equal(resumed.samples(), ref.samples())
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert {"position", "potential", "grad", "generator", "metric", "step_size"} <= set(state)
    with pytest.raises(ValueError, match="device-specific"):
        Sampler.resume(tmp_path / "b", gauss, device="meta")


def test_output_dir_is_not_overwritten(tmp_path):
    m = MultiChainHMC(torch.zeros(2, 2), gauss, "hmc", seed=0, output_dir=tmp_path / "r")
    m.simulate_chains(5)
    with pytest.raises(ValueError, match="already holds a run"):
        MultiChainHMC(torch.zeros(2, 2), gauss, "hmc", seed=0, output_dir=tmp_path / "r")
    with pytest.raises(ValueError, match="checkpoint_every needs an output_dir"):
        MultiChainHMC(torch.zeros(2, 2), gauss, "hmc", checkpoint_every=5)
