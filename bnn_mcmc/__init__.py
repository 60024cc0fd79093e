"""bnn_mcmc: MCMC over neural-network weights in PyTorch.

Public names only; see the subpackages for the details.
"""

from .kernels.integrators import leapfrog
from .kernels.metrics import DenseMetric, DiagMetric, Metric, ScalarMetric
from .samplers import HMC, MCMC, NUTS, MetropolisHastings

__version__ = "0.1.0"

__all__ = [
    "HMC",
    "MCMC",
    "NUTS",
    "DenseMetric",
    "DiagMetric",
    "Metric",
    "MetropolisHastings",
    "ScalarMetric",
    "leapfrog",
]
