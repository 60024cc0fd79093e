"""The ``bnn-mcmc`` command line: ``demo``, ``sample``, ``diagnose`` and ``compare``.

Errors are printed as one line on stderr with exit status 1 (2 for usage errors, as
argparse does); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..config import ConfigError, describe_schema, from_dict, load_config

#: The run that ``bnn-mcmc demo`` performs (a valid run description).
DEMO_CONFIG = {
    "data": {"name": "regression_gap", "n": 40, "noise": 0.1},
    "network": {"hidden": [20, 20], "activation": "tanh"},
    "likelihood": {"type": "gaussian", "noise_std": 0.1},
    "prior": {"type": "gaussian", "scale": 1.0},
    "sampler": {
        "type": "chees",
        "warmup": 150,
        "draws": 250,
        "adapt_mass": "none",
        "trajectory_length": 1.0,
        "learning_rate": 0.05,
    },
    "run": {"chains": 8, "backend": "vectorized", "seed": 0},
}

#: What the demo prints about its choice of sampler (measurements in
#: ``benchmarks/results/chees_demo.md``).
DEMO_WHY = (
    "why ChEES-HMC: in our measurements it is the sampler of ours that reaches a converged "
    "posterior here (lp R-hat <= 1.05, function-space R-hat <= 1.01, bulk ESS >= 400) within "
    "two minutes on two cores; NUTS (4 chains, 300 + 300, depth 7: lp R-hat 1.39 in 126 s) "
    "and MEADS (16 chains, 1500 + 500: lp R-hat 4.2) do not. The posterior is stiff (step "
    "size ~0.002) yet needs long trajectories (T ~ 1.2, ~600 leapfrog steps) for the weight "
    "norm, and with it lp, to mix: NUTS trees then hit the maximum depth and its chains wait "
    "for the deepest tree, while the 8 ChEES chains share one learned T and take the same "
    "steps through one batched gradient."
)

EPILOG = """examples:
  bnn-mcmc demo                          # 8 ChEES-HMC chains on a 1-D toy, ~2 min
  bnn-mcmc sample run.toml               # a run described in a TOML file
  bnn-mcmc sample run.toml --resume      # continue it after it was killed
  bnn-mcmc sample run.toml --nproc 2     # each chain's data sharded over 2 processes
  bnn-mcmc sample run.toml --nproc 2 --resume   # continue it after it was killed
  bnn-mcmc diagnose bnn_mcmc_demo        # summary and plots of a saved run
  bnn-mcmc compare runs/nuts runs/hmc    # one table across saved runs
"""


def _finish(cfg, problem, mc, out: Path, seconds: float, why: str | None = None) -> int:
    from .report import build_inference_data, summarize, write_outputs

    idata = build_inference_data(mc, problem, cfg.run["seed"])
    paths = write_outputs(idata, out)
    text, nums = summarize(idata)
    (out / "summary.json").write_text(json.dumps(nums, indent=2))
    print(text)
    print(
        f"\nsampler: {_sampler_name(cfg)}; wall time {seconds:.1f} s; {mc.num_chains} chains, "
        f"{sum(c.num_grad_evals for c in mc.chains)} gradient evaluations"
    )
    if why:
        print(why)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if cfg.run["tensorboard"]:
        print(f"tensorboard logs: tensorboard --logdir {out / 'tensorboard'}")
    return 0


def _sampler_name(cfg) -> str:
    """The sampler of ``cfg`` with the settings that name it."""
    kind, run = cfg.sampler["type"], cfg.run
    names = {"chees": "ChEES-HMC", "meads": "MEADS", "nuts": "NUTS", "hmc": "HMC", "mh": "MH"}
    how = "in lockstep" if kind in ("chees", "meads") else f"on the {run['backend']} backend"
    return f"{names[kind]} ({run['chains']} chains {how})"


def _sample(cfg, resume: bool, why: str | None = None) -> int:
    from .engine import run_chains
    from .problem import build_problem

    t0 = time.perf_counter()
    problem = build_problem(cfg)
    print(
        f"{cfg.sampler['type'].upper()} on {problem.data.name}: "
        f"{problem.dim} weights, {len(problem.data.x)} points, {cfg.run['chains']} chains "
        f"({cfg.run['backend']}) -> {cfg.output_dir}",
        flush=True,
    )
    mc = run_chains(cfg, problem, resume=resume)
    return _finish(cfg, problem, mc, cfg.output_dir, time.perf_counter() - t0, why)


def cmd_demo(args) -> int:
    """Run :data:`DEMO_CONFIG` into ``args.out``."""
    from .engine import CHAIN_DIR

    out = Path(args.out).resolve()
    if (out / CHAIN_DIR).exists():
        raise ValueError(
            f"{out} already holds a run; choose another folder with --out (the demo does not "
            "resume: `bnn-mcmc diagnose` shows a finished one)."
        )
    raw = {k: dict(v) for k, v in DEMO_CONFIG.items()}
    raw["run"]["output_dir"] = str(out)
    return _sample(from_dict(raw, Path.cwd()), resume=False, why=DEMO_WHY)


def cmd_sample(args) -> int:
    """Run the TOML file ``args.config`` (``--out`` overrides ``run.output_dir``)."""
    cfg = load_config(args.config)
    if args.out is not None:
        raw = cfg.as_dict()
        raw["run"]["output_dir"] = str(Path(args.out).resolve())
        cfg = from_dict(raw, cfg.base_dir)
    nproc = args.nproc if args.nproc is not None else cfg.parallel["nproc"]
    if nproc is not None and nproc > 1:  # issue 14: one chain over N processes
        from .sharded import sample_sharded

        return sample_sharded(cfg, nproc, args.resume, _finish)
    return _sample(cfg, resume=args.resume)


def _load_run(run_dir: str):
    import arviz as az

    from .report import IDATA_FILE

    path = Path(run_dir) / IDATA_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a finished run ({IDATA_FILE} missing).")
    return az.from_netcdf(str(path))


def cmd_diagnose(args) -> int:
    """Print the summary of a saved run and redraw its figures."""
    from .report import plot_predictive, plot_trace_rank, summarize

    idata = _load_run(args.run_dir)
    text, nums = summarize(idata)
    if args.json:
        print(json.dumps(nums, indent=2))
    else:
        print(text)
    out = Path(args.run_dir)
    if not args.no_plots:
        plot_predictive(idata, out / "posterior_predictive.png")
        plot_trace_rank(idata, out / "trace_rank.png")
    return 0


def cmd_compare(args) -> int:
    """Compare saved runs (same data) with :func:`bnn_mcmc.diagnostics.compare_posteriors`."""
    import torch

    from ..diagnostics.compare import compare_posteriors
    from .engine import CONFIG_FILE
    from .problem import build_problem

    runs = {}
    for d in args.run_dirs:
        name = Path(d).resolve().name
        if name in runs:
            raise ValueError(f"two runs are named {name!r}; give the folders distinct names.")
        runs[name] = _load_run(d)
    first = Path(args.run_dirs[0])
    cfg = from_dict(json.loads((first / CONFIG_FILE).read_text()), first)
    problem = build_problem(cfg)
    for d in args.run_dirs[1:]:
        other = json.loads((Path(d) / CONFIG_FILE).read_text())
        mine = cfg.as_dict()
        if other["data"] != mine["data"] or other["network"] != mine["network"]:
            raise ValueError(f"{d} uses other data or another network than {first}.")
    reference = args.reference or next(iter(runs))
    if reference not in runs:
        raise ValueError(f"--reference {reference!r} is not one of the runs {list(runs)}.")
    x, y = problem.data.x, problem.data.y
    table = compare_posteriors(
        runs,
        problem.net,
        x,
        y,
        problem.likelihood,
        reference=reference,
        train_inputs=x,
        train_targets=y,
        generator=torch.Generator().manual_seed(0),
    )
    print(_markdown(table) if args.markdown else table.to_string())
    return 0


def _markdown(table) -> str:
    """A pandas DataFrame as a markdown table (no ``tabulate`` needed)."""

    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = ["", *map(str, table.columns)]
    rows = [[str(i), *(cell(v) for v in row)] for i, row in zip(table.index, table.values)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bnn-mcmc`` (all subcommands)."""
    p = argparse.ArgumentParser(
        prog="bnn-mcmc",
        description="MCMC for Bayesian neural networks: sample, diagnose and compare runs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser(
        "demo",
        help="Bayesian MLP on a 1-D toy with a gap: 8 ChEES-HMC chains, summary, plots",
        description="Sample a Bayesian MLP (1-20-20-1, tanh, N(0,1) prior, noise 0.1) on 40 "
        "points with a gap, with 8 ChEES-HMC chains in lockstep (120 warmup + 160 draws "
        "each), the sampler of ours that converges here first; print R-hat/ESS in weight "
        "and function space and divergences, and which sampler ran and why; write "
        "inference_data.nc, posterior_predictive.png, trace_rank.png and tensorboard logs.",
    )
    d.add_argument(
        "--out",
        default="bnn_mcmc_demo",
        help="output folder (default: ./bnn_mcmc_demo); must not hold a run",
    )
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser(
        "sample",
        help="run the sampling described in a TOML file",
        description="Run the sampling described in CONFIG.toml. Keys (section.key = default):"
        "\n\n" + describe_schema(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("config", metavar="CONFIG.toml", help="run description (TOML)")
    s.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run in the config's output folder from its "
        "checkpoints (same config required)",
    )
    s.add_argument("--out", default=None, help="override run.output_dir")
    s.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="shard the data of every chain over this many local processes (one thread "
        "each; rank 0 writes; overrides [parallel] nproc; --resume needs the same number); "
        "several machines: see the README",
    )
    s.set_defaults(func=cmd_sample)

    g = sub.add_parser(
        "diagnose",
        help="summary and plots of a saved run",
        description="Print R-hat/ESS (weight and function space), divergences, tree depth, "
        "E-BFMI and acceptance of the run saved in RUN_DIR and redraw its figures there.",
    )
    g.add_argument("run_dir", metavar="RUN_DIR", help="folder written by demo or sample")
    g.add_argument("--json", action="store_true", help="print the numbers as JSON")
    g.add_argument("--no-plots", action="store_true", help="do not redraw the figures")
    g.set_defaults(func=cmd_diagnose)

    c = sub.add_parser(
        "compare",
        help="comparison table across saved runs on the same data",
        description="Test NLL / RMSE or accuracy, ECE, predictive-variance ratio, agreement, "
        "total variation and MMD against a reference run, and ELPD-LOO, for saved runs of "
        "the same data and network (evaluated on the training data).",
    )
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders of saved runs")
    c.add_argument(
        "--reference", default=None, help="folder name of the reference run (default: the first)"
    )
    c.add_argument("--markdown", action="store_true", help="print a markdown table")
    c.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bnn-mcmc``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("bnn-mcmc: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one-line report; --debug re-raises
        if args.debug:
            raise
        kind = "config error" if isinstance(err, ConfigError) else type(err).__name__
        msg = " ".join(str(err).split())
        print(f"bnn-mcmc {args.command}: {kind}: {msg}", file=sys.stderr)
        return 1
