"""FishLeg on the two BNN problems: time to the MAP (FishLeg vs Adam) and NUTS ESS per
gradient evaluation with identity, diag-adapted, dense-adapted and FishLeg metrics.

Short runs sized for a 2-core machine; ``--warmup/--draws/--depth`` scale them up.
Prints a markdown table.  Run: ``python benchmarks/bench_fishleg.py``.
"""

from __future__ import annotations

import argparse
import time

import arviz as az
import numpy as np
import torch
from sklearn.datasets import make_moons
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from bnn_mcmc.bnn import nn_pot_energy
from bnn_mcmc.bnn.likelihoods import CategoricalLikelihood, GaussianLikelihood
from bnn_mcmc.bnn.priors import GaussianPrior
from bnn_mcmc.optim import FishLeg
from bnn_mcmc.samplers import NUTS


def regression():
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-2, 2, 40).unsqueeze(-1)
    y = torch.sin(2 * x) + 0.1 * torch.randn(40, 1, generator=g)
    net = nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 50), nn.Tanh(),
                        nn.Linear(50, 1))
    return "1-D regression", net, x, y, GaussianLikelihood(tau_pred=100.0)


def moons():
    X, y = make_moons(200, noise=0.2, random_state=0)
    net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                        nn.Linear(32, 2))
    return ("two moons", net, torch.tensor(X, dtype=torch.float32), torch.tensor(y),
            CategoricalLikelihood())


def to_map(net, x, y, lik, prior, method, steps, seed):
    """Optimise from a fixed init; return (trace of U, trace of wall time, final weights)."""
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    if method == "fishleg":
        opt = FishLeg(net, None, None, [(x, y)], likelihood=lik, damping=1.0, fish_lr=0.05,
                      aux_lr=1e-2, update_aux_every=-1, warmup=1, warmup_data=[(x, y)],
                      generator=torch.Generator().manual_seed(seed))
    else:
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    us, ts, t0 = [], [], time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        u = lik.nll(net(x), y) - prior.log_prob(parameters_to_vector(net.parameters()))
        u.backward()
        opt.step()
        us.append(float(u.detach()))
        ts.append(time.perf_counter() - t0)
    return np.array(us), np.array(ts), opt


def ess_per_grad(s):
    draws = s.samples().numpy()[None]
    ess = az.ess(az.convert_to_dataset(draws))["x"].values
    return float(np.median(ess)) / s.num_grad_evals, float(np.min(ess)) / s.num_grad_evals


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--draws", type=int, default=150)
    ap.add_argument("--depth", type=int, default=7)
    ap.add_argument("--aux", type=int, default=300, help="aux updates at the MAP")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, net, x, y, lik in (regression(), moons()):
        prior = GaussianPrior(1.0)
        res = {m: to_map(net, x, y, lik, prior, m, args.steps, 0) for m in ("fishleg", "adam")}
        best = min(r[0].min() for r in res.values())
        for m, (us, ts, _) in res.items():
            hit = np.nonzero(us <= best + 1.0)[0]
            t = f"{ts[hit[0]]:.2f} s ({hit[0] + 1} steps)" if hit.size else "not reached"
            rows.append(f"| {name} | MAP {m} | time to U <= U* + 1: {t} | final U "
                        f"{us[-1]:.1f} | |")
        # FishLeg metric: refine Q at the FishLeg MAP with full-batch auxiliary updates
        opt = res["fishleg"][2]
        w_map = parameters_to_vector(net.parameters()).detach()
        gu = torch.Generator().manual_seed(1)
        for _ in range(args.aux):  # random directions: E[uu^T] = I, so Q -> (F + I)^-1
            opt.update_aux(torch.randn(w_map.numel(), generator=gu))
        metric = opt.as_metric()
        vector_to_parameters(w_map, net.parameters())
        U = nn_pot_energy(net, x, y, likelihood=lik, prior=prior)
        for label, inv_mass, adapt in (("identity", 1.0, None), ("diag-adapted", 1.0, "diag"),
                                       ("dense-adapted", 1.0, "dense"),
                                       ("FishLeg", metric, None)):
            t0 = time.perf_counter()
            s = NUTS(w_map.clone(), U, inv_mass=inv_mass, seed=0, max_tree_depth=args.depth)
            s.warmup(args.warmup, adapt_mass=adapt)
            s.simulate_chain(args.draws)
            med, mn = ess_per_grad(s)
            rows.append(f"| {name} | NUTS {label} | ESS/grad median {med:.2e}, min {mn:.2e} | "
                        f"step {s.step_size:.2e}, {s.num_grad_evals} grads | "
                        f"{time.perf_counter() - t0:.0f} s |")
    print("| problem | method | result | detail | wall |\n|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
