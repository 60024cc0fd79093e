"""One run report: ``summary()`` and ``bnn-mcmc diagnose`` print the same numbers."""

import json

import arviz as az
import numpy as np
import pytest
import torch

from bnn_mcmc import HMC
from bnn_mcmc.cli import main
from bnn_mcmc.diagnostics import THRESHOLDS, run_report
from bnn_mcmc.diagnostics.summary import summary
from bnn_mcmc.multichain import MultiChainHMC

SCALES = torch.tensor([1.0, 2.0, 0.5])
A = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]])


def potential(w):
    return 0.5 * ((w / SCALES) ** 2).sum()


def function(draws):
    """A 'network output' at two inputs: linear in the weights."""
    return draws @ A


@pytest.fixture(scope="module", params=["hmc", "nuts"])
def run(request):
    kwargs = {"num_steps": 5} if request.param == "hmc" else {"max_tree_depth": 4}
    m = MultiChainHMC(torch.zeros(2, 3), potential, request.param, seed=3, **kwargs)
    m.warmup(60)
    m.simulate_chains(80)
    return m


def _saved_run(run, tmp_path):
    idata = run.to_inference_data()
    draws = np.stack([c.samples().numpy() for c in run.chains])
    idata.add_groups({"predictions": {"f": draws @ A.numpy()}})
    idata.to_netcdf(str(tmp_path / "inference_data.nc"))
    return tmp_path


def test_summary_and_diagnose_print_the_same_report(run, tmp_path, capsys):
    rep = summary(run, function=function)
    folder = _saved_run(run, tmp_path)
    assert main(["diagnose", str(folder), "--no-plots"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(rep)
    assert main(["diagnose", str(folder), "--json", "--no-plots"]) == 0
    nums = json.loads(capsys.readouterr().out)
    ours = rep.to_dict()
    for key, value in nums.items():
        if key in ("warnings", "notes") or value is None:
            assert ours[key] == value, key
        else:
            np.testing.assert_allclose(ours[key], value, rtol=1e-12, err_msg=key)
    assert "function space" in printed and "log density (lp)" in printed


def test_acceptance_is_read_from_sample_stats(run):
    rep = summary(run)
    stats = run.to_inference_data().sample_stats
    np.testing.assert_allclose(rep.acceptance, stats["acceptance_rate"].mean("draw").values)
    if "accepted" in stats:  # HMC: the fraction of accepted proposals is reported beside it
        np.testing.assert_allclose(
            rep.accepted_fraction, [c.acceptance_probability for c in run.chains]
        )
        assert "accepted proposals per chain" in str(rep)
    else:  # NUTS: acceptance_probability is the mean statistic itself
        np.testing.assert_allclose(rep.acceptance, [c.acceptance_probability for c in run.chains])
        assert rep.accepted_fraction is None
    np.testing.assert_allclose(rep.ebfmi, az.bfmi(run.to_inference_data()))
    assert rep.lp is not None and np.isfinite(rep.lp.min_ess_tail)


def _fake(means, energy=None, n=400, seed=0):
    rng = np.random.default_rng(seed)
    post = rng.normal(size=(len(means), n, 2)) + np.asarray(means)[:, None, None]
    stats = {"lp": -0.5 * (post**2).sum(-1), "acceptance_rate": np.full((len(means), n), 0.8)}
    if energy is not None:
        stats["energy"] = energy
    return az.from_dict(posterior={"w": post}, sample_stats=stats)


def test_thresholds_raise_the_warnings():
    quiet = run_report(_fake([0.0, 0.0], energy=np.random.default_rng(1).normal(size=(2, 400))))
    assert quiet.warnings == [] and quiet.weights.max_rhat < THRESHOLDS.rhat
    apart = run_report(_fake([0.0, 3.0]))
    assert any("R-hat" in w for w in apart.warnings)
    walk = np.cumsum(np.random.default_rng(2).normal(size=(2, 400)), axis=1)  # E-BFMI ~ 0
    assert any("E-BFMI" in w for w in run_report(_fake([0.0, 0.0], energy=walk)).warnings)
    few = run_report(_fake([0.0, 0.0], n=60))
    assert any("ESS" in w for w in few.warnings)


def test_single_chain_summary_and_missing_posterior():
    s = HMC(torch.zeros(3), potential, seed=0, num_steps=3)
    s.simulate_chain(30)
    rep = s.summary()
    assert rep.num_chains == 1 and len(rep.acceptance) == 1 and rep.table.shape[0] == 3
    with pytest.raises(ValueError, match="posterior"):
        run_report(az.from_dict(sample_stats={"lp": np.zeros((1, 5))}))
