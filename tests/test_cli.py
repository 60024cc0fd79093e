"""The ``bnn-mcmc`` command line: help, errors, sample/diagnose/compare, resume."""

import json
import os
import signal
import subprocess
import sys
import time

import arviz as az
import numpy as np
import pytest

from bnn_mcmc.cli import build_parser, main
from bnn_mcmc.config import load_config
from bnn_mcmc.datasets import regression_gap

TINY = """
[data]
name = "regression_gap"
n = 12
[network]
hidden = [4]
[likelihood]
noise_std = 0.3
[sampler]
type = "{sampler}"
warmup = {warmup}
draws = {draws}
{specific}
[run]
chains = 2
output_dir = "{out}"
checkpoint_every = 10
"""


def _write(tmp_path, name="run", sampler="nuts", warmup=60, draws=60, **extra):
    specific = "max_tree_depth = 5" if sampler == "nuts" else "num_steps = 8"
    text = TINY.format(sampler=sampler, warmup=warmup, draws=draws, out=name, specific=specific)
    for section, body in extra.items():
        text = text.replace(f"[{section}]", f"[{section}]\n{body}")
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _cli(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "bnn_mcmc.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def test_help_of_every_command_is_complete(capsys):
    parser = build_parser()
    for cmd, words in {
        None: ["demo", "sample", "diagnose", "compare", "--debug", "examples"],
        "demo": ["--out", "ChEES-HMC", "8", "tensorboard"],
        "sample": [
            "CONFIG.toml",
            "--resume",
            "--out",
            "[sampler]",
            "max_tree_depth",
            "scheduler_address",
            "nuts|hmc|mh",
        ],
        "diagnose": ["RUN_DIR", "--json", "--no-plots", "R-hat"],
        "compare": ["RUN_DIR", "--reference", "--markdown", "ELPD-LOO"],
    }.items():
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["--help"] if cmd is None else [cmd, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        for w in words:
            assert w in out, (cmd, w)


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\nname = "regression_gap"\n[sampler]\nkind = "nuts"\n')
    r = _cli("sample", str(bad))
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "sampler.kind: unknown key; allowed keys in [sampler]: type" in r.stderr
    debug = _cli("--debug", "sample", str(bad))
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert _cli("diagnose", str(tmp_path)).returncode == 1
    assert _cli("frobnicate").returncode == 2


def test_sample_diagnose_compare_end_to_end(tmp_path, capsys):
    assert main(["sample", str(_write(tmp_path, "nuts"))]) == 0
    out = capsys.readouterr().out
    assert "function space" in out and "divergences after warmup" in out
    run = tmp_path / "nuts"
    for f in (
        "inference_data.nc",
        "posterior_predictive.png",
        "trace_rank.png",
        "config.json",
        "summary.json",
    ):
        assert (run / f).is_file(), f
    assert any((run / "tensorboard" / "chain_1").iterdir())
    idata = az.from_netcdf(str(run / "inference_data.nc"))
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 60
    assert {
        "log_likelihood",
        "posterior_predictive",
        "observed_data",
        "predictions",
        "warmup_sample_stats",
    } <= set(idata.groups())
    az.loo(idata)  # pointwise log-likelihoods are usable

    # a second sample into the same folder is refused, naming --resume
    assert main(["sample", str(_write(tmp_path, "nuts"))]) == 1
    assert "--resume" in capsys.readouterr().err

    assert main(["diagnose", str(run), "--json", "--no-plots"]) == 0
    nums = json.loads(capsys.readouterr().out)
    assert nums["chains"] == 2 and nums["draws"] == 60 and "function_max_rhat" in nums

    assert main(["sample", str(_write(tmp_path, "hmc", sampler="hmc"))]) == 0
    capsys.readouterr()
    assert (
        main(["compare", str(run), str(tmp_path / "hmc"), "--reference", "nuts", "--markdown"]) == 0
    )
    table = capsys.readouterr().out
    assert "nuts" in table and "hmc" in table


def test_conjugate_linear_regression_through_a_csv_config(tmp_path, capsys):
    """hidden = [] is Bayesian linear regression: the CLI's posterior matches the closed form."""
    d = regression_gap(n=30, noise=0.3, seed=5)
    x, y = d.x[:, 0].double().numpy(), d.y[:, 0].double().numpy()
    lines = ["inp,out"] + [f"{a:.17g},{b:.17g}" for a, b in zip(x, y)]
    (tmp_path / "lin.csv").write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "lin.toml"
    cfg.write_text(
        '[data]\nname = "csv"\npath = "lin.csv"\ninputs = ["inp"]\ntargets = ["out"]\n'
        '[network]\nhidden = []\ndtype = "float64"\n[likelihood]\nnoise_std = 0.3\n'
        "[prior]\nscale = 2.0\n[sampler]\nwarmup = 200\ndraws = 500\n"
        '[run]\nchains = 2\noutput_dir = "lin"\ntensorboard = false\n'
    )
    assert main(["sample", str(cfg)]) == 0
    capsys.readouterr()
    idata = az.from_netcdf(str(tmp_path / "lin" / "inference_data.nc"))
    names = list(idata.posterior.data_vars)
    draws = np.concatenate(
        [idata.posterior[n].values.reshape(2, 500, -1) for n in names], axis=-1
    )  # (chain, draw, [w, b])
    design = np.stack([x, np.ones_like(x)], 1)
    precision = design.T @ design / 0.3**2 + np.eye(2) / 2.0**2
    cov = np.linalg.inv(precision)
    mean = cov @ design.T @ y / 0.3**2
    ess = az.ess(az.from_dict(posterior={"w": draws}))["w"].values
    mcse = np.sqrt(np.diag(cov) / ess)
    assert np.all(np.abs(draws.reshape(-1, 2).mean(0) - mean) < 4 * mcse)
    sd = draws.reshape(-1, 2).std(0)
    assert np.all(np.abs(sd / np.sqrt(np.diag(cov)) - 1) < 4 / np.sqrt(2 * ess))


def test_killed_run_resumes_to_the_same_draws(tmp_path):
    ref = _write(tmp_path, "ref", warmup=100, draws=150)
    killed = _write(tmp_path, "killed", warmup=100, draws=150)
    assert _cli("sample", str(ref)).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "bnn_mcmc.cli", "sample", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    chain0 = tmp_path / "killed" / "chains" / "chain_00"
    deadline = time.time() + 90
    while time.time() < deadline and not list(chain0.glob("draws/draws_*.npy")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "inference_data.nc").exists(), "killed too late"
    assert (chain0 / "checkpoint.pt").is_file(), "killed before the first checkpoint"
    r = _cli("sample", str(killed), "--resume")
    assert r.returncode == 0, r.stderr
    a = az.from_netcdf(str(tmp_path / "ref" / "inference_data.nc")).posterior
    b = az.from_netcdf(str(tmp_path / "killed" / "inference_data.nc")).posterior
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)


@pytest.mark.parametrize("backend", ["joblib", "dask", "vectorized"])
def test_backends_from_the_config(backend, tmp_path, capsys):
    """joblib and dask workers rebuild the potential from the config: same draws as in
    process; the vectorized backend agrees in distribution only, so it is checked to run."""
    extra = {"run": f'backend = "{backend}"\nnum_parallel = 2\ntensorboard = false'}
    seq = _write(tmp_path, "seq", warmup=30, draws=20, run="tensorboard = false")
    par = _write(tmp_path, backend, warmup=30, draws=20, **extra)
    assert main(["sample", str(seq)]) == 0
    assert main(["sample", str(par)]) == 0, capsys.readouterr().err
    a = az.from_netcdf(str(tmp_path / "seq" / "inference_data.nc")).posterior
    b = az.from_netcdf(str(tmp_path / backend / "inference_data.nc")).posterior
    assert b.sizes["chain"] == 2 and b.sizes["draw"] == 20
    if backend != "vectorized":
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values)


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_afresh(tmp_path, capsys):
    cfg = _write(tmp_path, "early", warmup=20, draws=10)
    ref = _write(tmp_path, "ref", warmup=20, draws=10)
    assert main(["sample", str(ref)]) == 0
    # what a kill right after the output folder was laid out leaves behind
    (tmp_path / "early" / "chains" / "chain_00").mkdir(parents=True)
    (tmp_path / "early" / "config.json").write_text(json.dumps(load_config(cfg).as_dict()))
    assert main(["sample", str(cfg), "--resume"]) == 0, capsys.readouterr().err
    a = az.from_netcdf(str(tmp_path / "ref" / "inference_data.nc")).posterior
    b = az.from_netcdf(str(tmp_path / "early" / "inference_data.nc")).posterior
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_demo_config_is_valid_and_matches_its_help(tmp_path):
    from bnn_mcmc.cli import DEMO_CONFIG
    from bnn_mcmc.config import from_dict

    cfg = from_dict(DEMO_CONFIG, tmp_path)
    assert cfg.sampler["type"] == "chees" and cfg.run["chains"] == 8
    assert cfg.run["backend"] == "vectorized"
    assert cfg.data["name"] == "regression_gap" and cfg.network["hidden"] == [20, 20]
    assert cfg.sampler["warmup"] > 0 and cfg.run["tensorboard"]


def test_demo_refuses_a_folder_holding_a_run(tmp_path, capsys):
    (tmp_path / "chains").mkdir()
    assert main(["demo", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--out" in err and "--resume" not in err


def _chees_config(tmp_path, name):
    text = TINY.format(sampler="chees", warmup=30, draws=25, out=name, specific="")
    text = text.replace("checkpoint_every = 10", 'checkpoint_every = 10\nbackend = "vectorized"')
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_chees_from_a_config_resumes_bit_for_bit(tmp_path, capsys, monkeypatch):
    """sampler.type = 'chees' runs the lockstep ensemble, checkpoints it in the output folder
    and, killed after a checkpoint, resumes to the draws of an uninterrupted run."""
    from bnn_mcmc.cli import lockstep_run

    assert main(["sample", str(_chees_config(tmp_path, "ref"))]) == 0
    out = capsys.readouterr().out
    assert "ChEES-HMC (2 chains in lockstep)" in out and "function space" in out
    assert any((tmp_path / "ref" / "tensorboard" / "chain_1").iterdir())

    saves = []
    real_save = lockstep_run.save_ensemble

    def save_then_die(ensemble, folder):
        real_save(ensemble, folder)
        saves.append(len(ensemble.trace.draws))
        if len(saves) == 2:  # after warmup and after the first 10 draws
            raise KeyboardInterrupt

    monkeypatch.setattr(lockstep_run, "save_ensemble", save_then_die)
    cut = _chees_config(tmp_path, "cut")
    assert main(["sample", str(cut)]) == 130
    assert saves == [0, 10] and not (tmp_path / "cut" / "inference_data.nc").exists()
    monkeypatch.setattr(lockstep_run, "save_ensemble", real_save)
    assert main(["sample", str(cut), "--resume"]) == 0, capsys.readouterr().err
    a = az.from_netcdf(str(tmp_path / "ref" / "inference_data.nc"))
    b = az.from_netcdf(str(tmp_path / "cut" / "inference_data.nc"))
    assert a.posterior.sizes["draw"] == 25
    for name in a.posterior.data_vars:
        np.testing.assert_array_equal(a.posterior[name].values, b.posterior[name].values)
    np.testing.assert_array_equal(a.sample_stats["lp"].values, b.sample_stats["lp"].values)


def test_chees_config_errors_name_the_fix(tmp_path, capsys):
    path = _chees_config(tmp_path, "seq")
    path.write_text(path.read_text().replace('backend = "vectorized"', ""))
    assert main(["sample", str(path)]) == 1
    assert "run.backend = 'vectorized'" in capsys.readouterr().err
    path.write_text(path.read_text().replace("[sampler]", "[sampler]\nmax_tree_depth = 4"))
    assert main(["sample", str(path)]) == 1
    assert "max_tree_depth: only used with sampler.type = 'nuts'" in capsys.readouterr().err
