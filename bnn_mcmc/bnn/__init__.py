"""Networks as functions of their weights: potentials, likelihoods, priors, predictive."""

from .batchnorm import BatchNormLayer
from .functional import FunctionalNet, MainNetFunction, as_function
from .likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    HeteroscedasticGaussianLikelihood,
    LearnedNoiseGaussianLikelihood,
    Likelihood,
    StudentTLikelihood,
    likelihood_from_nll_type,
)
from .mlp import MLP
from .potential import nn_pot_energy, resolve_likelihood
from .predictive import (
    FunctionSpaceDiagnostics,
    Predictive,
    evaluate_draws,
    function_space_diagnostics,
    pointwise_log_likelihood,
    predict,
)
from .priors import (
    GaussianPrior,
    LaplacePrior,
    LayerwiseGaussianPrior,
    Prior,
    log_prob_standard_normal_prior,
)

__all__ = [
    "BatchNormLayer",
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "FunctionSpaceDiagnostics",
    "FunctionalNet",
    "GaussianLikelihood",
    "GaussianPrior",
    "HeteroscedasticGaussianLikelihood",
    "LaplacePrior",
    "LayerwiseGaussianPrior",
    "LearnedNoiseGaussianLikelihood",
    "Likelihood",
    "MLP",
    "MainNetFunction",
    "Predictive",
    "Prior",
    "StudentTLikelihood",
    "as_function",
    "evaluate_draws",
    "function_space_diagnostics",
    "likelihood_from_nll_type",
    "log_prob_standard_normal_prior",
    "nn_pot_energy",
    "pointwise_log_likelihood",
    "predict",
    "resolve_likelihood",
]
