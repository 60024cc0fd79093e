"""What a run leaves behind: InferenceData, a diagnostics summary and figures.

Everything the run report (:func:`summarize`) and the plots need is in the saved netCDF file, so
``bnn-mcmc diagnose`` works on a finished run without the data or the code:

* ``posterior`` — weights by parameter name; ``sample_stats`` and
  ``warmup_sample_stats`` with ArviZ's names;
* ``log_likelihood``, ``posterior_predictive`` (one :math:`y` draw per weight draw)
  and ``observed_data`` at the training inputs, for LOO;
* ``predictions`` — ``f``: :math:`\\mathbb E[y \\mid f(x; w)]` (regression: the
  network output; classification: class probabilities) at ``x_grid`` (a line or a
  2-D grid over the data, in ``predictions_constant_data``): the function space in
  which the chains are diagnosed, since weight space is permutation symmetric.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ..bnn import evaluate_draws, pointwise_log_likelihood
from ..diagnostics.inference_data import to_inference_data
from ..diagnostics.report import run_report
from .problem import Problem

IDATA_FILE = "inference_data.nc"
PREDICTIVE_PNG = "posterior_predictive.png"
RANK_PNG = "trace_rank.png"


def prediction_grid(problem: Problem, num: int = 40) -> torch.Tensor:
    """The data's own line (1-D inputs) or a ``num x num`` grid over the first two inputs."""
    data = problem.data
    if data.x_grid is not None:
        return data.x_grid
    x = data.x
    if x.shape[1] != 2:
        return x
    lo, hi = x.min(0).values, x.max(0).values
    pad = 0.25 * (hi - lo)
    a = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), num, dtype=x.dtype)
    b = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), num, dtype=x.dtype)
    ga, gb = torch.meshgrid(a, b, indexing="xy")
    return torch.stack([ga.reshape(-1), gb.reshape(-1)], dim=1)


def build_inference_data(mc, problem: Problem, generator_seed: int = 0):
    """InferenceData of a finished :class:`~bnn_mcmc.multichain.MultiChainHMC` run."""
    draws = mc.samples()
    x, y = problem.data.x, problem.data.y
    lik = problem.likelihood
    net = problem.net
    loglik = pointwise_log_likelihood(net, draws, x, y, lik).cpu().numpy()
    f_train = evaluate_draws(net, draws, x)
    gen = torch.Generator().manual_seed(generator_seed)
    y_rep = lik.draw(f_train, gen).cpu().numpy()
    grid = prediction_grid(problem)
    with torch.no_grad():
        f_grid = lik.mean(evaluate_draws(net, draws, grid)).cpu().numpy()
    y_obs = y.cpu().numpy()
    if y_rep.ndim == 4 and y_rep.shape[-1] == 1:  # one real output: (chain, draw, n)
        y_rep, y_obs = y_rep[..., 0], y_obs[..., 0]
    idata = to_inference_data(
        mc,
        net=net,
        include_warmup=True,
        log_likelihood=loglik,
        predictions=y_rep,
        observed_data=y_obs,
    )
    idata.add_groups(
        predictions=xr.Dataset({"f": (("chain", "draw", "grid", "output"), f_grid)}),
        predictions_constant_data=xr.Dataset({"x_grid": (("grid", "feature"), grid.cpu().numpy())}),
        constant_data=xr.Dataset({"x": (("point", "feature"), x.cpu().numpy())}),
    )
    return idata


def summarize(idata) -> tuple[str, dict]:
    """Text and numbers of the run report (:func:`bnn_mcmc.diagnostics.report.run_report`,
    the report ``sampler.summary()`` prints): R-hat/ESS in weight and function space and of
    ``lp``, divergences, tree depth, E-BFMI, acceptance, with the fix to try for each
    problem found."""
    report = run_report(idata)
    return str(report), report.to_dict()


def plot_predictive(idata, path: Path) -> None:
    """Posterior predictive: data, mean, ±2 sd band and sample functions (1-D inputs),
    or the mean probability of the last class over the 2-D input grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = idata.predictions["f"].values  # (chain, draw, m, k)
    f = f.reshape(-1, *f.shape[2:])
    grid = idata.predictions_constant_data["x_grid"].values
    x = idata.constant_data["x"].values
    y = idata.observed_data["y"].values
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if grid.shape[1] == 1:
        g, fk = grid[:, 0], f[..., 0]
        mean, sd = fk.mean(0), fk.std(0)
        ax.fill_between(g, mean - 2 * sd, mean + 2 * sd, alpha=0.25, label="mean ± 2 sd")
        pick = np.linspace(0, fk.shape[0] - 1, min(20, fk.shape[0])).astype(int)
        ax.plot(g, fk[pick].T, color="C0", lw=0.5, alpha=0.4)
        ax.plot(g, mean, color="C0", lw=2, label="posterior mean")
        ax.scatter(x[:, 0], y.reshape(len(x), -1)[:, 0], color="k", s=12, zorder=3, label="data")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.legend(loc="best")
    else:
        side = int(round(np.sqrt(grid.shape[0])))
        p = f[..., -1].mean(0).reshape(side, side)
        cs = ax.contourf(
            grid[:, 0].reshape(side, side),
            grid[:, 1].reshape(side, side),
            p,
            levels=20,
            cmap="RdBu_r",
            vmin=0,
            vmax=1,
        )
        fig.colorbar(cs, ax=ax, label="posterior mean P(last class)")
        ax.scatter(x[:, 0], x[:, 1], c=y.reshape(-1), cmap="RdBu_r", edgecolor="k", s=14)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
    ax.set_title("posterior predictive")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_trace_rank(idata, path: Path) -> None:
    """Trace and rank plots of ``lp`` and of predictions at three inputs (function space)."""
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = idata.predictions["f"].values
    m = f.shape[2]
    picks = sorted({0, m // 2, m - 1})
    grid = idata.predictions_constant_data["x_grid"].values
    values = {"lp": idata.sample_stats["lp"].values}
    for i in picks:
        where = ", ".join(f"{v:.2f}" for v in grid[i])
        values[f"f(x=({where}))"] = f[:, :, i, -1]
    axes = az.plot_trace(az.from_dict(posterior=values), kind="rank_bars", compact=False)
    fig = np.asarray(axes).ravel()[0].figure
    fig.suptitle("trace (left) and rank (right) plots: lp and predictions at 3 inputs")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_outputs(idata, out: Path) -> dict[str, Path]:
    """Save the netCDF file and the two figures in ``out``."""
    paths = {"idata": out / IDATA_FILE, "predictive": out / PREDICTIVE_PNG, "rank": out / RANK_PNG}
    idata.to_netcdf(str(paths["idata"]))
    plot_predictive(idata, paths["predictive"])
    plot_trace_rank(idata, paths["rank"])
    return paths
