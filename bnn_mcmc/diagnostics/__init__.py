"""From draws to understanding: ArviZ InferenceData, run summaries, comparisons, plots."""

from .compare import compare_posteriors, draws_by_chain, expected_calibration_error, mmd2_unbiased
from .inference_data import to_inference_data
from .plots import plot_classification_uncertainty, plot_regression_bands, plot_weight_pairs
from .report import THRESHOLDS, RunReport, SpaceDiagnostics, Thresholds, run_report
from .summary import RunSummary, summary

__all__ = [
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
