"""Hypernetworks: networks that generate the weights of a main network.

A batch of ``B`` inputs gives ``B`` weight sets in one pass; ``ret_format='flattened'``
returns a ``(B, num_outputs)`` tensor that a batched main network takes directly.
"""

from .chunked_hmlp import ChunkedHMLP
from .container import HContainer
from .helpers import get_conditional_parameters, init_chunk_embeddings, init_conditional_embeddings
from .hmlp import HMLP
from .hyperfan import harmonic_mean, target_variances
from .interface import HyperNetInterface
from .perturb_wrapper import HPerturbWrapper
from .structured_hmlp import StructuredHMLP

__all__ = [
    "HyperNetInterface",
    "HMLP",
    "ChunkedHMLP",
    "StructuredHMLP",
    "HPerturbWrapper",
    "HContainer",
    "get_conditional_parameters",
    "init_chunk_embeddings",
    "init_conditional_embeddings",
    "harmonic_mean",
    "target_variances",
]
