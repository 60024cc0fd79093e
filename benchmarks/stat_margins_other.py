"""Margins of the other statistical tests over seeds (same sizes and checks as the tests).

``tests/test_bnn_conjugate.py`` and ``tests/test_fishleg_sampling.py`` expose their check as
``conjugate_z(seed)`` / ``fishleg_z(seed)``; the 2-D/1-D Gaussian checks of
``tests/test_dropin.py`` and the vectorised check of ``tests/test_multichain.py`` are rerun
here with the tests' sizes.  Prints the largest |z| (bound in brackets) and, where the test
has an ESS guard, the smallest ESS over it.

    PYTHONPATH=$PWD python benchmarks/stat_margins_other.py [name-part ...]
"""

from __future__ import annotations

import math
import sys
import time

import arviz as az
import numpy as np
import torch
from torch.distributions import MultivariateNormal, Normal

from bnn_mcmc import (
    HMC,
    MCMC,
    NUTS,
    MultiChainHMC,
)
from tests.stat_utils import assert_moments, ess, mcse_mean
from tests.test_bnn_conjugate import conjugate_z
from tests.test_dropin import (
    BURN_IN,
    COV_2D,
    MEAN_2D,
    cubic_regression,
    potential_trace,
    predictions,
    random_initial_position,
)
from tests.test_fishleg_sampling import fishleg_z
from tests.test_multichain import gauss, starts


def z_scalar(chain: np.ndarray, expected: float) -> float:
    chain = np.asarray(chain, dtype=np.float64)[:, None]
    return float(abs(chain.mean() - expected) / mcse_mean(chain)[0])


def gauss2d(draws: torch.Tensor, min_ess: float) -> str:
    """``check_2d_gaussian`` of test_dropin: moments (assert_moments) and the cross moment."""
    x = draws.double().numpy()
    try:
        m = assert_moments(x, MEAN_2D.numpy(), COV_2D.diagonal().numpy(), min_ess=min_ess)
    except AssertionError as err:
        return f"FAIL {err}"
    c = x - MEAN_2D.numpy()
    z = max(m.z_mean, m.z_var, z_scalar(c[:, 0] * c[:, 1], COV_2D[0, 1].item()))
    return f"ESS/guard {m.ess_ratio:.2f}, max z {z:.2f} (5)"


def dropin_hmc(seed: int) -> str:
    target = MultivariateNormal(MEAN_2D, COV_2D)
    hmc = HMC(
        torch.tensor([3.0, -3.0]),
        lambda q: -target.log_prob(q),
        stepsize=0.25,
        num_steps=10,
        inv_mass=1.0,
        seed=seed,
    )
    hmc.simulate_chain(1000 + BURN_IN)
    hmc.clear_position_trajectory(n=BURN_IN)
    return gauss2d(torch.stack(hmc.position_trajectory), 300)


def dropin_mcmc(seed: int) -> str:
    target = MultivariateNormal(MEAN_2D, COV_2D)
    m = MCMC(torch.tensor([3.0, -3.0]), lambda q: -target.log_prob(q), proposal_std=1.0, seed=seed)
    m.simulate_chain(MCMC_DRAWS + BURN_IN)
    m.clear_position_trajectory(n=BURN_IN)
    return gauss2d(torch.stack(m.position_trajectory), 300)


def dropin_bnn(seed: int) -> str:
    """test_bnn_hmc / test_bnn_multichain_hmc: ESS of the energies (> 30), same mean (z < 5)
    as the single chain, relative error of the posterior-mean prediction (< 0.25)."""
    net, test_x, u = cubic_regression()
    torch.manual_seed(seed)
    one = HMC(random_initial_position(net), u, stepsize=0.02, num_steps=25, inv_mass=1.0, seed=seed)
    one.simulate_chain(BNN_DRAWS + 100)
    one.clear_position_trajectory(n=100)
    m = MultiChainHMC(
        [random_initial_position(net) for _ in range(3)],
        u,
        chain_type="hmc",
        stepsize=0.02,
        num_steps=25,
        seed=seed,
    )
    m.simulate_chains(100)
    for c in m.chains:
        c.clear_position_trajectory()
    m.simulate_chains(BNN_MULTI_DRAWS)
    energies = np.stack([potential_trace(u, c.position_trajectory) for c in m.chains])
    e = ess(energies[..., None])[0] / 30
    a = potential_trace(u, one.position_trajectory)
    se = math.hypot(mcse_mean(a[:, None])[0], mcse_mean(energies.ravel()[:, None])[0])
    z = abs(a.mean() - energies.mean()) / se
    truth = test_x.squeeze(-1) ** 3
    rel = [
        float((predictions(net, test_x, t).mean(0) - truth).norm() / truth.norm())
        for t in (one.position_trajectory, [p for c in m.chains for p in c.position_trajectory])
    ]
    return f"energy ESS/30 {e:.2f}, same-mean z {z:.2f} (5), rel err {max(rel):.3f} (0.25)"


def dropin_1d(kind: str, seed: int) -> str:
    target = Normal(torch.tensor([-1.0]), 2.0)
    u = lambda q: -target.log_prob(q).sum()  # noqa: E731
    if kind == "hmc":
        chain = HMC(torch.tensor([8.0]), u, stepsize=0.5, num_steps=5, seed=seed)
    else:
        chain = NUTS(torch.tensor([8.0]), u, stepsize=0.5, seed=seed)
    chain.simulate_chain(1000 + BURN_IN)
    chain.clear_position_trajectory(n=BURN_IN)
    s = torch.cat(chain.position_trajectory).double().numpy()
    return f"max z {max(z_scalar(s, -1.0), z_scalar((s + 1.0) ** 2, 4.0)):.2f} (5)"


def vectorized(seed: int) -> str:
    m = MultiChainHMC(starts(4, 3), gauss, "nuts", seed=seed, backend="vectorized")
    m.warmup(100)
    m.simulate_chains(400)
    e = az.ess(m.to_inference_data())["w"].values
    d = m.samples().reshape(-1, 3).double()
    se = 1.0 / torch.tensor(e).sqrt()
    zm = (d.mean(0).abs() / se).max().item()
    zv = ((d.var(0) - 1).abs() / (2**0.5 * se + 0.05 / 4)).max().item()
    return f"max z mean {zm:.2f} (4), var {zv:.2f} (4)"


MCMC_DRAWS = 15000
BNN_DRAWS, BNN_MULTI_DRAWS = 200, 100

CHECKS = {
    "bnn_conjugate": (lambda s: f"max z {conjugate_z(s):.2f} (4)", 0),
    "fishleg_sampling": (lambda s: f"max z {fishleg_z(s):.2f} (4)", 0),
    "dropin 2d hmc": (dropin_hmc, 1),
    "dropin 2d mcmc": (dropin_mcmc, 2),
    "dropin 1d hmc": (lambda s: dropin_1d("hmc", s), 3),
    "dropin 1d nuts": (lambda s: dropin_1d("nuts", s), 4),
    "multichain vectorized": (vectorized, 1),
    "dropin bnn": (dropin_bnn, 9),
}

if __name__ == "__main__":
    torch.set_num_threads(1)
    print("| test | seed | margins | s |\n|---|---|---|---|")
    chosen = sys.argv[1:] or list(CHECKS)
    for name, (check, seed0) in CHECKS.items():
        if not any(c in name for c in chosen):
            continue
        for seed in (seed0, 1001, 2002):
            t0 = time.perf_counter()
            try:
                out = check(seed)
            except AssertionError as err:
                out = f"FAIL {err}"
            print(f"| {name} | {seed} | {out} | {time.perf_counter() - t0:.0f} |", flush=True)
