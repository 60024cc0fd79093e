"""Variational baselines: implicit (hypernetwork) posteriors with SSGE or AVB, mean field."""

from .avb import AVB, AVBSaturationWarning
from .base import KLTerm, VariationalPosterior
from .elbo import ELBOEstimate, elbo_estimate
from .ensemble import DeepEnsemble, fit_deep_ensemble
from .implicit import FewSSGEDrawsWarning, ImplicitPosterior, SemiImplicitParts
from .mean_field import MeanFieldGaussian
from .ssge import SSGE, default_num_samples, median_bandwidth
from .starts import starts_from
from .training import TrainConfig, TrainingHistory, fit_variational, predictive_nll

__all__ = [
    "AVB",
    "AVBSaturationWarning",
    "DeepEnsemble",
    "ELBOEstimate",
    "FewSSGEDrawsWarning",
    "SemiImplicitParts",
    "default_num_samples",
    "elbo_estimate",
    "fit_deep_ensemble",
    "starts_from",
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
