"""Cost and efficiency of the single-chain samplers (issue: the sampling core).

For each problem and sampler it prints: gradient evaluations, wall time, microseconds
per gradient evaluation inside the sampler against one plain ``torch.autograd.grad`` of
the same potential measured in the same run (the overhead ratio), and ESS of U and of
predictions, per second.

Run: ``python benchmarks/bench_core.py [--draws N] [--warmup N]``.
"""

from __future__ import annotations

import argparse
import math
import time

import arviz as az
import numpy as np
import torch

from bnn_mcmc import HMC, NUTS


def ill_conditioned(dim: int = 100):
    std = torch.logspace(-2, 0, dim, dtype=torch.float64)

    def potential(w):
        return 0.5 * ((w / std) ** 2).sum()

    start = 0.3 * std
    return potential, start, None


def mlp_regression(seed: int = 0):
    """1-50-50-1 tanh on 40 points, N(0, 1) prior, Gaussian noise 0.1 (float32)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(-2, 2, 40).unsqueeze(1)
    y = torch.sin(2 * x) + 0.1 * torch.randn(40, 1, generator=g)
    shapes = [(50, 1), (50,), (50, 50), (50,), (1, 50), (1,)]
    sizes = [math.prod(s) for s in shapes]

    def forward(w, inputs):
        params = [p.reshape(s) for p, s in zip(torch.split(w, sizes), shapes)]
        h = torch.tanh(inputs @ params[0].T + params[1])
        h = torch.tanh(h @ params[2].T + params[3])
        return h @ params[4].T + params[5]

    def potential(w):
        resid = forward(w, x) - y
        return 0.5 * (resid**2).sum() / 0.01 + 0.5 * (w**2).sum()

    start = 0.1 * torch.randn(sum(sizes), generator=g)
    test_x = torch.linspace(-3, 3, 7).unsqueeze(1)
    return potential, start, lambda w: forward(w, test_x).squeeze(-1)


def plain_grad_seconds(potential, w, repeats: int = 300) -> float:
    """Median time of U(w) plus one torch.autograd.grad, as a user would write it."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        v = w.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(potential(v), v)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def ess_min(x: np.ndarray) -> float:
    return float(np.min(az.ess(az.convert_to_dataset(x[None]))["x"].values))


def run(problem, name, make, warmup, draws):
    potential, start, predict = problem()
    sampler = make(start, potential)
    t0 = time.perf_counter()
    sampler.warmup(warmup)
    t1 = time.perf_counter()
    evals0 = sampler.num_grad_evals
    sampler.simulate_chain(draws)
    t2 = time.perf_counter()
    evals = sampler.num_grad_evals - evals0
    plain = plain_grad_seconds(potential, sampler.position)
    per_grad = (t2 - t1) / evals
    lp = sampler.stats["lp"].numpy()
    ess_u = ess_min(lp[:, None])
    row = {
        "sampler": name,
        "grad evals": evals,
        "warmup s": t1 - t0,
        "sampling s": t2 - t1,
        "us/grad": 1e6 * per_grad,
        "plain us/grad": 1e6 * plain,
        "overhead": per_grad / plain,
        "ESS(U)/s": ess_u / (t2 - t1),
    }
    if predict is not None:
        with torch.no_grad():
            preds = torch.stack([predict(w) for w in sampler.samples()]).double().numpy()
        row["ESS(f)/s"] = ess_min(preds) / (t2 - t1)
    else:
        row["ESS(f)/s"] = ess_min(sampler.samples().numpy()) / (t2 - t1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    samplers = {
        "HMC (L=10)": lambda w, u: HMC(w, u, num_steps=10, seed=0),
        "NUTS": lambda w, u: NUTS(w, u, seed=0),
        "HMC (L=10, compiled U)": lambda w, u: HMC(w, u, num_steps=10, seed=0,
                                                   compile_potential=True),
        "NUTS (compiled U)": lambda w, u: NUTS(w, u, seed=0, compile_potential=True),
    }
    problems = {"100-D ill-conditioned Gaussian": ill_conditioned, "MLP 1-50-50-1": mlp_regression}
    cols = ["sampler", "grad evals", "warmup s", "sampling s", "us/grad", "plain us/grad",
            "overhead", "ESS(U)/s", "ESS(f)/s"]
    for pname, problem in problems.items():
        print(f"\n### {pname} ({args.warmup} warmup, {args.draws} draws, 1 thread)\n")
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for sname, make in samplers.items():
            row = run(problem, sname, make, args.warmup, args.draws)
            cells = [f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in cols]
            print("| " + " | ".join(cells) + " |")
    print("\nESS(f): min ESS over coordinates (Gaussian) or over 7 test-input predictions (MLP).")
    print("compiled U: compile_potential=True (torch.compile of torch.func.grad_and_value); its")
    print("compilation happens at construction and is not in the warmup or sampling times.")


if __name__ == "__main__":
    main()
