"""NUTS with a FishLeg (Kronecker) metric still targets the right distribution."""

import math

import torch
from torch import nn

from bnn_mcmc.bnn.likelihoods import GaussianLikelihood
from bnn_mcmc.optim import FishLeg
from bnn_mcmc.samplers import NUTS

Z_BOUND = 4.0


def fishleg_z(seed: int = 0) -> float:
    """Largest |z| (in ESS-based standard errors) of the posterior means and variances."""
    torch.set_default_dtype(torch.float64)
    z = []
    try:
        g = torch.Generator().manual_seed(0)
        X = torch.randn(30, 2, generator=g) @ torch.tensor([[2.0, 1.5], [0.0, 0.3]])
        y = X @ torch.tensor([[1.0], [-1.0]]) + 0.5 * torch.randn(30, 1, generator=g)
        tau = 4.0
        Xt = torch.cat([X, torch.ones(30, 1)], 1)
        P = tau * Xt.T @ Xt + torch.eye(3)
        cov = torch.linalg.inv(P)
        mean = cov @ (tau * Xt.T @ y).squeeze(-1)
        net = nn.Linear(2, 1)
        opt = FishLeg(
            net,
            None,
            None,
            [(X, y)],
            likelihood=GaussianLikelihood(tau),
            generator=torch.Generator().manual_seed(1),
            damping=1.0,
            full=False,
            aux_lr=1e-2,
            update_aux_every=0,
            scale=0.1,
        )
        gu = torch.Generator().manual_seed(2)
        for _ in range(300):
            opt.update_aux(torch.randn(3, generator=gu))
        metric = opt.as_metric()

        def potential(w):
            r = y.squeeze(-1) - Xt @ w
            return 0.5 * tau * (r**2).sum() + 0.5 * (w**2).sum()

        s = NUTS(torch.zeros(3), potential, inv_mass=opt, seed=seed)
        assert s.metric.dim == metric.dim == 3
        s.warmup(200, adapt_mass=None)
        s.simulate_chain(1500)
        draws = s.samples()
        n = draws.shape[0]
        for j in range(3):
            x = draws[:, j]
            xc = x - x.mean()
            acf = [
                float((xc[: n - k] * xc[k:]).mean() / xc.var(unbiased=False)) for k in range(1, 50)
            ]
            tau_int = 1 + 2 * sum(a for a in acf if a > 0.05)
            ess = n / tau_int
            se_mean = math.sqrt(float(cov[j, j]) / ess)
            z.append(abs(float(x.mean()) - float(mean[j])) / se_mean)
            se_var = float(cov[j, j]) * math.sqrt(2 / ess)
            z.append(abs(float(x.var()) - float(cov[j, j])) / se_var)
    finally:
        torch.set_default_dtype(torch.float32)
    return max(z)


def test_nuts_with_fishleg_metric_targets_gaussian_posterior():
    """Bayesian linear regression (N(0, 1) prior, tau = 4): the posterior is Gaussian with
    precision P = tau Xt^T Xt + I.  A FishLeg Q (damping = prior precision, a few hundred
    auxiliary steps, so only approximately P^-1) is the fixed metric; posterior means and
    variances must match within 4 Monte Carlo standard errors (ESS-based)."""
    z = fishleg_z()
    assert z < Z_BOUND, f"a posterior mean or variance is {z:.2f} standard errors off"
