r"""Region-by-region comparison of approximate posteriors with an MCMC reference.

A pooled distance over all test inputs is dominated by the inputs near the data, where
every method agrees; the question "does it know what it does not know" is answered in the
gaps and outside the data.  :func:`compare_by_region` therefore reports, for every
posterior and every region (a boolean mask over the test inputs, e.g. from
:func:`~bnn_mcmc.diagnostics.regions.find_regions`), with :math:`\bar{\cdot}` the mean over
the region's inputs:

``sd_ratio``
    :math:`\sqrt{\overline{\mathrm{Var}_q[\mathbb E(y\mid f)]}\,/\,
    \overline{\mathrm{Var}_{\rm ref}[\mathbb E(y\mid f)]}}`: epistemic spread relative to
    the reference (1 is right, below 1 over-confident).
``tv``, ``w1``, ``kl``
    Mean per-input total variation, Wasserstein-1 and :math:`\mathrm{KL}(\text{ref}\Vert q)`
    of the predictive distributions (:mod:`~bnn_mcmc.diagnostics.predictive_metrics`).
``*_floor``
    The same quantity between two halves of the reference -- split chains when it has at
    least two chains, else the first and second half of its draws -- or between the
    reference and a second reference run (``noise_floor=name``).  A distance at or below
    its floor cannot be told apart from MCMC noise.  The halves hold half the draws, so the
    split floor slightly overstates the noise of the full reference (conservative).
``coverage_50/90/95``, ``calibration_error``
    Regression: fraction of test targets in the central predictive intervals and the mean
    absolute coverage error over nine levels (PIT reliability). Classification: coverage is
    ``nan`` and ``calibration_error`` is the ECE.  ``reliability`` (not a table column)
    holds the :class:`~bnn_mcmc.diagnostics.predictive_metrics.ReliabilityDiagram`.
``test_nll``
    Mean predictive negative log-likelihood on the region.
``effective_rank``, ``pareto_k``, ``wall_time_s``, ``grad_evals``
    Per posterior: effective rank of its weight draws, the PSIS Pareto :math:`\hat k` and
    the cost, when given (``nan`` otherwise).

:func:`summarize_repeats` turns comparisons of several seeds into mean :math:`\pm` sd.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from ..bnn.functional import FunctionalNet, MainNetFunction, as_function
from ..bnn.likelihoods import Likelihood
from ..bnn.predictive import evaluate_draws
from .draws import draws_by_chain
from .predictive_metrics import (
    CLASSIFICATION,
    PerInputDistances,
    ReliabilityDiagram,
    class_distances,
    class_probs,
    confidence_reliability,
    coverage_error,
    effective_rank,
    interval_coverage,
    pit_reliability,
    pit_values,
    regression_distances,
)
from .regions import find_regions

COVERAGE_LEVELS = (0.5, 0.9, 0.95)


@dataclass(frozen=True)
class Cost:
    """What a posterior cost to obtain.

    Attributes
    ----------
    wall_time_s : float
        Wall-clock seconds of the fit or the sampling run (warm-up included).
    grad_evals : float
        Gradient evaluations of the log posterior (MCMC: leapfrog steps; variational:
        iterations times draws per iteration; ensembles: members times steps).
    """

    wall_time_s: float = math.nan
    grad_evals: float = math.nan


@dataclass(frozen=True)
class RegionRow:
    """Metrics of one posterior on one region (see the module docstring)."""

    posterior: str
    region: str
    num_points: int
    sd_ratio: float
    sd_ratio_floor: float
    tv: float
    tv_floor: float
    w1: float
    w1_floor: float
    kl: float
    kl_floor: float
    test_nll: float
    coverage_50: float
    coverage_90: float
    coverage_95: float
    calibration_error: float
    effective_rank: float
    pareto_k: float
    wall_time_s: float
    grad_evals: float
    reliability: ReliabilityDiagram | None = None


TABLE_COLUMNS = tuple(f.name for f in fields(RegionRow) if f.name != "reliability")
NUMERIC_COLUMNS = TABLE_COLUMNS[2:]


def format_table(header: Sequence[str], body: Sequence[Sequence[object]]) -> str:
    """Plain-text table, numbers to three significant digits."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.3g}"
        return str(v)

    cells = [list(header)] + [[cell(v) for v in row] for row in body]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _to_frame(columns: Sequence[str], body: list[list[object]], index: int = 2):
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas comes with arviz
        return None
    frame = pd.DataFrame(body, columns=list(columns))
    return frame.set_index(list(columns[:index]))


@dataclass(frozen=True)
class RegionComparison:
    """Result of :func:`compare_by_region`.

    Attributes
    ----------
    rows : tuple of RegionRow
        One per (posterior, region), posteriors in the given order.
    reference : str
        Name of the reference posterior.
    floor : str
        How the noise floor was obtained (``'split chains'``, ``'split draws'`` or the
        name of the second reference).
    """

    rows: tuple[RegionRow, ...]
    reference: str
    floor: str

    def row(self, posterior: str, region: str) -> RegionRow:
        """The row of ``posterior`` on ``region``."""
        for r in self.rows:
            if r.posterior == posterior and r.region == region:
                return r
        raise KeyError(f"no row for posterior={posterior!r}, region={region!r}.")

    def to_dataframe(self):
        """A ``pandas.DataFrame`` indexed by (posterior, region); ``None`` without pandas."""
        body = [[getattr(r, c) for c in TABLE_COLUMNS] for r in self.rows]
        return _to_frame(TABLE_COLUMNS, body)

    def to_text(self, columns: Sequence[str] | None = None) -> str:
        """Plain-text table of ``columns`` (default: all)."""
        cols = ("posterior", "region", *(columns or NUMERIC_COLUMNS))
        return format_table(cols, [[getattr(r, c) for c in cols] for r in self.rows])

    def __str__(self) -> str:
        return f"reference {self.reference}, noise floor: {self.floor}\n" + self.to_text()


@dataclass(frozen=True)
class RepeatRow:
    """Mean and standard deviation over repeats of every numeric :class:`RegionRow` field."""

    posterior: str
    region: str
    num_repeats: int
    mean: dict[str, float]
    sd: dict[str, float]


@dataclass(frozen=True)
class RepeatSummary:
    """Result of :func:`summarize_repeats`."""

    rows: tuple[RepeatRow, ...]

    def to_dataframe(self):
        """Columns ``<metric>`` (mean) and ``<metric>_sd``; ``None`` without pandas."""
        cols = ["posterior", "region", "num_repeats"]
        for c in NUMERIC_COLUMNS:
            cols += [c, f"{c}_sd"]
        body = [
            [r.posterior, r.region, r.num_repeats]
            + [v for c in NUMERIC_COLUMNS for v in (r.mean[c], r.sd[c])]
            for r in self.rows
        ]
        return _to_frame(cols, body)

    def to_text(self, columns: Sequence[str] | None = None) -> str:
        """Plain-text table of ``mean ± sd`` cells."""
        cols = tuple(columns or NUMERIC_COLUMNS)

        def cell(m: float, s: float) -> str:
            if math.isnan(m):
                return "nan"
            return f"{m:.3g}" if not s > 0 else f"{m:.3g}±{s:.2g}"

        body = [
            [r.posterior, r.region] + [cell(r.mean[c], r.sd[c]) for c in cols] for r in self.rows
        ]
        return format_table(("posterior", "region", *cols), body)

    def __str__(self) -> str:
        return self.to_text()


def summarize_repeats(comparisons: Sequence[RegionComparison]) -> RepeatSummary:
    """Mean and sample sd (``ddof=1``, 0 for one repeat) over repeats (e.g. seeds)."""
    if not comparisons:
        raise ValueError("comparisons must hold at least one RegionComparison.")
    keys = [(r.posterior, r.region) for r in comparisons[0].rows]
    rows = []
    for key in keys:
        found = [c.row(*key) for c in comparisons]
        mean, sd = {}, {}
        for col in NUMERIC_COLUMNS:
            vals = torch.tensor([float(getattr(r, col)) for r in found], dtype=torch.float64)
            mean[col] = float(vals.mean())
            sd[col] = float(vals.std()) if len(found) > 1 else 0.0
        rows.append(RepeatRow(key[0], key[1], len(found), mean, sd))
    return RepeatSummary(rows=tuple(rows))


@dataclass(frozen=True)
class _Predictive:
    preds: Tensor  # (S, n, k)
    extra: Tensor | None
    resp: Tensor  # (S, n, r) mean responses
    num_chains: int


def _predictive(f, flat_by_chain: Tensor, inputs: Tensor, likelihood: Likelihood) -> _Predictive:
    c, s, dim = flat_by_chain.shape
    flat = flat_by_chain.reshape(-1, dim).to(inputs.dtype)
    w = flat[:, : f.dim]
    extra = flat[:, f.dim :] if likelihood.num_extra_params else None
    out = evaluate_draws(f, w, inputs)
    with torch.no_grad():
        resp = likelihood.mean(out, extra)
    return _Predictive(out, extra, resp, c)


def _subset(p: _Predictive, draw_idx: Tensor | None, inputs: Tensor) -> _Predictive:
    take = slice(None) if draw_idx is None else draw_idx
    extra = None if p.extra is None else p.extra[take]
    return _Predictive(p.preds[take][:, inputs], extra, p.resp[take][:, inputs], 1)


def _split_halves(p: _Predictive) -> tuple[Tensor, Tensor, str]:
    total = p.preds.shape[0]
    per_chain = total // p.num_chains
    if p.num_chains >= 2:
        chain = torch.arange(total) // per_chain
        half = p.num_chains // 2
        return (chain < half).nonzero()[:, 0], (chain >= half).nonzero()[:, 0], "split chains"
    mid = total // 2
    return torch.arange(mid), torch.arange(mid, total), "split draws"


def _distances(
    a: _Predictive, b: _Predictive, likelihood: Likelihood, gen: torch.Generator, num_grid: int
) -> PerInputDistances:
    if isinstance(likelihood, CLASSIFICATION):
        pa = class_probs(a.resp.mean(0), likelihood)
        pb = class_probs(b.resp.mean(0), likelihood)
        return class_distances(pa, pb)
    if a.preds.shape[-1] != 1:
        nan = torch.full((a.preds.shape[1],), math.nan, dtype=torch.float64)
        return PerInputDistances(nan, nan, nan)
    return regression_distances(a.preds, a.extra, b.preds, b.extra, likelihood, gen, num_grid)


def _sd_ratio(a: _Predictive, b: _Predictive) -> float:
    va = a.resp.var(0).sum(-1).mean()
    vb = b.resp.var(0).sum(-1).mean()
    return float((va / vb).sqrt()) if float(vb) > 0 else math.nan


def compare_by_region(
    posteriors: Mapping[str, object],
    net: nn.Module | FunctionalNet | MainNetFunction,
    test_inputs: Tensor,
    test_targets: Tensor,
    likelihood: Likelihood,
    regions: Mapping[str, Tensor] | str,
    reference: str = "NUTS",
    noise_floor: str = "split",
    train_inputs: Tensor | None = None,
    costs: Mapping[str, Cost] | None = None,
    pareto_k: Mapping[str, float] | None = None,
    num_bins: int = 15,
    num_grid: int = 512,
    generator: torch.Generator | None = None,
) -> RegionComparison:
    """Per-region metrics of every posterior against ``reference`` (see module docstring).

    Parameters
    ----------
    posteriors : mapping of str to draws
        Name to weight draws (``(S, dim)``, ``(chains, draws, dim)`` or InferenceData,
        see :func:`~bnn_mcmc.diagnostics.draws_by_chain`).
    net, test_inputs, test_targets, likelihood
        As in :func:`~bnn_mcmc.diagnostics.compare_posteriors`.
    regions : mapping of str to bool Tensor, or ``'auto'``
        Masks of shape ``(n,)`` over the test inputs (each non-empty); ``'auto'`` uses
        ``near`` / ``gap`` / ``outside`` of :func:`~bnn_mcmc.diagnostics.regions.find_regions`
        on ``train_inputs`` (empty ones dropped).  A region ``'all'`` is always added.
    reference : str
        Name of the MCMC reference among ``posteriors``.
    noise_floor : str
        ``'split'`` (halves of the reference) or the name of a second reference run among
        ``posteriors``.
    train_inputs : Tensor, optional
        Needed for ``regions='auto'``.
    costs : mapping of str to Cost, optional
        Cost per posterior (missing ones are ``nan``).
    pareto_k : mapping of str to float, optional
        PSIS :math:`\\hat k` per posterior (see
        :func:`~bnn_mcmc.diagnostics.importance.importance_diagnostics`).
    num_bins : int
        Confidence bins of the ECE (classification).
    num_grid : int
        Grid size of the regression densities.
    generator : torch.Generator, optional
        Randomness of the predictive draws that place the grids (default: seed 0).
    """
    if not isinstance(posteriors, Mapping) or not posteriors:
        raise TypeError("posteriors must be a non-empty mapping {name: draws}.")
    if not isinstance(likelihood, Likelihood):
        raise TypeError(
            f"likelihood must be a bnn_mcmc.bnn.Likelihood, got {type(likelihood).__name__}."
        )
    if reference not in posteriors:
        raise ValueError(
            f"reference={reference!r} is not among the posteriors {list(posteriors)}; a "
            "region comparison needs a reference (an MCMC run)."
        )
    if noise_floor != "split" and noise_floor not in posteriors:
        raise ValueError(
            f"noise_floor={noise_floor!r} must be 'split' or the name of a second reference "
            f"among {list(posteriors)}."
        )
    n = test_inputs.shape[0]
    masks = _check_regions(regions, train_inputs, test_inputs)
    f = as_function(net)
    dim = f.dim + likelihood.num_extra_params
    gen = torch.Generator().manual_seed(0) if generator is None else generator
    is_clf = isinstance(likelihood, CLASSIFICATION)
    draws = {k: draws_by_chain(d, dim, f"posteriors[{k!r}]") for k, d in posteriors.items()}
    pred = {k: _predictive(f, d, test_inputs, likelihood) for k, d in draws.items()}
    ranks = {k: effective_rank(d) for k, d in draws.items()}
    ref = pred[reference]
    if noise_floor == "split":
        idx_a, idx_b, floor_name = _split_halves(ref)
    else:
        idx_a, idx_b, floor_name = None, None, noise_floor
    costs = dict(costs or {})
    pks = dict(pareto_k or {})
    for what, given in (("costs", costs), ("pareto_k", pks)):
        unknown = set(given) - set(posteriors)
        if unknown:
            raise ValueError(f"{what} names unknown posteriors {sorted(unknown)}.")

    targets_flat = test_targets.reshape(n, -1)
    rows = []
    for name, p in pred.items():
        cost = costs.get(name, Cost())
        pit = None
        if not is_clf and p.preds.shape[-1] == 1:
            pit = pit_values(
                p.preds, p.extra, targets_flat[:, 0].to(p.preds.dtype), likelihood, gen
            )
        ll = likelihood.log_prob(p.preds, test_targets, p.extra)
        nll = -(torch.logsumexp(ll, 0) - math.log(ll.shape[0]))
        for region, mask in masks.items():
            sub = _subset(p, None, mask)
            ref_sub = _subset(ref, None, mask)
            if noise_floor == "split":
                fa, fb = _subset(ref, idx_a, mask), _subset(ref, idx_b, mask)
            else:
                fa, fb = _subset(pred[noise_floor], None, mask), ref_sub
            floor_d = _distances(fa, fb, likelihood, gen, num_grid)
            floor_sd = abs(_sd_ratio(fa, fb) - 1.0)
            if name == reference:
                zero = torch.zeros(int(mask.sum()), dtype=torch.float64)
                d = PerInputDistances(zero, zero, zero)
            else:
                d = _distances(sub, ref_sub, likelihood, gen, num_grid)
            if is_clf:
                labels = targets_flat[mask, 0].long()
                probs = class_probs(sub.resp.mean(0), likelihood)
                diagram = confidence_reliability(probs, labels, num_bins)
                cal = sum(
                    c * abs(a - y) for c, a, y in zip(diagram.counts, diagram.x, diagram.y) if c
                ) / max(1, sum(diagram.counts))
                cover = (math.nan,) * len(COVERAGE_LEVELS)
            elif pit is not None:
                diagram = pit_reliability(pit[mask])
                cal = coverage_error(pit[mask])
                cover = tuple(interval_coverage(pit[mask], a) for a in COVERAGE_LEVELS)
            else:
                diagram, cal, cover = None, math.nan, (math.nan,) * len(COVERAGE_LEVELS)
            rows.append(
                RegionRow(
                    posterior=name,
                    region=region,
                    num_points=int(mask.sum()),
                    sd_ratio=1.0 if name == reference else _sd_ratio(sub, ref_sub),
                    sd_ratio_floor=floor_sd,
                    tv=float(d.tv.mean()),
                    tv_floor=float(floor_d.tv.mean()),
                    w1=float(d.w1.mean()),
                    w1_floor=float(floor_d.w1.mean()),
                    kl=float(d.kl.mean()),
                    kl_floor=float(floor_d.kl.mean()),
                    test_nll=float(nll[mask].mean()),
                    coverage_50=cover[0],
                    coverage_90=cover[1],
                    coverage_95=cover[2],
                    calibration_error=float(cal),
                    effective_rank=ranks[name],
                    pareto_k=float(pks.get(name, math.nan)),
                    wall_time_s=float(cost.wall_time_s),
                    grad_evals=float(cost.grad_evals),
                    reliability=diagram,
                )
            )
    return RegionComparison(rows=tuple(rows), reference=reference, floor=floor_name)


def _check_regions(
    regions: Mapping[str, Tensor] | str, train_inputs: Tensor | None, test_inputs: Tensor
) -> dict[str, Tensor]:
    n = test_inputs.shape[0]
    if isinstance(regions, str):
        if regions != "auto":
            raise ValueError(f"regions must be a mapping of masks or 'auto', got {regions!r}.")
        if train_inputs is None:
            raise ValueError("regions='auto' needs train_inputs to find the gaps.")
        found = find_regions(train_inputs, test_inputs)
        regions = {k: getattr(found, k) for k in found._fields if bool(getattr(found, k).any())}
    if not isinstance(regions, Mapping):
        raise TypeError("regions must be a mapping {name: bool mask over the test inputs}.")
    masks: dict[str, Tensor] = {}
    for key, mask in regions.items():
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != (n,):
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f"regions[{key!r}] must be a bool tensor of shape ({n},) over the test "
                f"inputs; got {shape}."
            )
        if not bool(mask.any()):
            raise ValueError(f"regions[{key!r}] selects no test input; drop it.")
        masks[str(key)] = mask
    masks.setdefault("all", torch.ones(n, dtype=torch.bool))
    return masks
