r"""Per-input distances between predictive distributions, calibration and spread.

For a posterior given by weight draws :math:`w_1..w_S` the predictive distribution at an
input :math:`x_i` is the mixture :math:`p_i(y) = \frac1S\sum_s p(y \mid f(x_i; w_s))`.

One real output
    The mixture densities :math:`p_i` and :math:`r_i` (method and reference) are evaluated on
    a grid :math:`y_1 < \dots < y_G` per input that covers both predictives and the test
    target (the range of one predictive draw per weight draw, padded by that range on each
    side).  With the trapezoidal rule and the cumulative distribution functions
    :math:`P_i, R_i`,

    .. math:: \mathrm{TV}_i = \tfrac12\int |p_i - r_i|\,dy, \qquad
              W_{1,i} = \int |P_i(y) - R_i(y)|\,dy, \qquad
              \mathrm{KL}_i = \int r_i \log\frac{r_i}{p_i}\,dy ,

    the KL from the *reference* to the method (inclusive direction: large when the method
    puts no mass where the reference does, i.e. when it is over-confident).  The
    probability integral transform of a test target is :math:`\mathrm{PIT}_i = P_i(y_i)`;
    the central :math:`\alpha` interval covers :math:`y_i` exactly when
    :math:`|\mathrm{PIT}_i - \frac12| \le \frac\alpha2`.
Classes
    :math:`\mathrm{TV}_i = \frac12\sum_c |p_{ic} - r_{ic}|`, :math:`W_{1,i} = \mathrm{TV}_i`
    (Wasserstein-1 under the 0-1 metric between unordered labels) and
    :math:`\mathrm{KL}_i = \sum_c r_{ic}\log(r_{ic}/p_{ic})`.

The *effective rank* of a set of draws is :math:`\exp(-\sum_j \bar s_j \log \bar s_j)` with
:math:`\bar s_j` the singular values of the centred ``(S, P)`` draw matrix normalised to sum
to one (Roy & Vetterli, 2007): the number of directions the draws really spread along.

References
----------
Gneiting, T., Balabdaoui, F. and Raftery, A. E. (2007). Probabilistic forecasts,
calibration and sharpness. *JRSS B* 69, 243-268.
Guo, C., Pleiss, G., Sun, Y. and Weinberger, K. Q. (2017). On calibration of modern
neural networks. *ICML*.
Roy, O. and Vetterli, M. (2007). The effective rank: a measure of effective
dimensionality. *EUSIPCO*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..bnn.likelihoods import BernoulliLikelihood, CategoricalLikelihood, Likelihood

CLASSIFICATION = (CategoricalLikelihood, BernoulliLikelihood)


def class_probs(mean: Tensor, likelihood: Likelihood) -> Tensor:
    """``(n, C)`` class probabilities from the mean response (Bernoulli: two columns)."""
    if isinstance(likelihood, CategoricalLikelihood):
        return mean
    return torch.cat([1 - mean, mean], -1)


@dataclass(frozen=True)
class PerInputDistances:
    """Distances from a method's predictive to the reference's, one value per input.

    Attributes
    ----------
    tv, w1, kl : Tensor
        ``(n,)`` total variation, Wasserstein-1 and :math:`\\mathrm{KL}(\\text{ref}\\Vert
        \\text{method})` (see the module docstring).
    """

    tv: Tensor
    w1: Tensor
    kl: Tensor


def mixture_density(
    preds: Tensor, likelihood: Likelihood, grid: Tensor, extra: Tensor | None = None
) -> Tensor:
    r"""Mixture density :math:`\frac1S\sum_s p(y_g \mid f_s)`, shape ``(G, n)``.

    Parameters
    ----------
    preds : Tensor
        ``(S, n, 1)`` network outputs.
    grid : Tensor
        ``(G, n)`` values of :math:`y` per input.
    extra : Tensor, optional
        ``(S, num_extra_params)`` likelihood parameters.
    """
    out = []
    log_s = math.log(preds.shape[0])
    for y in grid:
        ll = likelihood.log_prob(preds, y.unsqueeze(-1), extra)
        out.append(torch.exp(torch.logsumexp(ll, 0) - log_s))
    return torch.stack(out)


def predictive_grid(
    draws: list[Tensor], targets: Tensor | None, num_grid: int, dtype: torch.dtype
) -> Tensor:
    """``(G, n)`` grid per input covering predictive draws ``(S_k, n)`` and the targets."""
    lo = torch.stack([d.min(0).values for d in draws]).min(0).values
    hi = torch.stack([d.max(0).values for d in draws]).max(0).values
    if targets is not None:
        lo, hi = torch.minimum(lo, targets), torch.maximum(hi, targets)
    pad = (hi - lo).clamp_min(1e-12)
    t = torch.linspace(0.0, 1.0, num_grid, dtype=dtype)[:, None]
    return (lo - pad) + t * (hi - lo + 2 * pad)


def _cumtrapz(p: Tensor, grid: Tensor) -> Tensor:
    dy = grid[1:] - grid[:-1]
    steps = 0.5 * (p[1:] + p[:-1]) * dy
    return torch.cat([torch.zeros_like(p[:1]), steps.cumsum(0)])


def grid_distances(p: Tensor, r: Tensor, grid: Tensor) -> PerInputDistances:
    """TV, W1 and KL(r || p) of densities ``p``, ``r`` ``(G, n)`` on ``grid`` ``(G, n)``.

    The CDFs are normalised to end at one, so a little mass outside the grid does not
    show up as a distance.
    """
    tv = 0.5 * torch.trapezoid((p - r).abs(), grid, dim=0)
    cp, cr = _cumtrapz(p, grid), _cumtrapz(r, grid)
    cp, cr = cp / cp[-1].clamp_min(1e-300), cr / cr[-1].clamp_min(1e-300)
    w1 = torch.trapezoid((cp - cr).abs(), grid, dim=0)
    tiny = torch.finfo(p.dtype).tiny
    integrand = torch.where(
        r > 0, r * (torch.log(r.clamp_min(tiny)) - torch.log(p.clamp_min(tiny))), 0.0
    )
    kl = torch.trapezoid(integrand, grid, dim=0).clamp_min(0.0)
    return PerInputDistances(tv=tv, w1=w1, kl=kl)


def regression_distances(
    preds: Tensor,
    extra: Tensor | None,
    ref_preds: Tensor,
    ref_extra: Tensor | None,
    likelihood: Likelihood,
    generator: torch.Generator,
    num_grid: int = 512,
) -> PerInputDistances:
    """Per-input distances of two one-output predictives ``(S, n, 1)`` on a joint grid."""
    y = likelihood.draw(preds, generator, extra)[..., 0]
    y_ref = likelihood.draw(ref_preds, generator, ref_extra)[..., 0]
    grid = predictive_grid([y, y_ref], None, num_grid, preds.dtype)
    p = mixture_density(preds, likelihood, grid, extra)
    r = mixture_density(ref_preds, likelihood, grid, ref_extra)
    return grid_distances(p, r, grid)


def class_distances(probs: Tensor, ref_probs: Tensor) -> PerInputDistances:
    """Per-input distances of class probabilities ``(n, C)`` (see the module docstring)."""
    tv = 0.5 * (probs - ref_probs).abs().sum(-1)
    tiny = torch.finfo(probs.dtype).tiny
    terms = ref_probs * (torch.log(ref_probs.clamp_min(tiny)) - torch.log(probs.clamp_min(tiny)))
    kl = torch.where(ref_probs > 0, terms, 0.0).sum(-1).clamp_min(0.0)
    return PerInputDistances(tv=tv, w1=tv, kl=kl)


def pit_values(
    preds: Tensor,
    extra: Tensor | None,
    targets: Tensor,
    likelihood: Likelihood,
    generator: torch.Generator,
    num_grid: int = 1024,
) -> Tensor:
    r"""Probability integral transform :math:`P_i(y_i)` of one-output targets ``(n,)``."""
    y = likelihood.draw(preds, generator, extra)[..., 0]
    grid = predictive_grid([y], targets, num_grid, preds.dtype)
    cdf = _cumtrapz(mixture_density(preds, likelihood, grid, extra), grid)
    cdf = cdf / cdf[-1].clamp_min(1e-300)
    # linear interpolation of each input's CDF at its target
    g = num_grid - 1
    pos = ((targets - grid[0]) / (grid[-1] - grid[0]) * g).clamp(0, g)
    j = pos.floor().long().clamp(max=g - 1)
    frac = pos - j
    idx = torch.arange(targets.numel())
    return (1 - frac) * cdf[j, idx] + frac * cdf[j + 1, idx]


def interval_coverage(pit: Tensor, level: float) -> float:
    """Fraction of targets inside the central ``level`` predictive interval."""
    return float(((pit - 0.5).abs() <= 0.5 * level).double().mean())


#: Nominal levels of the regression reliability curve.
RELIABILITY_LEVELS = tuple(round(0.05 + 0.1 * k, 2) for k in range(10))


def coverage_error(pit: Tensor, levels: tuple[float, ...] = RELIABILITY_LEVELS) -> float:
    r"""Mean :math:`|\text{coverage}(\alpha) - \alpha|` over ``levels`` (0 when calibrated)."""
    return float(sum(abs(interval_coverage(pit, a) - a) for a in levels) / len(levels))


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Binned calibration: regression by PIT, classification by confidence.

    Attributes
    ----------
    kind : str
        ``'pit'`` (regression: ``x`` nominal central-interval levels, ``y`` observed
        coverage) or ``'confidence'`` (classification: ``x`` mean confidence per bin,
        ``y`` accuracy per bin).
    x, y : tuple of float
        The curve; the diagonal ``y = x`` is perfect calibration (empty bins are ``nan``).
    counts : tuple of int
        Test points per bin (for ``'pit'``: the PIT histogram over ten equal bins).
    """

    kind: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    counts: tuple[int, ...]

    def plot(self, ax=None):
        """Draw the curve against the diagonal on a matplotlib axis; returns the axis."""
        import matplotlib.pyplot as plt

        ax = plt.gca() if ax is None else ax
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        ax.plot(self.x, self.y, marker="o")
        label = "nominal level" if self.kind == "pit" else "confidence"
        ax.set_xlabel(label)
        ax.set_ylabel("observed coverage" if self.kind == "pit" else "accuracy")
        return ax


def pit_reliability(pit: Tensor) -> ReliabilityDiagram:
    """Coverage at :data:`RELIABILITY_LEVELS` and the ten-bin PIT histogram."""
    hist = torch.histc(pit.double(), bins=10, min=0.0, max=1.0)
    return ReliabilityDiagram(
        kind="pit",
        x=RELIABILITY_LEVELS,
        y=tuple(interval_coverage(pit, a) for a in RELIABILITY_LEVELS),
        counts=tuple(int(c) for c in hist),
    )


def confidence_reliability(probs: Tensor, labels: Tensor, num_bins: int = 15) -> ReliabilityDiagram:
    """Accuracy against mean confidence over ``num_bins`` equal-width confidence bins."""
    conf, pred = probs.max(-1)
    correct = (pred == labels).double()
    bins = torch.clamp((conf * num_bins).long(), max=num_bins - 1)
    xs, ys, ns = [], [], []
    for b in range(num_bins):
        mask = bins == b
        n = int(mask.sum())
        ns.append(n)
        xs.append(float(conf[mask].double().mean()) if n else math.nan)
        ys.append(float(correct[mask].mean()) if n else math.nan)
    return ReliabilityDiagram(kind="confidence", x=tuple(xs), y=tuple(ys), counts=tuple(ns))


def effective_rank(draws: Tensor) -> float:
    """Effective rank of ``(S, P)`` weight draws (see the module docstring)."""
    x = draws.reshape(-1, draws.shape[-1]).double()
    s = torch.linalg.svdvals(x - x.mean(0))
    if float(s.sum()) == 0.0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
