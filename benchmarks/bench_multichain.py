"""Throughput of many chains: sequential vs joblib vs vectorised, HMC and NUTS.

BNN regression: a 1-50-50-1 tanh network, 40 points, N(0, 1) prior, noise 0.1.
Reports chains x draws per second and the minimum bulk ESS per second, as a
markdown table.  Run: ``python benchmarks/bench_multichain.py [--draws N]``.
"""

from __future__ import annotations

import argparse
import time

import arviz as az
import torch

from bnn_mcmc.bnn import MLP, GaussianLikelihood, GaussianPrior, nn_pot_energy
from bnn_mcmc.multichain import MultiChainHMC

SIZES = [(1, 50), (50,), (50, 50), (50,), (50, 1), (1,)]
DIM = sum(torch.Size(s).numel() for s in SIZES)
X = torch.linspace(-2, 2, 40).reshape(-1, 1)
Y = torch.sin(2 * X).squeeze(-1) + 0.1 * torch.randn(40, generator=torch.Generator().manual_seed(0))


def potential(w: torch.Tensor) -> torch.Tensor:
    """U(w) = ||f_w(X) - Y||^2 / (2 * 0.1^2) + ||w||^2 / 2 for a 1-D weight vector."""
    parts, start = [], 0
    for s in SIZES:
        n = torch.Size(s).numel()
        parts.append(w[start : start + n].reshape(s))
        start += n
    w1, b1, w2, b2, w3, b3 = parts
    h = torch.tanh(X @ w1 + b1)
    h = torch.tanh(h @ w2 + b2)
    f = (h @ w3 + b3).squeeze(-1)
    return 0.5 * ((f - Y) ** 2).sum() / 0.01 + 0.5 * (w**2).sum()


#: the same posterior through nn_pot_energy: its U also takes a (chains, dim) batch natively
NET = MLP(1, 1, (50, 50), torch.nn.Tanh())
BRIDGE = nn_pot_energy(
    NET, X, Y.unsqueeze(-1), likelihood=GaussianLikelihood(1 / 0.1**2), prior=GaussianPrior(1.0)
)

#: rows: (label, backend, potential)
SETUPS = (
    ("sequential", "sequential", BRIDGE),
    ("joblib (2 workers)", "joblib", BRIDGE),
    ("vectorized (vmap of a 1-D potential)", "vectorized", potential),
    ("vectorized (batched nn_pot_energy)", "vectorized", BRIDGE),
)


def run(
    chain_type: str, backend: str, func, chains: int, draws: int
) -> tuple[float, float, float]:
    starts = 0.1 * torch.randn(chains, DIM, generator=torch.Generator().manual_seed(1))
    kw = (
        {"num_steps": 10, "stepsize": 2e-3}
        if chain_type == "hmc"
        else {"max_tree_depth": 6, "stepsize": 2e-3}
    )
    m = MultiChainHMC(starts, func, chain_type, seed=0, backend=backend, **kw)
    num_parallel = 2 if backend == "joblib" else 1
    t = time.perf_counter()
    m.simulate_chains(draws, num_parallel=num_parallel)
    elapsed = time.perf_counter() - t
    ess = float(az.ess(m.to_inference_data())["w"].min())
    grads = sum(c.num_grad_evals for c in m.chains)
    return chains * draws / elapsed, ess / elapsed, 1e6 * elapsed / grads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--samplers", default="hmc,nuts", help="comma-separated: hmc,nuts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"BNN 1-50-50-1 tanh, dim {DIM}, {args.draws} draws per chain, no warmup\n")
    print(
        "| sampler | chains | backend | chains x draws / s | min ESS / s | speed-up "
        "| µs per chain-gradient |"
    )
    print("|---|---|---|---|---|---|---|")
    for chain_type in args.samplers.split(","):
        for chains in (4, 8):
            base = None
            for label, backend, func in SETUPS:
                rate, ess_rate, us = run(chain_type, backend, func, chains, args.draws)
                base = base or rate
                print(
                    f"| {chain_type} | {chains} | {label} | {rate:.1f} | {ess_rate:.2f} | "
                    f"{rate / base:.2f}x | {us:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
