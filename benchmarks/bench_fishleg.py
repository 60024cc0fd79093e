"""FishLeg benchmarks: the optimiser against Adam, and the Fisher metric for NUTS.

``--part optim``: default ``FishLeg(model, draw, nll, aux_loader)`` (no tuning) against
Adam at lr 1e-3 and 1e-2 on three problems, minibatches of 128 for 300 steps: the
ill-conditioned linear regression and the correlated-feature logistic regression of
``tests/test_fishleg_optim.py`` (5 seeds) and a 64-32-10 :class:`bnn_mcmc.bnn.MLP` on
scikit-learn's digits (1797 images, 3 seeds).  Median over seeds of the final full-data
loss, and of the steps and wall time (optimiser only, one thread, full-data evaluations
excluded) to reach the better Adam's median final loss.

``--part nuts``: NUTS (one chain per metric, ``--warmup`` + ``--draws``, default 300 +
300) from the MAP (Adam, 1000 steps) of two BNNs (1-D regression, 1-50-50-1; two moons, 2-32-32-2)
with the identity, diag-adapted, dense-adapted and ``inv_mass='fisher'`` metrics: ESS
(ArviZ, bulk) per gradient evaluation, median and minimum over the weights, the minimum
ESS per second of wall time (warmup and the metric fit included) and the largest split
R-hat of the single chain.

Run: ``python benchmarks/bench_fishleg.py [--part optim|nuts|all]`` (needs scikit-learn,
the ``bench`` extra).  Prints markdown tables.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import arviz as az
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits, make_moons
from torch import nn

from bnn_mcmc.bnn import MLP, nn_pot_energy
from bnn_mcmc.bnn.likelihoods import CategoricalLikelihood, GaussianLikelihood
from bnn_mcmc.bnn.priors import GaussianPrior
from bnn_mcmc.optim import FishLeg, find_map
from bnn_mcmc.samplers import NUTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_fishleg_optim import (  # noqa: E402 (the tests' problems, not copies)
    Problem,
    correlated_logistic,
    ill_conditioned_regression,
    train,
)


def digits(seed: int) -> Problem:
    """64-32-10 MLP (ours, tanh) on the 8x8 digits scaled to [0, 1]; mean cross-entropy."""
    d = load_digits()
    X = torch.tensor(d.data, dtype=torch.get_default_dtype()) / 16.0
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(seed)
    net = MLP(64, 10, hidden_layers=(32,), generator=torch.Generator().manual_seed(seed))
    net = net.to(torch.get_default_dtype())

    def nll(m, b):
        return F.cross_entropy(m(b[0]), b[1])

    def draw(m, x):
        with torch.no_grad():
            return x, torch.multinomial(torch.softmax(m(x), -1), 1, generator=g).squeeze(-1)

    return Problem(X, y, net, nll, draw)


def optimiser_table(seeds_small: int, seeds_mlp: int) -> str:
    makers = {
        "FishLeg (defaults)": lambda net, nll, draw, aux: FishLeg(net, draw, nll, aux),
        "Adam lr 1e-3": lambda net, *_: torch.optim.Adam(net.parameters(), lr=1e-3),
        "Adam lr 1e-2": lambda net, *_: torch.optim.Adam(net.parameters(), lr=1e-2),
    }
    # first optimiser construction imports torch._dynamo (seconds): pay it before timing
    torch.optim.Adam(nn.Linear(1, 1).parameters())
    rows = [
        "| problem | optimiser | final loss (median) | per seed | steps to target | "
        "wall to target | wall 300 steps |",
        "|---|---|---|---|---|---|---|",
    ]
    problems = (
        ("linear regression, scales 1e-2..10", ill_conditioned_regression, seeds_small),
        ("logistic regression, AR(1) 0.95", correlated_logistic, seeds_small),
        ("MLP 64-32-10 on digits", digits, seeds_mlp),
    )
    for name, problem, num in problems:
        runs = {k: [train(problem, mk, s) for s in range(num)] for k, mk in makers.items()}
        finals = {k: statistics.median(r.losses[-1] for r in v) for k, v in runs.items()}
        best_adam = min((k for k in finals if k.startswith("Adam")), key=finals.get)
        target = finals[best_adam]
        for k, v in runs.items():
            hits = [next((i for i, u in enumerate(r.losses) if u <= target), None) for r in v]
            ok = [(i + 1, r.times[i]) for i, r in zip(hits, v, strict=True) if i is not None]
            if len(ok) * 2 > len(v):  # the median run reached it
                steps = statistics.median([s for s, _ in ok] + [10**9] * (len(v) - len(ok)))
                wall = statistics.median([t for _, t in ok] + [1e9] * (len(v) - len(ok)))
                st, wt = f"{steps:.0f}", f"{wall:.2f} s"
            else:
                st, wt = "not reached", "-"
            per = ", ".join(f"{r.losses[-1]:.4g}" for r in v)
            mark = " (target)" if k == best_adam else ""
            rows.append(
                f"| {name} | {k}{mark} | {finals[k]:.4g} | {per} | {st} | {wt} | "
                f"{statistics.median(r.times[-1] for r in v):.2f} s |"
            )
    return "\n".join(rows)


def regression():
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-2, 2, 40).unsqueeze(-1)
    y = torch.sin(2 * x) + 0.1 * torch.randn(40, 1, generator=g)
    net = nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 50), nn.Tanh(), nn.Linear(50, 1))
    return "1-D regression", net, x, y, GaussianLikelihood(tau_pred=100.0)


def moons():
    X, y = make_moons(200, noise=0.2, random_state=0)
    net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    return (
        "two moons",
        net,
        torch.tensor(X, dtype=torch.float32),
        torch.tensor(y),
        CategoricalLikelihood(),
    )


def ess_per_grad(s):
    """Median and minimum bulk ESS per gradient, the minimum ESS, and the largest split
    R-hat over the weights (one chain, split in halves; nan when a weight never moved)."""
    data = az.convert_to_dataset(s.samples().numpy()[None])
    ess = az.ess(data)["x"].values
    rhat = float(np.max(az.rhat(data)["x"].values))
    n = s.num_grad_evals
    return float(np.median(ess)) / n, float(np.min(ess)) / n, float(np.min(ess)), rhat


def nuts_table(warmup: int, draws: int, depth: int, steps: int) -> str:
    rows = [
        "| problem | metric | ESS/grad median | ESS/grad min | min ESS / s | max split R-hat | "
        "step size | grads | wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, net, x, y, lik in (regression(), moons()):
        prior = GaussianPrior(1.0)
        # the start only needs to be near the mode; Adam is the cheaper way there here
        w_map = find_map(
            net,
            lik,
            prior,
            (x, y),
            optimizer="adam",
            steps=steps,
            generator=torch.Generator().manual_seed(0),
        )[0]
        U = nn_pot_energy(net, x, y, likelihood=lik, prior=prior)
        for label, inv_mass, adapt in (
            ("identity", 1.0, None),
            ("diag-adapted", 1.0, "diag"),
            ("dense-adapted", 1.0, "dense"),
            ("fisher (FishLeg)", "fisher", None),
        ):
            t0 = time.perf_counter()
            s = NUTS(w_map.clone(), U, inv_mass=inv_mass, seed=0, max_tree_depth=depth)
            s.warmup(warmup, adapt_mass=adapt)
            s.simulate_chain(draws)
            med, mn, ess_min, rhat = ess_per_grad(s)
            wall = time.perf_counter() - t0
            rows.append(
                f"| {name} | {label} | {med:.2e} | {mn:.2e} | {ess_min / wall:.3g} | "
                f"{rhat:.3f} | {s.step_size:.2e} | {s.num_grad_evals} | {wall:.0f} s |"
            )
            print(rows[-1], flush=True)
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("optim", "nuts", "all"), default="all")
    ap.add_argument("--seeds", type=int, default=5, help="seeds, linear/logistic")
    ap.add_argument("--seeds-mlp", type=int, default=3, help="seeds, digits MLP")
    ap.add_argument("--map-steps", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--depth", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.part in ("optim", "all"):
        torch.set_default_dtype(torch.float64)
        try:
            print(optimiser_table(args.seeds, args.seeds_mlp), flush=True)
        finally:
            torch.set_default_dtype(torch.float32)
    if args.part in ("nuts", "all"):
        print(nuts_table(args.warmup, args.draws, args.depth, args.map_steps))


if __name__ == "__main__":
    main()
