r"""A convergence report for one run: R-hat, ESS, divergences, E-BFMI, tree depth, acceptance.

* R-hat (rank-normalised, split) and bulk/tail ESS (Vehtari et al. 2021) per
  weight, and — when a ``function`` of the weights is given, e.g. the network's
  predictions at a few inputs — per output (function space, where BNN chains
  usually mix far better than in weight space).
* Divergences after warmup, with the fix to try.
* E-BFMI per chain, :math:`\sum_t (E_t - E_{t-1})^2 / \sum_t (E_t - \bar E)^2`
  (Betancourt 2016); values below 0.3 indicate poor momentum resampling.
* The fraction of NUTS transitions that hit ``max_tree_depth``, and the mean
  acceptance statistic against its target.

References
----------
Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. & Bürkner, P.-C. (2021).
Rank-normalization, folding, and localization: an improved R-hat. *Bayesian Analysis* 16.
Betancourt, M. (2016). Diagnosing suboptimal cotangent disintegrations in Hamiltonian
Monte Carlo. arXiv:1604.00695.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from torch import Tensor

from .inference_data import _per_draw, chains_of, to_inference_data

RHAT_LIMIT = 1.01
EBFMI_LIMIT = 0.3


@dataclass
class RunSummary:
    """The report; ``str()`` gives the text, :meth:`to_dict` the numbers, ``table`` the
    per-variable DataFrame (``az.summary``), ``function_table`` the function-space one."""

    table: pd.DataFrame
    function_table: pd.DataFrame | None
    num_chains: int
    num_draws: int
    divergences: int
    divergence_fraction: float
    ebfmi: list[float]
    tree_depth_saturation: float | None
    acceptance: list[float]
    max_rhat: float
    min_ess_bulk: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Everything except the tables, plus the function-space extremes."""
        out = {
            k: getattr(self, k)
            for k in (
                "num_chains",
                "num_draws",
                "divergences",
                "divergence_fraction",
                "ebfmi",
                "tree_depth_saturation",
                "acceptance",
                "max_rhat",
                "min_ess_bulk",
                "warnings",
            )
        }
        if self.function_table is not None:
            out["function_max_rhat"] = float(self.function_table["r_hat"].max())
            out["function_min_ess_bulk"] = float(self.function_table["ess_bulk"].min())
        return out

    def __str__(self) -> str:
        lines = [
            f"{self.num_chains} chain(s) x {self.num_draws} draws",
            f"max R-hat {self.max_rhat:.3f}, min bulk ESS {self.min_ess_bulk:.0f} (weight space)",
        ]
        if self.function_table is not None:
            d = self.to_dict()
            lines.append(
                f"max R-hat {d['function_max_rhat']:.3f}, min bulk ESS "
                f"{d['function_min_ess_bulk']:.0f} (function space)"
            )
        lines.append(
            f"divergences after warmup: {self.divergences} ({100 * self.divergence_fraction:.1f} %)"
        )
        lines.append(
            "E-BFMI per chain: "
            + (", ".join(f"{e:.2f}" for e in self.ebfmi) or "n/a (no energy statistic)")
        )
        if self.tree_depth_saturation is not None:
            lines.append(f"tree depth saturation: {100 * self.tree_depth_saturation:.1f} %")
        lines.append("acceptance per chain: " + ", ".join(f"{a:.2f}" for a in self.acceptance))
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def _ebfmi(energy: np.ndarray) -> float:
    var = np.var(energy)
    return float(np.mean(np.diff(energy) ** 2) / var) if var > 0 else float("nan")


def summary(sampler, function: Callable[[Tensor], Tensor] | None = None, net=None) -> RunSummary:
    """Report on a sampler or a ``MultiChainHMC`` (chains of equal length).

    Parameters
    ----------
    sampler
        The run.
    function
        ``draws (n, dim) -> (n, k)``, e.g. network outputs at ``k`` inputs:
        adds function-space R-hat and ESS.
    net
        Name the weights by the network's parameters.
    """
    import arviz as az

    idata = to_inference_data(sampler, net=net)
    table = az.summary(idata, kind="diagnostics")
    stats = idata.sample_stats
    n_chains, n_draws = stats.sizes["chain"], stats.sizes["draw"]
    diverging = stats["diverging"].values if "diverging" in stats else np.zeros((1, 1), bool)
    divergences = int(diverging.sum())
    ebfmi = [_ebfmi(e) for e in stats["energy"].values] if "energy" in stats else []
    saturation = (
        float(stats["reached_max_tree_depth"].values.mean())
        if "reached_max_tree_depth" in stats
        else None
    )
    acceptance = [c.acceptance_probability for c in chains_of(sampler)]
    function_table = None
    if function is not None:
        draws = np.stack([c.samples().numpy() for c in chains_of(sampler)])
        values = _per_draw(function, draws, "function")
        values = values.reshape(*values.shape[:2], -1)
        function_table = az.summary(az.from_dict(posterior={"f": values}), kind="diagnostics")
    result = RunSummary(
        table=table,
        function_table=function_table,
        num_chains=n_chains,
        num_draws=n_draws,
        divergences=divergences,
        divergence_fraction=divergences / max(diverging.size, 1),
        ebfmi=ebfmi,
        tree_depth_saturation=saturation,
        acceptance=acceptance,
        max_rhat=float(table["r_hat"].max()),
        min_ess_bulk=float(table["ess_bulk"].min()),
    )
    w = result.warnings
    if n_chains > 1 and result.max_rhat > RHAT_LIMIT:
        w.append(
            f"R-hat {result.max_rhat:.3f} > {RHAT_LIMIT}: chains disagree; run longer "
            "or check multimodality (compare function-space R-hat)."
        )
    if result.min_ess_bulk < 100 * n_chains:
        w.append(f"bulk ESS {result.min_ess_bulk:.0f} < 100 per chain: draw more states.")
    if divergences:
        w.append(
            f"{divergences} divergent transitions: raise target_accept in warmup() "
            "(e.g. 0.95) or reparameterise (standardise inputs, non-centred prior scales)."
        )
    if any(e < EBFMI_LIMIT for e in ebfmi):
        w.append(
            f"E-BFMI below {EBFMI_LIMIT}: momentum resampling explores the energy poorly; "
            "adapt a better mass matrix (adapt_mass='dense') or reparameterise."
        )
    if saturation:
        w.append(
            f"{100 * saturation:.1f} % of transitions hit max_tree_depth: raise "
            "max_tree_depth or improve the mass matrix."
        )
    return result
