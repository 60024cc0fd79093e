"""``sampler.summary()``: the run report of a sampler in memory, with ArviZ's tables.

The numbers and the text are those of :func:`bnn_mcmc.diagnostics.report.run_report` (the
report ``bnn-mcmc diagnose`` prints): the sampler is turned into ``InferenceData`` with
:func:`~bnn_mcmc.diagnostics.to_inference_data`, and ``function`` (when given) into its
``predictions`` group, variable ``f``.  :class:`RunSummary` adds the per-variable
``az.summary`` tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import Tensor

from .inference_data import chains_of, per_draw, to_inference_data
from .report import FUNCTION_GROUP, FUNCTION_VAR, RunReport, run_report


@dataclass
class RunSummary(RunReport):
    """A :class:`~bnn_mcmc.diagnostics.report.RunReport` with ArviZ's tables.

    ``str()`` gives the report's text; ``table`` is the per-variable DataFrame
    (``az.summary``) of the weights, ``function_table`` that of the function values.
    """

    table: pd.DataFrame | None = None
    function_table: pd.DataFrame | None = None

    @property
    def max_rhat(self) -> float:
        """Largest weight-space R-hat."""
        return self.weights.max_rhat

    @property
    def min_ess_bulk(self) -> float:
        """Smallest weight-space bulk ESS."""
        return self.weights.min_ess_bulk

    def to_dict(self) -> dict:
        """The report's numbers (:meth:`RunReport.to_dict`) plus the names
        ``num_chains``, ``num_draws``, ``max_rhat`` and ``min_ess_bulk`` (weight space)."""
        out = super().to_dict()
        out.update(
            num_chains=self.num_chains,
            num_draws=self.num_draws,
            max_rhat=self.max_rhat,
            min_ess_bulk=self.min_ess_bulk,
        )
        return out

    def __str__(self) -> str:
        return RunReport.__str__(self)


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

    Returns
    -------
    RunSummary
        The run report (the same numbers as ``bnn-mcmc diagnose`` on the same draws).
    """
    import arviz as az

    idata = to_inference_data(sampler, net=net)
    function_table = None
    if function is not None:
        draws = np.stack([c.samples().numpy() for c in chains_of(sampler)])
        values = per_draw(function, draws, "function")
        idata.add_groups({FUNCTION_GROUP: {FUNCTION_VAR: values}})
        flat = values.reshape(*values.shape[:2], -1)
        function_table = az.summary(az.from_dict(posterior={"f": flat}), kind="diagnostics")
    report = run_report(idata)
    return RunSummary(
        **vars(report),
        table=az.summary(idata, kind="diagnostics"),
        function_table=function_table,
    )
