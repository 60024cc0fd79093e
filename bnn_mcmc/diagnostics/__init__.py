"""From draws to understanding: ArviZ InferenceData, run summaries, comparisons, plots."""

from .compare import compare_posteriors, expected_calibration_error, mmd2_unbiased
from .draws import draws_by_chain
from .importance import (
    ImportanceDiagnostics,
    importance_diagnostics,
    pareto_k,
    posterior_importance,
)
from .inference_data import to_inference_data
from .plots import plot_classification_uncertainty, plot_regression_bands, plot_weight_pairs
from .region_compare import (
    Cost,
    RegionComparison,
    RegionRow,
    RepeatSummary,
    compare_by_region,
    summarize_repeats,
)
from .regions import DataRegions, find_regions
from .report import THRESHOLDS, RunReport, SpaceDiagnostics, Thresholds, run_report
from .summary import RunSummary, summary

__all__ = [
    "Cost",
    "DataRegions",
    "ImportanceDiagnostics",
    "RegionComparison",
    "RegionRow",
    "RepeatSummary",
    "compare_by_region",
    "find_regions",
    "importance_diagnostics",
    "pareto_k",
    "posterior_importance",
    "summarize_repeats",
    "THRESHOLDS",
    "RunReport",
    "RunSummary",
    "SpaceDiagnostics",
    "Thresholds",
    "compare_posteriors",
    "draws_by_chain",
    "expected_calibration_error",
    "mmd2_unbiased",
    "plot_classification_uncertainty",
    "plot_regression_bands",
    "plot_weight_pairs",
    "run_report",
    "summary",
    "to_inference_data",
]
