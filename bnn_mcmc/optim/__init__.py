"""Optimisers for chain starting points and curvature: FishLeg and ``find_map``."""

from .fishleg import FishLeg
from .map import find_map
from .qblocks import DiagonalQ, KroneckerQ, QBlock, make_qblock

__all__ = ["FishLeg", "find_map", "QBlock", "KroneckerQ", "DiagonalQ", "make_qblock"]
