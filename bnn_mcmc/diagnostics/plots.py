"""Figures comparing posteriors: regression bands, uncertainty maps, weight pair plots.

Every function takes ``{name: draws}`` (as :func:`~bnn_mcmc.diagnostics.compare.
compare_posteriors` does) and returns a :class:`matplotlib.figure.Figure` built without
``pyplot`` (so no global figure state and no GUI backend: ``fig.savefig('x.png')`` renders
with Agg).  Colours follow matplotlib's default cycle, in the mapping's order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..bnn.functional import FunctionalNet, MainNetFunction, as_function
from ..bnn.likelihoods import BernoulliLikelihood, CategoricalLikelihood, Likelihood
from ..bnn.predictive import evaluate_draws
from .compare import draws_by_chain

_COLORS = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]


def _flat_draws(posteriors: Mapping[str, object], dim: int | None) -> dict[str, Tensor]:
    if not isinstance(posteriors, Mapping) or not posteriors:
        raise TypeError("posteriors must be a non-empty mapping {name: draws}.")
    if len(posteriors) > len(_COLORS):
        raise ValueError(f"at most {len(_COLORS)} posteriors per figure, got {len(posteriors)}.")
    draws = {}
    for name, d in posteriors.items():
        chains = draws_by_chain(d, dim, f"posteriors[{name!r}]")
        draws[name] = chains.reshape(-1, chains.shape[-1])
        dim = chains.shape[-1]
    return draws


def plot_regression_bands(
    posteriors: Mapping[str, object],
    net: nn.Module | FunctionalNet | MainNetFunction,
    inputs: Tensor,
    train_inputs: Tensor | None = None,
    train_targets: Tensor | None = None,
    num_functions: int = 5,
) -> Figure:
    r"""1-D regression: mean :math:`\pm 2` sd of :math:`f(x; w)` and sample functions.

    Parameters
    ----------
    posteriors : mapping of str to draws
        Weight draws per method (tensor ``(S, dim)`` / ``(chains, draws, dim)`` or
        InferenceData).
    net : nn.Module, FunctionalNet or MainNetFunction
        A network with one input and one output.
    inputs : Tensor
        ``(n, 1)`` grid of inputs (sorted for clean lines).
    train_inputs, train_targets : Tensor, optional
        Data shown as black dots.
    num_functions : int
        Sample functions drawn per method (evenly spaced draws).

    Returns
    -------
    Figure
        One axes; per method a shaded band, a mean line (labelled) and thin sample lines.
    """
    f = as_function(net)
    if not isinstance(inputs, Tensor) or inputs.dim() != 2 or inputs.shape[1] != 1:
        raise ValueError("inputs must be a (n, 1) tensor of 1-D inputs.")
    if num_functions < 0:
        raise ValueError(f"num_functions must be >= 0, got {num_functions!r}.")
    draws = _flat_draws(posteriors, f.dim)
    x = inputs[:, 0].detach().cpu().numpy()
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for color, (name, d) in zip(_COLORS, draws.items()):
        out = evaluate_draws(f, d.to(inputs.dtype), inputs)
        if out.shape[-1] != 1:
            raise ValueError(
                f"the network must have one output for band plots, got {out.shape[-1]}."
            )
        fx = out[..., 0]
        mean, sd = fx.mean(0).cpu().numpy(), fx.std(0).cpu().numpy()
        ax.fill_between(x, mean - 2 * sd, mean + 2 * sd, color=color, alpha=0.2, linewidth=0)
        ax.plot(x, mean, color=color, linewidth=2, label=f"{name} (mean ± 2 sd)")
        if num_functions:
            idx = torch.linspace(0, fx.shape[0] - 1, min(num_functions, fx.shape[0])).long()
            for row in fx[idx].cpu().numpy():
                ax.plot(x, row, color=color, linewidth=0.6, alpha=0.6)
    if train_inputs is not None and train_targets is not None:
        ax.scatter(
            train_inputs.reshape(-1).cpu().numpy(),
            train_targets.reshape(-1).cpu().numpy(),
            s=12,
            color="black",
            zorder=3,
            label="data",
        )
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)")
    ax.set_title("Posterior predictive bands")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def _entropy(probs: Tensor) -> Tensor:
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)


def plot_classification_uncertainty(
    posteriors: Mapping[str, object],
    net: nn.Module | FunctionalNet | MainNetFunction,
    likelihood: Likelihood,
    train_inputs: Tensor,
    train_targets: Tensor,
    resolution: int = 60,
    margin: float = 0.5,
) -> Figure:
    r"""2-D classification: predictive entropy :math:`H[\bar p(y \mid x)]` on a grid.

    One panel per method (same colour scale, :math:`[0, \log C]`), training points
    coloured by class on top, and a shared colour bar.

    Parameters
    ----------
    likelihood : CategoricalLikelihood or BernoulliLikelihood
        Turns network outputs into class probabilities.
    train_inputs : Tensor
        ``(n, 2)``; sets the plotted region (its bounding box widened by ``margin``).
    train_targets : Tensor
        Class labels ``(n,)``.
    resolution : int
        Grid points per axis.
    margin : float
        Added on every side of the data's bounding box.
    """
    if not isinstance(likelihood, (CategoricalLikelihood, BernoulliLikelihood)):
        raise TypeError("likelihood must be a CategoricalLikelihood or BernoulliLikelihood.")
    if (
        not isinstance(train_inputs, Tensor)
        or train_inputs.dim() != 2
        or train_inputs.shape[1] != 2
    ):
        raise ValueError("train_inputs must be a (n, 2) tensor: the maps are 2-D.")
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution!r}.")
    f = as_function(net)
    draws = _flat_draws(posteriors, f.dim)
    lo = train_inputs.min(0).values - margin
    hi = train_inputs.max(0).values + margin
    gx = torch.linspace(float(lo[0]), float(hi[0]), resolution, dtype=train_inputs.dtype)
    gy = torch.linspace(float(lo[1]), float(hi[1]), resolution, dtype=train_inputs.dtype)
    xx, yy = torch.meshgrid(gx, gy, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    num = len(draws)
    fig = Figure(figsize=(4 * num + 1, 4))
    axes = fig.subplots(1, num, squeeze=False)[0]
    mesh = None
    for ax, (name, d) in zip(axes, draws.items()):
        with torch.no_grad():
            mean = likelihood.mean(evaluate_draws(f, d.to(grid.dtype), grid)).mean(0)
        probs = (
            mean
            if isinstance(likelihood, CategoricalLikelihood)
            else torch.cat([1 - mean, mean], -1)
        )
        ent = _entropy(probs).reshape(resolution, resolution)
        mesh = ax.pcolormesh(
            gx.numpy(),
            gy.numpy(),
            ent.numpy(),
            shading="auto",
            cmap="viridis",
            vmin=0.0,
            vmax=math.log(probs.shape[-1]),
        )
        ax.scatter(
            train_inputs[:, 0].numpy(),
            train_inputs[:, 1].numpy(),
            c=train_targets.reshape(-1).numpy(),
            cmap="coolwarm",
            s=10,
            edgecolors="white",
            linewidths=0.3,
        )
        ax.set_title(name)
        ax.set_xlabel("$x_1$")
    axes[0].set_ylabel("$x_2$")
    fig.colorbar(mesh, ax=list(axes), label="predictive entropy (nats)")
    return fig


def plot_weight_pairs(
    posteriors: Mapping[str, object],
    indices: Sequence[int],
    names: Sequence[str] | None = None,
    max_points: int = 500,
) -> Figure:
    """Pair plot of chosen weights: histograms on the diagonal, scatter below it.

    Weight-space marginals of networks are only comparable between methods up to the
    hidden-unit symmetries (a permuted mode is an equally good mode); output-layer biases
    and linear models are safe choices.

    Parameters
    ----------
    posteriors : mapping of str to draws
        Weight draws per method (all of the same length).
    indices : sequence of int
        Positions in the flat weight vector to show (at least 2).
    names : sequence of str, optional
        Axis labels (default ``w[i]``).
    max_points : int
        Scatter points per method (evenly thinned).
    """
    idx = [int(i) for i in indices]
    if len(idx) < 2:
        raise ValueError("indices must name at least 2 weights for a pair plot.")
    draws = _flat_draws(posteriors, None)
    dim = next(iter(draws.values())).shape[-1]
    if not all(0 <= i < dim for i in idx):
        raise ValueError(f"indices must lie in [0, {dim}); got {idx}.")
    labels = [f"w[{i}]" for i in idx] if names is None else list(names)
    if len(labels) != len(idx):
        raise ValueError(f"names has {len(labels)} entries for {len(idx)} indices.")
    k = len(idx)
    fig = Figure(figsize=(2.4 * k, 2.4 * k))
    axes = fig.subplots(k, k, squeeze=False)
    for r in range(k):
        for c in range(k):
            ax = axes[r][c]
            if c > r:
                ax.set_axis_off()
                continue
            for color, (name, d) in zip(_COLORS, draws.items()):
                if r == c:
                    ax.hist(
                        d[:, idx[r]].numpy(),
                        bins=30,
                        density=True,
                        histtype="step",
                        color=color,
                        label=name,
                    )
                else:
                    step = max(1, d.shape[0] // max_points)
                    ax.scatter(
                        d[::step, idx[c]].numpy(),
                        d[::step, idx[r]].numpy(),
                        s=3,
                        alpha=0.4,
                        color=color,
                    )
            if r == k - 1:
                ax.set_xlabel(labels[c])
            if c == 0 and r > 0:
                ax.set_ylabel(labels[r])
    axes[0][0].legend(fontsize="x-small", loc="upper right")
    fig.tight_layout()
    return fig
