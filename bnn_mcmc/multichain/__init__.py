"""Many chains: ``MultiChainHMC`` and the backends that run it."""

from .executors import BACKENDS, ChainError
from .multichain import CHAIN_TYPES, MultiChainHMC
from .potentials import PotentialFactory
from .seeds import chain_seeds

__all__ = [
    "BACKENDS",
    "CHAIN_TYPES",
    "ChainError",
    "MultiChainHMC",
    "PotentialFactory",
    "chain_seeds",
]
