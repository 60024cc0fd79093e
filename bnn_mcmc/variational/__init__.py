"""Variational baselines: implicit (hypernetwork) posteriors with SSGE or AVB, mean field."""

from .avb import AVB
from .base import KLTerm, VariationalPosterior
from .implicit import ImplicitPosterior
from .mean_field import MeanFieldGaussian
from .ssge import SSGE, median_bandwidth
from .training import TrainConfig, TrainingHistory, fit_variational, predictive_nll

__all__ = [
    "AVB",
    "ImplicitPosterior",
    "KLTerm",
    "MeanFieldGaussian",
    "SSGE",
    "TrainConfig",
    "TrainingHistory",
    "VariationalPosterior",
    "fit_variational",
    "median_bandwidth",
    "predictive_nll",
]
