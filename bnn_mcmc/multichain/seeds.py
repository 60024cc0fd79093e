"""Per-chain seeds derived from one seed.

``numpy.random.SeedSequence(seed).spawn(n)`` gives statistically independent
child streams (O'Neill 2015, PCG; NumPy's ``SeedSequence`` hashing); each child
yields a 63-bit integer that seeds the chain's ``torch.Generator``.  Chain ``i``
gets the same seed whichever backend or degree of parallelism runs it, so
results do not depend on either.
"""

from __future__ import annotations

import secrets

import numpy as np


def chain_seeds(seed: int | None, num_chains: int) -> tuple[int, list[int]]:
    """The root seed (drawn from the OS when ``None``) and one seed per chain."""
    if seed is None:
        seed = secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed must be a non-negative int or None; got {seed!r}.")
    children = np.random.SeedSequence(int(seed)).spawn(num_chains)
    return int(seed), [int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)) for c in children]
