"""Does ChEES-HMC (or MEADS) converge on the demo's problem within 2 minutes?

Same data, network, likelihood and prior as ``bnn-mcmc demo`` (``DEMO_CONFIG``); the
chains start at PyTorch's default initialisation like the demo's.  Prints, per
setting, the wall time (warmup + sampling), lp R-hat, function-space max R-hat and
min bulk ESS (the demo's report, :func:`bnn_mcmc.diagnostics.report.run_report`).

    PYTHONPATH=. python benchmarks/bench_chees_demo.py [kind,chains,warmup,draws[,k=v...]] ...

``k=v`` options: ``lr`` (Adam's rate on log T), ``T0`` (initial T), ``mass`` (``diag`` or
``none``), ``mean`` (``harmonic``/``arithmetic``), ``max_steps``, ``seed``.  Without
arguments it runs the demo's own setting (``chees`` with the ``DEMO_CONFIG`` values).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from bnn_mcmc.cli import DEMO_CONFIG
from bnn_mcmc.cli.engine import initial_positions
from bnn_mcmc.cli.problem import build_problem
from bnn_mcmc.cli.report import build_inference_data
from bnn_mcmc.config import from_dict
from bnn_mcmc.diagnostics.report import run_report
from bnn_mcmc.multichain.chees import ChEESHMC
from bnn_mcmc.multichain.meads import MEADS


def run(kind: str, chains: int, warmup: int, draws: int, options: dict[str, str]) -> dict:
    raw = {k: dict(v) for k, v in DEMO_CONFIG.items()}
    raw["run"]["output_dir"] = "/tmp/unused"
    cfg = from_dict(raw, Path.cwd())
    problem = build_problem(cfg)
    seed = int(options.get("seed", 0))
    starts = torch.stack(initial_positions(problem, seed, chains))
    t0 = time.perf_counter()
    if kind == "chees":
        s = ChEESHMC(
            starts,
            problem.potential,
            seed=seed,
            acceptance_mean=options.get("mean", "harmonic"),
            learning_rate=float(options.get("lr", 0.025)),
            trajectory_length=float(options["T0"]) if "T0" in options else None,
            max_steps=int(options.get("max_steps", 1000)),
        )
        s.warmup(warmup, adapt_mass=None if options.get("mass") == "none" else "diag")
    else:
        s = MEADS(starts, problem.potential, seed=seed)
        s.warmup(warmup)
    t1 = time.perf_counter()
    s.simulate_chains(draws)
    t2 = time.perf_counter()
    report = run_report(build_inference_data(s, problem, seed))
    out = {
        "sampler": kind,
        "chains": chains,
        "warmup": warmup,
        "draws": draws,
        "warmup_s": t1 - t0,
        "total_s": t2 - t0,
        "lp_rhat": report.lp.max_rhat,
        "f_rhat": report.function.max_rhat,
        "f_ess_bulk": report.function.min_ess_bulk,
        "grad_evals": s.num_grad_evals,
        "divergences": report.divergences,
        "options": options,
    }
    if kind == "chees":
        out.update(step_size=s.step_size, trajectory_length=s.trajectory_length)
    return out


def demo_setting() -> list[str]:
    s, r = DEMO_CONFIG["sampler"], DEMO_CONFIG["run"]
    return [
        "chees",
        str(r["chains"]),
        str(s["warmup"]),
        str(s["draws"]),
        f"lr={s['learning_rate']}",
        f"T0={s['trajectory_length']}",
        f"mass={s['adapt_mass']}",
    ]


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    settings = [a.split(",") for a in argv if "," in a] or [demo_setting()]
    cols = "sampler chains warmup draws warmup_s total_s lp_rhat f_rhat f_ess_bulk grad_evals"
    print("| " + " | ".join(cols.split()) + " | extra |")
    for kind, c, w, d, *opts in settings:
        r = run(kind, int(c), int(w), int(d), dict(o.split("=", 1) for o in opts))
        extra = {k: v for k, v in r.items() if k not in cols.split()}
        cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in cols.split()]
        print("| " + " | ".join(cells) + f" | {extra} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
