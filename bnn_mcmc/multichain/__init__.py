"""Many chains: ``MultiChainHMC`` and the backends that run it."""

from .chees import ChEESHMC
from .executors import BACKENDS, ChainError
from .meads import MEADS
from .multichain import CHAIN_TYPES, MultiChainHMC
from .potentials import PotentialFactory
from .seeds import chain_seeds

__all__ = [
    "BACKENDS",
    "CHAIN_TYPES",
    "ChEESHMC",
    "ChainError",
    "MEADS",
    "MultiChainHMC",
    "PotentialFactory",
    "chain_seeds",
]
