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


#: Seeds are 63-bit: what a ``torch.Generator`` accepts as a signed 64-bit integer.
SEED_LIMIT = 2**63


def check_seed(seed: object, name: str = "seed") -> int:
    """``seed`` as an int in ``[0, 2**63)`` (the same rule for every sampler), or an error."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name} must be an int in [0, 2**63) or None; got {type(seed).__name__}.")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name} must lie in [0, 2**63); got {seed}. Use e.g. seed % 2**63.")
    return int(seed)


def check_starts(positions: list) -> list:
    """Starts of several chains: at least one, each a 1-D tensor, all of the same length."""
    import torch

    if not positions:
        raise ValueError("initial_positions must hold at least one position.")
    for i, p in enumerate(positions):
        if not isinstance(p, torch.Tensor):
            raise TypeError(
                f"initial_positions[{i}] must be a torch.Tensor (a flat weight vector); got "
                f"{type(p).__name__}."
            )
        if p.ndim != 1:
            raise ValueError(
                f"initial_positions[{i}] must be a 1-D tensor; got shape {tuple(p.shape)}."
            )
    lengths = sorted({p.shape[0] for p in positions})
    if len(lengths) > 1:
        sizes = [p.shape[0] for p in positions]
        raise ValueError(
            f"initial_positions must all have the same length; got lengths {sizes}. Every chain "
            "samples the same weight vector."
        )
    return positions


def check_max_tree_depth(value: object, upper: int = 30) -> int:
    """A NUTS tree depth in ``[1, upper]`` (a depth-``d`` tree holds ``2**d`` leapfrog steps)."""
    depth = check_count("max_tree_depth", value, 1)
    if depth > upper:
        raise ValueError(
            f"max_tree_depth must be <= {upper} (2**{upper} leapfrog steps per draw); got {depth}."
        )
    return depth


def check_proposal_std(value: object):
    """MH ``proposal_std``: a finite positive number or a tensor of finite positive entries."""
    import torch

    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise ValueError("proposal_std must hold finite floating entries.")
        if not bool((value > 0).all()):
            raise ValueError("proposal_std must hold positive entries; got entries <= 0.")
        return value
    return check_positive("proposal_std", value)
