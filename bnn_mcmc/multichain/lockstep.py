"""``MultiChainHMC(..., chain_type='chees' | 'meads')``: lockstep ensembles behind the usual call.

The chains of these samplers share their tuning, so they run as one object on
the vectorised backend (:class:`~bnn_mcmc.multichain.chees.ChEESHMC`,
:class:`~bnn_mcmc.multichain.meads.MEADS`); :func:`build_lockstep` maps the
arguments of :class:`~bnn_mcmc.multichain.MultiChainHMC` onto them and refuses
those that have no meaning there.
"""

from __future__ import annotations

from .chees import ChEESHMC
from .ensemble import LockstepEnsemble
from .meads import MEADS

LOCKSTEP_TYPES: dict[str, type[LockstepEnsemble]] = {"chees": ChEESHMC, "meads": MEADS}

_UNSUPPORTED = (
    "output_dir",
    "checkpoint_every",
    "thin",
    "chunk_size",
    "client",
    "scheduler_address",
)


def build_lockstep(
    initial_positions,
    pot_energy_func,
    chain_type: str,
    seed: int | None = None,
    backend: str | None = None,
    devices=None,
    scheduler_address: str | None = None,
    client=None,
    batched_pot_energy_func=None,
    **kwargs,
) -> LockstepEnsemble:
    """The ensemble sampler for ``chain_type``, from :class:`MultiChainHMC`'s arguments
    (in its positional order).

    Raises
    ------
    ValueError
        For a backend other than ``'vectorized'`` (or ``None``), several devices, a list of
        potentials, or output options (save with ``.save(path)`` instead).
    """
    if backend not in (None, "vectorized"):
        raise ValueError(
            f"chain_type={chain_type!r} runs its chains in lockstep: use backend='vectorized' "
            f"(or None); got {backend!r}."
        )
    if devices is not None and len({str(d) for d in devices}) > 1:
        raise ValueError(f"chain_type={chain_type!r} runs all chains on one device; got {devices}.")
    if isinstance(pot_energy_func, (list, tuple)):
        raise ValueError(
            f"chain_type={chain_type!r} needs one potential for all chains (or "
            "batched_pot_energy_func); got a list."
        )
    kwargs.update(scheduler_address=scheduler_address, client=client)
    given = [k for k in _UNSUPPORTED if kwargs.get(k) is not None]
    if given:
        raise ValueError(
            f"chain_type={chain_type!r} does not take {given}; keep the draws in memory and "
            "checkpoint with .save(path) / .load(path)."
        )
    for k in ("writer", "writer_tag", "logger", "progress", *_UNSUPPORTED):
        kwargs.pop(k, None)
    if devices is not None:
        initial_positions = [p.to(devices[0]) for p in initial_positions]
    cls = LOCKSTEP_TYPES[getattr(chain_type, "value", chain_type)]
    return cls(
        initial_positions,
        pot_energy_func,
        seed=seed,
        batched_pot_energy_func=batched_pot_energy_func,
        **kwargs,
    )
