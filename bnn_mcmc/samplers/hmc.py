"""Hamiltonian Monte Carlo with a fixed number of leapfrog steps per transition."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from ..checks import check_count, check_positive
from ..kernels.hmc import hmc_step
from ..kernels.metrics import Metric
from .base import Sampler


class HMC(Sampler):
    r"""Hamiltonian Monte Carlo (Duane et al. 1987; Neal 2011) on a flat position.

    Each transition draws :math:`p \sim \mathcal N(0, M)`, runs ``num_steps``
    leapfrog steps and accepts with probability :math:`\min(1, e^{-\Delta H})`.
    It costs exactly ``num_steps`` gradient evaluations: :math:`U` and
    :math:`\nabla U` of the current state are cached (one extra evaluation at
    the start of the chain).

    The step size is jittered by default: each transition uses
    :math:`\varepsilon\,u`, :math:`u \sim \mathcal U(1 - j, 1 + j)` with
    ``jitter`` :math:`j = 0.2` (±20 %), so the trajectory length
    :math:`\varepsilon L` varies and no coordinate can lock into a periodic
    orbit (a fixed :math:`\varepsilon L` freezes coordinates whose period
    divides it; Neal 2011, §5.4.2).  ``jitter=0`` turns it off.

    Parameters
    ----------
    initial_position
        1-D floating tensor; its dtype and device are the chain's.
    pot_energy_func
        ``U(w) -> scalar tensor``, the negative log density up to a constant.
    stepsize
        Leapfrog step size :math:`\varepsilon` (adapted by :meth:`warmup`).
    num_steps
        Leapfrog steps per transition :math:`L`.
    inv_mass
        Inverse mass matrix: positive scalar, diagonal (1-D), dense (2-D) or a
        :class:`~bnn_mcmc.kernels.metrics.Metric`.
    logger, log_interval
        A :class:`logging.Logger` told the progress every ``log_interval`` states.
    writer, writer_tag
        A tensorboardX ``SummaryWriter`` receiving potential, kinetic energy,
        Hamiltonian, acceptance and step size per transition, tags prefixed by
        ``writer_tag``.
    jitter
        Relative half-width of the uniform step-size jitter, in [0, 1).
    seed, generator
        The chain's randomness: an int seed or a ``torch.Generator`` on the
        position's device.  The global RNG is never used.
    progress
        Show a tqdm progress bar.
    delta_max
        Energy error above which a transition counts as divergent.
    compile_potential
        Evaluate :math:`U` and :math:`\nabla U` as one ``torch.compile``-d
        ``torch.func.grad_and_value`` (see :class:`~bnn_mcmc.kernels.potential.Potential`):
        about 3× cheaper gradients on small networks, after a few seconds of
        compilation; checked against eager autograd at the start.

    Examples
    --------
    >>> import torch
    >>> from bnn_mcmc import HMC
    >>> hmc = HMC(torch.zeros(3), lambda w: 0.5 * (w ** 2).sum(), num_steps=10, seed=0)
    >>> hmc.warmup(200)
    >>> hmc.simulate_chain(500)
    >>> hmc.samples().shape
    torch.Size([500, 3])
    """

    stat_names = (
        "lp",
        "acceptance_rate",
        "accepted",
        "step_size",
        "n_steps",
        "diverging",
        "energy",
        "energy_error",
    )

    def __init__(
        self,
        initial_position: Tensor,
        pot_energy_func: Callable[[Tensor], Tensor],
        stepsize: float = 0.02,
        num_steps: int = 1,
        inv_mass: float | Tensor | Metric = 1.0,
        logger: logging.Logger | None = None,
        log_interval: int = 100,
        writer=None,
        writer_tag: str = "",
        *,
        jitter: float = 0.2,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        compile_potential: bool = False,
        delta_max: float = 1000.0,
    ):
        self.num_steps = check_count("num_steps", num_steps, 1)
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
            jitter,
            compile_potential,
        )

    def _kernel(self, step_size):
        return hmc_step(
            self._state,
            self.generator,
            self._potential,
            self.metric,
            step_size,
            self.num_steps,
            self.delta_max,
        )
