"""Single-chain samplers: thin stateful drivers around the pure kernels."""

from .base import Sampler
from .hmc import HMC
from .mh import MetropolisHastings
from .nuts import NUTS

MCMC = MetropolisHastings  # the original toolkit's name

__all__ = ["HMC", "MCMC", "NUTS", "MetropolisHastings", "Sampler"]
