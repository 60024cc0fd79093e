"""The package's string options as ``str`` enums: one place that names every choice.

Each member *is* its string (``ChainType.NUTS == "nuts"``), so the strings users write
keep working and the enums can be passed anywhere a string is taken.  The samplers,
``MultiChainHMC``, the run-file schema (:mod:`bnn_mcmc.config`) and the CLI read their
choices from here, so a new choice is added once.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar


class ChainType(str, Enum):
    """``chain_type`` of :class:`~bnn_mcmc.MultiChainHMC`."""

    HMC = "hmc"
    NUTS = "nuts"
    MH = "mh"
    #: lockstep ensembles (vectorized, several chains); see :mod:`bnn_mcmc.multichain.chees`
    CHEES = "chees"
    MEADS = "meads"


class Backend(str, Enum):
    """``backend`` of :class:`~bnn_mcmc.MultiChainHMC`: where the chains run."""

    SEQUENTIAL = "sequential"
    JOBLIB = "joblib"
    VECTORIZED = "vectorized"
    DASK = "dask"


class AdaptMass(str, Enum):
    """``adapt_mass`` of ``warmup`` (``None`` keeps the mass matrix)."""

    DIAG = "diag"
    DENSE = "dense"


E = TypeVar("E", bound=Enum)


def choices(enum: type[Enum]) -> tuple[str, ...]:
    """The strings of ``enum``'s members, in definition order."""
    return tuple(member.value for member in enum)


def parse_option(enum: type[E], value: object, argument: str) -> E:
    """``value`` as a member of ``enum``; a ValueError naming ``argument`` and the choices.

    Examples
    --------
    >>> parse_option(ChainType, "nuts", "chain_type") is ChainType.NUTS
    True
    >>> parse_option(AdaptMass, "full", "adapt_mass")
    Traceback (most recent call last):
        ...
    ValueError: adapt_mass must be one of ('diag', 'dense'); got 'full'.
    """
    try:
        return enum(value)
    except ValueError:
        raise ValueError(f"{argument} must be one of {choices(enum)}; got {value!r}.") from None
