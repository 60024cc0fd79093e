"""Cost of the BNN potential and of batched prediction.

Problems: 1-D regression (1-50-50-1 tanh, 40 points, Gaussian noise) and two moons
(2-32-32-2 tanh, ``make_moons(200, noise=0.2, random_state=0)``, categorical).

* One potential + gradient evaluation of ``nn_pot_energy`` (our ``MLP`` and a plain
  ``nn.Sequential`` through ``FunctionalNet``) against a hand-written plain PyTorch
  potential of the same network, timed side by side (interleaved repeats, median).
* Prediction for 1000 weight draws: batched ``predict`` against a Python loop.

Run ``python benchmarks/bench_bnn.py``; prints a markdown table.  One torch thread.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch import nn

from bnn_mcmc.bnn import MLP, FunctionalNet, nn_pot_energy, predict

torch.set_num_threads(1)


def _regression():
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-3, 3, 40)[:, None]
    y = torch.sin(x) + 0.1 * torch.randn(40, 1, generator=g)
    return x, y, (1, 50, 50, 1), "regression"


def _moons():
    from sklearn.datasets import make_moons

    xs, ys = make_moons(200, noise=0.2, random_state=0)
    x = torch.as_tensor(xs, dtype=torch.float32)
    return x, torch.as_tensor(ys, dtype=torch.long), (2, 32, 32, 2), "classification"


def _plain_potential(x, y, sizes, kind, tau=100.0):
    """The potential written by hand in plain PyTorch (no library code)."""
    shapes = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        shapes += [(b, a), (b,)]
    numels = [math.prod(s) for s in shapes]

    def U(w):
        parts = [c.view(s) for c, s in zip(torch.split(w, numels), shapes, strict=True)]
        h = x
        for i in range(0, len(parts), 2):
            h = torch.nn.functional.linear(h, parts[i], parts[i + 1])
            if i < len(parts) - 2:
                h = torch.tanh(h)
        if kind == "regression":
            nll = 0.5 * tau * (h - y).square().sum()
        else:
            nll = torch.nn.functional.cross_entropy(h, y, reduction="sum")
        return nll + 0.5 * w.square().sum()

    return U


def _grad_time(U, w, inner=200):
    def run():
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.autograd.grad(U(w), w)
        return (time.perf_counter() - t0) / inner

    return run


def _side_by_side(runs, repeats=15):
    """Interleave the timers ``repeats`` times; median seconds per call for each."""
    times = [[] for _ in runs]
    for r in runs:
        r()  # warm up
    for _ in range(repeats):
        for i, r in enumerate(runs):
            times[i].append(r())
    return [statistics.median(t) for t in times]


def _bench_problem(x, y, sizes, kind) -> list[tuple]:
    name = "1-D regression 1-50-50-1" if kind == "regression" else "two moons 2-32-32-2"
    mlp = MLP(sizes[0], sizes[-1], hidden_layers=sizes[1:-1], activation_fn=torch.tanh)
    seq = nn.Sequential(
        nn.Linear(sizes[0], sizes[1]),
        nn.Tanh(),
        nn.Linear(sizes[1], sizes[2]),
        nn.Tanh(),
        nn.Linear(sizes[2], sizes[3]),
    )
    tau = 100.0 if kind == "regression" else 1.0
    ours = nn_pot_energy(mlp, x, y, tau_pred=tau, nll_type=kind)
    ours_seq = nn_pot_energy(seq, x, y, tau_pred=tau, nll_type=kind)
    plain = _plain_potential(x, y, sizes, kind, tau)
    w = MLP.flatten_params(mlp.internal_params).detach().requires_grad_(True)
    t_plain, t_mlp, t_seq = _side_by_side(
        [_grad_time(plain, w), _grad_time(ours, w), _grad_time(ours_seq, w)]
    )
    rows = [
        (name, "U + grad, plain PyTorch", t_plain * 1e6, "us", "1.00x"),
        (name, "U + grad, nn_pot_energy(MLP)", t_mlp * 1e6, "us", f"{t_mlp / t_plain:.2f}x"),
        (
            name,
            "U + grad, nn_pot_energy(nn.Sequential)",
            t_seq * 1e6,
            "us",
            f"{t_seq / t_plain:.2f}x",
        ),
    ]

    draws = 0.3 * torch.randn(1000, mlp.num_params, generator=torch.Generator().manual_seed(0))
    fnet = FunctionalNet(seq)

    def loop():
        t0 = time.perf_counter()
        with torch.no_grad():
            torch.stack([mlp(x, weights=d) for d in draws])
        return time.perf_counter() - t0

    def loop_module():
        t0 = time.perf_counter()
        with torch.no_grad():
            torch.stack(
                [
                    (torch.nn.utils.vector_to_parameters(d, seq.parameters()), seq(x))[1]
                    for d in draws
                ]
            )
        return time.perf_counter() - t0

    def batched(net):
        t0 = time.perf_counter()
        predict(net, draws, x, chunk_size=250)
        return time.perf_counter() - t0

    t_loop, t_batch, t_loop_mod, t_batch_mod = _side_by_side(
        [loop, lambda: batched(mlp), loop_module, lambda: batched(fnet)], repeats=5
    )
    rows += [
        (name, "predict 1000 draws, loop MLP", 1000 / t_loop, "draws/s", "1.00x"),
        (
            name,
            "predict 1000 draws, batched MLP",
            1000 / t_batch,
            "draws/s",
            f"{t_loop / t_batch:.1f}x",
        ),
        (name, "predict 1000 draws, loop nn.Sequential", 1000 / t_loop_mod, "draws/s", "1.00x"),
        (
            name,
            "predict 1000 draws, batched FunctionalNet (vmap)",
            1000 / t_batch_mod,
            "draws/s",
            f"{t_loop_mod / t_batch_mod:.1f}x",
        ),
    ]
    return rows


def main() -> None:
    rows = _bench_problem(*_regression()) + _bench_problem(*_moons())
    print(f"torch {torch.__version__}, 1 thread\n")
    print("| problem | measurement | value | unit | relative |")
    print("|---|---|---:|---|---:|")
    for name, what, value, unit, rel in rows:
        print(f"| {name} | {what} | {value:,.1f} | {unit} | {rel} |")


if __name__ == "__main__":
    main()
