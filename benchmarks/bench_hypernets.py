"""Hypernetworks against MCMC on the 1-D gap problem, region by region, over seeds.

Data: ``regression_gap(n=40)`` (inputs on [-1.5, -0.5] and [0.5, 1.5]); network MLP
1-20-20-1 (tanh, 481 weights), Gaussian noise of precision 100, prior N(0, 1).  Test
inputs: 111 points on [-2.2, 2.2], split by ``find_regions`` into near / gap / outside.

Methods, per seed: NUTS (2 chains, the reference; noise floor = chain 0 against chain 1),
SSGE and AVB implicit posteriors (HMLP 8-64-64-481 behind an independent output
perturbation, defaults of this package: SSGE and AVB draws = dimension, AVB covariance
contrast with R1/R2 gradient penalty and saturation warning),
mean field (with PSIS-k) and a deep ensemble of 5 MAP fits.  Everything runs on one
thread; ``--fast`` is a smoke run.

Run: ``python benchmarks/bench_hypernets.py [--seeds 0 1] [--fast]``.  One seed per process
can be run in parallel with ``--seeds 0 --save a.pt`` and merged with ``--merge a.pt b.pt``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from bnn_mcmc.bnn import MLP, GaussianLikelihood, GaussianPrior, nn_pot_energy
from bnn_mcmc.datasets import regression_gap
from bnn_mcmc.diagnostics import (
    Cost,
    RegionComparison,
    RegionRow,
    compare_posteriors,
    posterior_importance,
    summarize_repeats,
)
from bnn_mcmc.hnets import HMLP, HPerturbWrapper
from bnn_mcmc.multichain import MultiChainHMC
from bnn_mcmc.variational import (
    AVB,
    SSGE,
    AVBSaturationWarning,
    ImplicitPosterior,
    MeanFieldGaussian,
    TrainConfig,
    elbo_estimate,
    fit_deep_ensemble,
    fit_variational,
)

# Sized for a shared, loaded 2-core machine (one seed: about 15 CPU-minutes, NUTS most of it).
NUTS_WARMUP, NUTS_DRAWS, NUTS_DEPTH = 150, 150, 6
SSGE_ITERS, AVB_ITERS, MF_ITERS = 150, 600, 1500
ENS_MEMBERS, ENS_STEPS = 5, 800

COLUMNS = (
    "num_points",
    "sd_ratio",
    "sd_ratio_floor",
    "tv",
    "tv_floor",
    "w1",
    "w1_floor",
    "kl",
    "kl_floor",
    "coverage_90",
    "calibration_error",
    "test_nll",
)
COST_COLUMNS = ("effective_rank", "pareto_k", "wall_time_s", "grad_evals")


def problem():
    data = regression_gap(n=40, noise=0.1, seed=0)
    g = torch.Generator().manual_seed(123)
    x_test = torch.linspace(-2.2, 2.2, 111)[:, None]
    y_test = torch.sin(3 * x_test) + 0.3 * x_test + 0.1 * torch.randn(111, 1, generator=g)
    net = MLP(1, 1, hidden_layers=(20, 20), activation_fn=torch.tanh)
    return data.x.float(), data.y.float(), x_test, y_test, net


def implicit(net, estimator: str, seed: int) -> ImplicitPosterior:
    inner = HMLP(
        net.param_shapes,
        uncond_in_size=8,
        cond_in_size=0,
        layers=(64, 64),
        generator=seed,
        verbose=False,
    )
    hnet = HPerturbWrapper(inner, sigma_noise=0.01, perturbation="independent", verbose=False)
    est = SSGE() if estimator == "ssge" else AVB(hnet.num_outputs, generator=seed)
    return ImplicitPosterior(hnet, est)


def run_seed(seed: int, fast: bool) -> tuple[RegionComparison, dict]:
    torch.manual_seed(seed)
    x, y, x_test, y_test, net = problem()
    lik, prior = GaussianLikelihood(100.0), GaussianPrior(1.0)
    notes: dict[str, object] = {}
    draws, costs = {}, {}

    pot = nn_pot_energy(net, x, y, likelihood=lik, prior=prior)
    starts = torch.stack(
        [
            torch.nn.utils.parameters_to_vector(
                MLP(
                    1,
                    1,
                    (20, 20),
                    torch.tanh,
                    generator=torch.Generator().manual_seed(100 * seed + k),
                ).parameters()
            ).detach()
            for k in range(2)
        ]
    )
    warm, num = (30, 30) if fast else (NUTS_WARMUP, NUTS_DRAWS)
    t0 = time.perf_counter()
    mc = MultiChainHMC(starts, pot, "nuts", seed=seed, max_tree_depth=NUTS_DEPTH)
    mc.warmup(warm)
    mc.simulate_chains(num)
    costs["NUTS"] = Cost(time.perf_counter() - t0, float(sum(c.num_grad_evals for c in mc.chains)))
    draws["NUTS"] = mc.samples()

    iters = {"ssge": 60 if fast else SSGE_ITERS, "avb": 100 if fast else AVB_ITERS}
    for name, est in (("SSGE", "ssge"), ("AVB", "avb")):
        q = implicit(net, est, seed)
        cfg = TrainConfig(num_iters=iters[est], lr=1e-2, lr_final=1e-3, elbo_every=None)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AVBSaturationWarning)
            hist = fit_variational(q, net, x, y, lik, prior, cfg, generator=seed)
        m = q.default_num_samples()
        costs[name] = Cost(time.perf_counter() - t0, float(iters[est] * m))
        draws[name] = q.sample(1000, generator=seed)
        elbo = elbo_estimate(q, net, x, y, lik, prior, num_draws=256, generator=seed)
        notes[name] = {
            "draws_per_step": m,
            "elbo": (round(elbo.value, 1), round(elbo.se, 1), elbo.kind),
            "loss_kind": hist.loss_kind,
            "final_disc_loss": hist.disc_loss[-1],
            "saturation_warnings": sum(
                issubclass(w.category, AVBSaturationWarning) for w in caught
            ),
        }

    mf = MeanFieldGaussian(net.num_params, init_std=0.05)
    mf_iters = 100 if fast else MF_ITERS
    t0 = time.perf_counter()
    fit_variational(
        mf,
        net,
        x,
        y,
        lik,
        prior,
        TrainConfig(num_iters=mf_iters, lr=0.01, lr_final=1e-3, elbo_every=None),
        generator=seed,
    )
    costs["mean-field"] = Cost(time.perf_counter() - t0, float(mf_iters * 32))
    draws["mean-field"] = mf.sample(1000, generator=seed)
    imp = posterior_importance(mf, pot, 1000, generator=seed)
    elbo = elbo_estimate(mf, net, x, y, lik, prior, num_draws=256, generator=seed)
    notes["mean-field"] = {
        "elbo": (round(elbo.value, 1), round(elbo.se, 1), elbo.kind),
        "psis_ess": round(imp.ess, 1),
    }

    ens = fit_deep_ensemble(
        net,
        lik,
        prior,
        x,
        y,
        num_members=ENS_MEMBERS,
        steps=200 if fast else ENS_STEPS,
        lr=0.01,
        generator=seed,
    )
    costs["ensemble"] = ens.cost
    draws["ensemble"] = ens.members

    res = compare_posteriors(
        draws,
        net,
        x_test,
        y_test,
        lik,
        reference="NUTS",
        regions="auto",
        train_inputs=x,
        costs=costs,
        pareto_k={"mean-field": imp.pareto_k},
    )
    notes["NUTS"] = {
        "divergences": sum(
            int(c.divergences.sum()) if hasattr(c, "divergences") else 0 for c in mc.chains
        )
    }
    return res, notes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--save", default=None)
    parser.add_argument("--merge", nargs="+", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    if args.merge:
        for path in args.merge:
            results += [_from_saved(r) for r in torch.load(path, weights_only=True)]
    else:
        for seed in args.seeds:
            res, notes = run_seed(seed, args.fast)
            print(
                f"\n=== seed {seed}  (noise floor: {res.floor}); NUTS {NUTS_WARMUP}+{NUTS_DRAWS} "
                f"depth {NUTS_DEPTH}, SSGE {SSGE_ITERS} it, AVB {AVB_ITERS} it, MF {MF_ITERS} it, "
                f"ensemble {ENS_MEMBERS}x{ENS_STEPS}",
                flush=True,
            )
            print(res.to_text(COLUMNS))
            print(res.to_text(COST_COLUMNS))
            for k, v in notes.items():
                print(f"  {k}: {v}")
            results.append(res)
        if args.save:
            torch.save([_to_saved(r) for r in results], args.save)
    print(f"\n=== mean ± sd over {len(results)} seeds")
    summary = summarize_repeats(results)
    print(summary.to_text(COLUMNS))
    print(summary.to_text(COST_COLUMNS))


def _to_saved(res: RegionComparison) -> dict:
    rows = [
        {k: getattr(r, k) for k in RegionRow.__dataclass_fields__ if k != "reliability"}
        for r in res.rows
    ]
    return {"rows": rows, "reference": res.reference, "floor": res.floor}


def _from_saved(d: dict) -> RegionComparison:
    rows = tuple(RegionRow(**r) for r in d["rows"])
    return RegionComparison(rows=rows, reference=d["reference"], floor=d["floor"])


if __name__ == "__main__":
    main()
