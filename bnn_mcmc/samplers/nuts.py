"""The No-U-Turn Sampler driver."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from ..checks import check_max_tree_depth, check_positive
from ..kernels.metrics import Metric
from ..kernels.nuts import nuts_step
from .base import Sampler


class NUTS(Sampler):
    r"""The No-U-Turn Sampler (Hoffman & Gelman 2014) in its modern form.

    Multinomial sampling along the trajectory, the generalised (momentum-sum)
    U-turn criterion with Stan's extra checks across merged subtrees, an
    iterative tree builder, and log-space energy differences — see
    :mod:`bnn_mcmc.kernels.nuts`.  A transition whose energy error exceeds
    ``delta_max`` (or whose potential fails) is divergent: flagged in
    :attr:`stats` and never a crash.

    Parameters are those of :class:`~bnn_mcmc.HMC` without ``num_steps`` and
    ``jitter``, plus ``max_tree_depth`` (the trajectory has at most
    :math:`2^{\text{max\_tree\_depth}}` leapfrog steps).  ``delta_max`` is the
    fourth positional argument, as in the original toolkit's ``NUTS``.
    """

    stat_names = (
        "lp",
        "acceptance_rate",
        "step_size",
        "n_steps",
        "tree_depth",
        "reached_max_tree_depth",
        "diverging",
        "energy",
        "energy_error",
    )
    acceptance_from_statistic = True

    def __init__(
        self,
        initial_position: Tensor,
        pot_energy_func: Callable[[Tensor], Tensor],
        stepsize: float = 0.02,
        delta_max: float = 1000.0,
        inv_mass: float | Tensor | Metric = 1.0,
        logger: logging.Logger | None = None,
        log_interval: int = 100,
        writer=None,
        writer_tag: str = "",
        *,
        max_tree_depth: int = 10,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        compile_potential: bool = False,
    ):
        self.max_tree_depth = check_max_tree_depth(max_tree_depth)
        self.delta_max = check_positive("delta_max", delta_max)
        super().__init__(
            initial_position,
            pot_energy_func,
            stepsize,
            inv_mass,
            logger,
            log_interval,
            writer,
            writer_tag,
            seed,
            generator,
            progress,
            compile_potential=compile_potential,
        )

    def _kernel(self, step_size):
        return nuts_step(
            self._state,
            self.generator,
            self._potential,
            self.metric,
            step_size,
            self.max_tree_depth,
            self.delta_max,
        )
