"""bnn_mcmc: MCMC over neural-network weights in PyTorch.

Public names only; see the subpackages for the details.
"""

from ._version import __version__ as __version__
from .bnn import (
    MLP,
    BatchNormLayer,
    BernoulliLikelihood,
    CategoricalLikelihood,
    FunctionalNet,
    GaussianLikelihood,
    GaussianPrior,
    HeteroscedasticGaussianLikelihood,
    LaplacePrior,
    LayerwiseGaussianPrior,
    LearnedNoiseGaussianLikelihood,
    Likelihood,
    StudentTLikelihood,
    function_space_diagnostics,
    log_prob_standard_normal_prior,
    nn_pot_energy,
    pointwise_log_likelihood,
    predict,
)
from .diagnostics import compare_posteriors, summary, to_inference_data
from .distributed import sharded_pot_energy
from .hnets import HMLP, ChunkedHMLP, HPerturbWrapper, HyperNetInterface, StructuredHMLP
from .kernels.integrators import leapfrog
from .kernels.kron_metric import KroneckerMetric
from .kernels.metrics import DenseMetric, DiagMetric, Metric, ScalarMetric
from .multichain import ChainError, MultiChainHMC, PotentialFactory
from .optim import FishLeg, find_map
from .samplers import HMC, MCMC, NUTS, MetropolisHastings
from .storage import read_chunks
from .variational import (
    AVB,
    SSGE,
    ImplicitPosterior,
    MeanFieldGaussian,
    TrainConfig,
    fit_variational,
)

__all__ = [
    "AVB",
    "HMC",
    "HMLP",
    "MCMC",
    "MLP",
    "NUTS",
    "SSGE",
    "BatchNormLayer",
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "ChainError",
    "ChunkedHMLP",
    "DenseMetric",
    "DiagMetric",
    "FishLeg",
    "FunctionalNet",
    "GaussianLikelihood",
    "GaussianPrior",
    "HPerturbWrapper",
    "HeteroscedasticGaussianLikelihood",
    "HyperNetInterface",
    "ImplicitPosterior",
    "KroneckerMetric",
    "LaplacePrior",
    "LayerwiseGaussianPrior",
    "LearnedNoiseGaussianLikelihood",
    "Likelihood",
    "MeanFieldGaussian",
    "Metric",
    "MetropolisHastings",
    "MultiChainHMC",
    "PotentialFactory",
    "ScalarMetric",
    "StructuredHMLP",
    "StudentTLikelihood",
    "TrainConfig",
    "compare_posteriors",
    "find_map",
    "fit_variational",
    "function_space_diagnostics",
    "leapfrog",
    "log_prob_standard_normal_prior",
    "nn_pot_energy",
    "pointwise_log_likelihood",
    "predict",
    "sharded_pot_energy",
    "read_chunks",
    "summary",
    "to_inference_data",
]
