"""Random-walk Metropolis–Hastings driver."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..adaptation.window import WarmupPlan
from ..checks import check_proposal_std
from ..kernels.metrics import DiagMetric
from ..kernels.mh import mh_step
from .base import Sampler


class MetropolisHastings(Sampler):
    r"""Gaussian random-walk Metropolis–Hastings; no gradients, no autograd graph.

    Proposals are :math:`w' = w + s\,\xi`, :math:`\xi \sim \mathcal N(0, \Sigma)`.
    ``proposal_std`` is either a scalar (:math:`s` = ``proposal_std``,
    :math:`\Sigma = I`) or a 1-D tensor of per-coordinate standard deviations
    (:math:`s = 1`, :math:`\Sigma = \operatorname{diag}(\text{proposal\_std}^2)`).

    :meth:`warmup` adapts :math:`s` by dual averaging towards an acceptance
    rate of 0.234 (Roberts, Gelman & Gilks 1997) and, with
    ``adapt_mass='diag'`` (or ``'dense'``), sets :math:`\Sigma` to the running
    (co)variance of the draws of each slow window, after which :math:`s`
    restarts from :math:`2.38/\sqrt{d}`.  :attr:`step_size` is :math:`s` and
    :attr:`inv_mass` is :math:`\Sigma`.

    Other parameters are those of :class:`~bnn_mcmc.HMC`.
    """

    stat_names = ("lp", "acceptance_rate", "accepted", "step_size", "n_steps", "diverging")
    uses_gradient = False
    #: random-walk transitions are cheap and their acceptance is a noisy 0/1 signal:
    #: buffers proportional to the warmup give dual averaging enough steps after the last
    #: covariance update; the user's scale is kept at the start, and each window restarts
    #: at the optimal-scaling step 2.38/sqrt(d), with dual averaging centred on it.
    warmup_plan = WarmupPlan(
        target_accept=0.234, centre=1.0, buffers="proportional", restart="optimal_scaling"
    )

    def __init__(
        self,
        initial_position: Tensor,
        pot_energy_func: Callable[[Tensor], Tensor],
        proposal_std: float | Tensor = 1.0,
        logger: logging.Logger | None = None,
        log_interval: int = 100,
        writer=None,
        writer_tag: str = "",
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ):
        if isinstance(proposal_std, Tensor) and proposal_std.ndim == 0:
            proposal_std = check_proposal_std(proposal_std).item()
        proposal_std = check_proposal_std(proposal_std)
        if isinstance(proposal_std, Tensor) and proposal_std.ndim == 1:
            scale, inv_mass = 1.0, proposal_std.detach() ** 2
            if initial_position.ndim == 1 and proposal_std.shape != initial_position.shape:
                raise ValueError(
                    f"proposal_std has shape {tuple(proposal_std.shape)}, expected "
                    f"{tuple(initial_position.shape)} (one std per coordinate) or a scalar."
                )
        else:
            scale, inv_mass = float(proposal_std), 1.0
        super().__init__(
            initial_position,
            pot_energy_func,
            scale,
            inv_mass,
            logger,
            log_interval,
            writer,
            writer_tag,
            seed,
            generator,
            progress,
        )

    @property
    def proposal_std(self) -> float | Tensor:
        """Per-coordinate proposal standard deviation :math:`s\\sqrt{\\Sigma_{ii}}`."""
        if isinstance(self.metric, DiagMetric):
            return self.step_size * self.metric.inv_mass.sqrt()
        inv_mass = self.metric.inv_mass
        if isinstance(inv_mass, Tensor):
            return self.step_size * inv_mass.diagonal().sqrt()
        return self.step_size * math.sqrt(inv_mass)

    def _kernel(self, step_size):
        return mh_step(self._state, self.generator, self._potential, self.metric, step_size)
