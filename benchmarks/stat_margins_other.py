"""Margins of the other statistical tests over seeds (same sizes and checks as the tests).

``tests/test_bnn_conjugate.py`` and ``tests/test_fishleg_sampling.py`` expose their check as
``conjugate_z(seed)`` / ``fishleg_z(seed)``; the 2-D/1-D Gaussian checks of
``tests/test_dropin.py`` and the vectorised check of ``tests/test_multichain.py`` are rerun
here with the tests' sizes.  Prints the largest |z| (bound in brackets) and, where the test
has an ESS guard, the smallest ESS over it.

    PYTHONPATH=$PWD python benchmarks/stat_margins_other.py
"""

from __future__ import annotations

import time

import arviz as az
import numpy as np
import torch
from torch.distributions import MultivariateNormal, Normal

from bnn_mcmc import HMC, MCMC, NUTS, MultiChainHMC
from tests.stat_utils import ess, mcse_mean
from tests.test_bnn_conjugate import conjugate_z
from tests.test_dropin import BURN_IN, COV_2D, MEAN_2D
from tests.test_fishleg_sampling import fishleg_z
from tests.test_multichain import gauss, starts


def z_scalar(chain: np.ndarray, expected: float) -> float:
    chain = np.asarray(chain, dtype=np.float64)[:, None]
    return float(abs(chain.mean() - expected) / mcse_mean(chain)[0])


def gauss2d(draws: torch.Tensor, min_ess: float) -> str:
    x = draws.double().numpy()
    e = ess(x).min() / min_ess
    z = [z_scalar(x[:, j], MEAN_2D[j].item()) for j in range(2)]
    z += [z_scalar((x[:, j] - MEAN_2D[j].item()) ** 2, COV_2D[j, j].item()) for j in range(2)]
    c = x - MEAN_2D.numpy()
    z.append(z_scalar(c[:, 0] * c[:, 1], COV_2D[0, 1].item()))
    return f"ESS/guard {e:.2f}, max z {max(z):.2f} (5)"


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
    m.simulate_chain(6000 + BURN_IN)
    m.clear_position_trajectory(n=BURN_IN)
    return gauss2d(torch.stack(m.position_trajectory), 300)


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


CHECKS = {
    "bnn_conjugate": (lambda s: f"max z {conjugate_z(s):.2f} (4)", 0),
    "fishleg_sampling": (lambda s: f"max z {fishleg_z(s):.2f} (4)", 0),
    "dropin 2d hmc": (dropin_hmc, 1),
    "dropin 2d mcmc": (dropin_mcmc, 2),
    "dropin 1d hmc": (lambda s: dropin_1d("hmc", s), 3),
    "dropin 1d nuts": (lambda s: dropin_1d("nuts", s), 4),
    "multichain vectorized": (vectorized, 1),
}

if __name__ == "__main__":
    torch.set_num_threads(1)
    print("| test | seed | margins | s |\n|---|---|---|---|")
    for name, (check, seed0) in CHECKS.items():
        for seed in (seed0, 1001, 2002):
            t0 = time.perf_counter()
            try:
                out = check(seed)
            except AssertionError as err:
                out = f"FAIL {err}"
            print(f"| {name} | {seed} | {out} | {time.perf_counter() - t0:.0f} |", flush=True)
