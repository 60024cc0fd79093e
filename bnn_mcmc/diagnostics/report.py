r"""One run report, computed from ArviZ ``InferenceData``.

Both :func:`bnn_mcmc.diagnostics.summary.summary` (``sampler.summary()``) and
``bnn-mcmc diagnose`` print this report, so a run gives the same numbers whichever way it
is inspected.  Everything is read from the ``InferenceData`` groups:

* ``posterior`` — rank-normalised split R-hat and bulk/tail ESS of every weight
  (Vehtari et al. 2021);
* ``sample_stats`` — ``lp`` (R-hat and ESS of the log density), ``acceptance_rate`` (its mean
  per chain: the mean acceptance statistic, :math:`\min(1, e^{-\Delta H})` for HMC and MH and
  the mean over the trajectory for NUTS), ``accepted`` (the fraction of accepted proposals,
  HMC and MH), ``diverging``, ``reached_max_tree_depth`` and ``energy`` (E-BFMI per chain,
  :math:`\sum_t (E_t - E_{t-1})^2 / \sum_t (E_t - \bar E)^2`, Betancourt 2016);
* ``predictions`` (optional) — variable ``f``, e.g. the network's predictions at a few inputs:
  function-space R-hat and ESS, where BNN chains are judged (weights are identified only up to
  permutations of hidden units).

All limits are in :data:`THRESHOLDS`.

References
----------
Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. & Bürkner, P.-C. (2021).
Rank-normalization, folding, and localization: an improved R-hat for assessing convergence of
MCMC. *Bayesian Analysis* 16(2), 667-718.
Betancourt, M. (2016). Diagnosing suboptimal cotangent disintegrations in Hamiltonian Monte
Carlo. arXiv:1604.00695.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class Thresholds:
    """The limits every report checks against.

    Attributes
    ----------
    rhat
        Largest acceptable rank-normalised split R-hat, 1.01 (Vehtari et al. 2021).
    ess_per_chain
        Smallest acceptable bulk and tail ESS per chain, 100 (Vehtari et al. 2021 ask for
        ESS > 400 with four chains).
    ebfmi
        E-BFMI below 0.3 warns of poor energy exploration (Betancourt 2016).
    """

    rhat: float = 1.01
    ess_per_chain: float = 100.0
    ebfmi: float = 0.3


THRESHOLDS = Thresholds()
"""The default :class:`Thresholds`."""

FUNCTION_GROUP = "predictions"
FUNCTION_VAR = "f"


class SpaceDiagnostics(NamedTuple):
    """Extremes of R-hat and ESS over the variables of one space (weights, function, lp)."""

    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float


@dataclass
class RunReport:
    """Convergence report of one run (see the module docstring for what each number is).

    ``str(report)`` is the text, :meth:`to_dict` the numbers (JSON-ready), ``warnings`` the
    problems found with the fix to try, ``notes`` remarks that are not problems.
    """

    num_chains: int
    num_draws: int
    weights: SpaceDiagnostics
    lp: SpaceDiagnostics | None
    function: SpaceDiagnostics | None
    divergences: int
    divergence_fraction: float
    acceptance: list[float]
    accepted_fraction: list[float] | None
    ebfmi: list[float]
    tree_depth_saturation: float | None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The numbers under flat names (the schema of a CLI run's ``summary.json``)."""
        out: dict = {"chains": self.num_chains, "draws": self.num_draws}
        spaces = {"weight": self.weights, "function": self.function}
        for name, space in spaces.items():
            if space is not None:
                out[f"{name}_max_rhat"] = space.max_rhat
                out[f"{name}_min_ess_bulk"] = space.min_ess_bulk
                out[f"{name}_min_ess_tail"] = space.min_ess_tail
        if self.lp is not None:
            out["lp_rhat"] = self.lp.max_rhat
            out["lp_ess_bulk"] = self.lp.min_ess_bulk
            out["lp_ess_tail"] = self.lp.min_ess_tail
        accepted = None if self.accepted_fraction is None else list(self.accepted_fraction)
        out.update(
            divergences=self.divergences,
            divergence_fraction=self.divergence_fraction,
            tree_depth_saturation=self.tree_depth_saturation,
            acceptance=list(self.acceptance),
            accepted_fraction=accepted,
            ebfmi=list(self.ebfmi),
            warnings=list(self.warnings),
            notes=list(self.notes),
        )
        return out

    def __str__(self) -> str:
        lines = [
            f"{self.num_chains} chain(s) x {self.num_draws} draws",
            f"{'':18}{'max R-hat':>10}{'min bulk ESS':>14}{'min tail ESS':>14}",
        ]
        rows = (("weight space", self.weights), ("function space", self.function))
        rows += (("log density (lp)", self.lp),)
        for label, space in rows:
            if space is not None:
                lines.append(
                    f"{label:18}{_fmt(space.max_rhat):>10}{_fmt(space.min_ess_bulk):>14}"
                    f"{_fmt(space.min_ess_tail):>14}"
                )
        total = self.num_chains * self.num_draws
        lines.append(
            f"divergences after warmup: {self.divergences} of {total} "
            f"({100 * self.divergence_fraction:.1f} %)"
        )
        lines.append("acceptance statistic per chain: " + _join(self.acceptance))
        if self.accepted_fraction is not None:
            lines.append("accepted proposals per chain: " + _join(self.accepted_fraction))
        lines.append("E-BFMI per chain: " + (_join(self.ebfmi) or "n/a (no energy statistic)"))
        if self.tree_depth_saturation is not None:
            lines.append(f"transitions at max tree depth: {100 * self.tree_depth_saturation:.1f} %")
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.3f}" if v < 10 else f"{v:.0f}"


def _join(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _space(dataset) -> SpaceDiagnostics:
    """R-hat and ESS extremes over all variables of an ``xarray.Dataset`` with chain/draw."""
    import arviz as az

    rhat = az.rhat(dataset)
    bulk = az.ess(dataset, method="bulk")
    tail = az.ess(dataset, method="tail")

    def extreme(values, reduce) -> float:
        flat = np.concatenate([np.ravel(values[v].values) for v in values.data_vars])
        flat = flat[np.isfinite(flat)]
        return float(reduce(flat)) if flat.size else float("nan")

    return SpaceDiagnostics(extreme(rhat, np.max), extreme(bulk, np.min), extreme(tail, np.min))


def _per_chain_mean(stats, name: str) -> list[float] | None:
    if name not in stats:
        return None
    return [float(v) for v in stats[name].astype(float).mean("draw").values]


def run_report(idata, thresholds: Thresholds = THRESHOLDS) -> RunReport:
    """Compute the :class:`RunReport` of a run from its ``InferenceData``.

    Parameters
    ----------
    idata
        ``arviz.InferenceData`` with ``posterior`` and ``sample_stats`` (as written by
        :func:`~bnn_mcmc.diagnostics.to_inference_data` or ``bnn-mcmc sample``) and optionally
        ``predictions`` with a variable ``f`` (function space).
    thresholds
        The limits for the warnings.

    Returns
    -------
    RunReport
    """
    import arviz as az

    if "posterior" not in idata.groups():
        raise ValueError("idata has no posterior group; build it with to_inference_data().")
    post = idata.posterior
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    has_stats = "sample_stats" in idata.groups()
    stats = idata.sample_stats if has_stats else {}
    weights = _space(post)
    lp = _space(stats["lp"].to_dataset()) if "lp" in stats else None
    function = None
    if FUNCTION_GROUP in idata.groups() and FUNCTION_VAR in idata[FUNCTION_GROUP]:
        function = _space(idata[FUNCTION_GROUP][FUNCTION_VAR].to_dataset())
    if "diverging" in stats:
        divergences = int(stats["diverging"].values.sum())
        fraction = divergences / max(stats["diverging"].size, 1)
    else:
        divergences, fraction = 0, 0.0
    saturation = (
        float(stats["reached_max_tree_depth"].values.mean())
        if "reached_max_tree_depth" in stats
        else None
    )
    ebfmi = [float(b) for b in az.bfmi(idata)] if "energy" in stats else []
    report = RunReport(
        num_chains=n_chain,
        num_draws=n_draw,
        weights=weights,
        lp=lp,
        function=function,
        divergences=divergences,
        divergence_fraction=fraction,
        acceptance=_per_chain_mean(stats, "acceptance_rate") or [],
        accepted_fraction=_per_chain_mean(stats, "accepted"),
        ebfmi=ebfmi,
        tree_depth_saturation=saturation,
    )
    _add_findings(report, thresholds)
    return report


def _add_findings(report: RunReport, t: Thresholds) -> None:
    w, notes = report.warnings, report.notes
    many = report.num_chains > 1
    min_ess = t.ess_per_chain * report.num_chains
    judged = report.function if report.function is not None else report.weights
    judged_name = "function-space" if report.function is not None else "weight-space"
    if many and report.function is not None and report.function.max_rhat > t.rhat:
        w.append(
            f"function-space R-hat {report.function.max_rhat:.3f} > {t.rhat}: chains disagree "
            "on predictions; sample longer, use more warmup or check multimodality."
        )
    if many and report.weights.max_rhat > t.rhat:
        if report.function is not None:
            notes.append(
                f"weight-space R-hat {report.weights.max_rhat:.3f} > {t.rhat}; weights of a BNN "
                "are identified only up to permutations, trust the function-space numbers."
            )
        else:
            w.append(
                f"R-hat {report.weights.max_rhat:.3f} > {t.rhat}: chains disagree; run longer "
                "or check multimodality (pass function= for function-space R-hat)."
            )
    if many and report.lp is not None and report.lp.max_rhat > t.rhat:
        w.append(
            f"R-hat of lp {report.lp.max_rhat:.3f} > {t.rhat}: chains sit at different "
            "log densities; run longer or use more warmup."
        )
    low = min(judged.min_ess_bulk, judged.min_ess_tail)
    if math.isfinite(low) and low < min_ess:
        w.append(
            f"{judged_name} ESS {low:.0f} < {min_ess:.0f} ({t.ess_per_chain:.0f} per chain): "
            "draw more states."
        )
    if report.divergences:
        w.append(
            f"{report.divergences} divergent transitions: raise target_accept in warmup() "
            "(e.g. 0.95) or reparameterise (standardise the data, smaller prior scale)."
        )
    if any(e < t.ebfmi for e in report.ebfmi):
        w.append(
            f"E-BFMI below {t.ebfmi}: momentum resampling explores the energy poorly; "
            "adapt a better mass matrix (adapt_mass='dense') or reparameterise."
        )
    if report.tree_depth_saturation:
        w.append(
            f"{100 * report.tree_depth_saturation:.1f} % of transitions hit max_tree_depth: "
            "raise max_tree_depth or improve the mass matrix (adapt_mass='dense')."
        )
