"""Argument checks shared across the package: a clear error naming the argument."""

from __future__ import annotations

import math

import numpy as np


def check_positive(name: str, value: float) -> float:
    """``value`` as a float, or a ValueError when it is not positive and finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a positive number; got {type(value).__name__}.")
    if not (0 < value < math.inf):
        raise ValueError(f"{name} must be positive and finite; got {value}.")
    return float(value)


def check_count(name: str, value: int, minimum: int = 0) -> int:
    """``value`` as an int, or an error when it is not an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}.")
    return int(value)
