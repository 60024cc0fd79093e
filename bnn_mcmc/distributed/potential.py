r"""A data-parallel potential: each rank evaluates its shard, one all-reduce joins them.

With the data split into shards :math:`\mathcal D_0, \dots, \mathcal D_{R-1}` over
:math:`R` ranks, a potential whose data term is a sum over data points,

.. math:: U(w) = c \sum_{r=0}^{R-1} L_r(w) + G(w), \qquad
          L_r(w) = \sum_{i \in \mathcal D_r} -\log p(y_i \mid f(x_i; w)),

is evaluated by letting rank :math:`r` compute :math:`L_r` and :math:`\nabla L_r`
with one reverse pass, packing them with one failure flag per rank into **one**
buffer :math:`(L_r, \nabla L_r, e_0, \dots, e_{R-1})` of length :math:`1 + d + R`, and
summing the buffers of all ranks with one :func:`torch.distributed.all_reduce`.  The
common factor :math:`c` (e.g. :math:`N / (nT)`) and the replicated term :math:`G`
(e.g. :math:`-\log p(w)`, counted once) are applied to the reduced value, with the
same inputs on every rank, so every rank holds the same :math:`U` and
:math:`\nabla U`, and a sampler run with the same seed on every rank makes the same
accept/reject and tree decisions without any further message (Izmailov et al. 2021).

The reduced value is returned through a :class:`torch.autograd.Function` whose
backward is the reduced gradient, so the samplers, which call
``torch.autograd.grad(U(w), w)`` through :class:`~bnn_mcmc.kernels.potential.Potential`,
run unchanged and count one gradient evaluation per all-reduce.  Without gradient
tracking (Metropolis–Hastings, ``torch.no_grad``) only :math:`(L_r, e)` is reduced.

Failures stay consistent across ranks:

* a numerical failure in one rank's term (:data:`~bnn_mcmc.kernels.potential.NUMERICAL_ERRORS`
  or a non-finite value) makes the reduced value non-finite on every rank, which the
  kernels count as a divergence;
* any other exception in one rank's term sets that rank's flag; every rank then raises
  a :class:`~bnn_mcmc.distributed.group.DistributedError` naming the rank(s);
* a rank that stopped elsewhere, died or hangs makes the all-reduce fail (at once, or
  after the process group's timeout) on the others, which raise the same error type,
  naming the rank when it posted a failure notice.

References
----------
Izmailov, P., Vikram, S., Hoffman, M. D. and Wilson, A. G. (2021). What are Bayesian
neural network posteriors really like? *ICML*.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..kernels.potential import NUMERICAL_ERRORS
from .group import (
    DistributedError,
    collective_failed,
    communication_device,
    is_writer,
    rank,
    world_size,
)
from .settings import check_same_settings, describe

#: Constructor options of the samplers that must agree across ranks (public attributes).
SAMPLER_OPTIONS = ("num_steps", "max_tree_depth", "delta_max", "jitter", "proposal_std")


@dataclass
class EvaluationTimes:
    """Where this rank's time in the sharded potential went (wall clock).

    Attributes
    ----------
    num_reductions
        Evaluations, each exactly one all-reduce.
    total_seconds
        Wall time inside the sharded evaluations.
    comm_seconds
        Wall time inside :func:`torch.distributed.all_reduce` (this includes waiting
        for the slowest rank).
    """

    num_reductions: int = 0
    total_seconds: float = 0.0
    comm_seconds: float = 0.0

    @property
    def communication_share(self) -> float:
        """``comm_seconds / total_seconds`` (``nan`` before the first evaluation)."""
        return self.comm_seconds / self.total_seconds if self.total_seconds else math.nan


class _Reduced(torch.autograd.Function):
    """:math:`c \\sum_r L_r(w)`; the backward multiplies the saved reduced gradient."""

    @staticmethod
    def forward(ctx, w: Tensor, potential: ShardedPotential) -> Tensor:  # noqa: D102
        value, grad = potential.reduce(w, need_grad=True)
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):  # noqa: D102
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None


class ShardedPotential:
    r"""A user's potential term of the local shard, summed over the ranks of a group.

    Parameters
    ----------
    local_fn
        :math:`L_r(w)`: this rank's term, a scalar tensor for a 1-D position ``w``.  It
        must not communicate with the other ranks itself.
    group
        The process group (default: the default group; without one the potential is
        evaluated in this process alone).
    global_fn
        :math:`G(w)`, a term of the whole posterior counted once (typically
        :math:`-\log p(w)`); added to the reduced value, identically on every rank.
    scale
        :math:`c`, either a number or a function of the list of every rank's number of
        points (known after the start-up check), e.g. ``lambda n: N / sum(n)``.
    num_points
        This rank's number of data points (for ``scale``; default 0).
    layout
        This rank's data layout (feature shapes, dtypes): must agree across ranks.
    settings
        Further options that must agree across ranks (hashed with the sampler's).
    local_error
        An error met while building this rank's term (e.g. a shard the network cannot
        take); raised at the start-up check on every rank, naming this rank, once the
        layouts were compared (a layout mismatch is the clearer message).

    Attributes
    ----------
    times : EvaluationTimes
        Time in the evaluations and in the all-reduce, for benchmarks.
    is_writer : bool
        Whether this rank writes output; the samplers keep no draws and write no files
        on the other ranks.
    num_points : list of int or None
        Every rank's number of points, after the start-up check.

    Notes
    -----
    Every rank must evaluate the potential equally often, at positions of the same
    shape, in the same gradient mode — which the same sampler with the same seed and
    options on every rank does.  A sampler calls :meth:`start_chain` when it is built,
    which runs the start-up check (:func:`~bnn_mcmc.distributed.settings.check_same_settings`)
    with the sampler's settings; a potential used without a sampler runs it (without
    them) at the first evaluation.  ``compile_potential=True`` is not supported.
    """

    def __init__(
        self,
        local_fn: Callable[[Tensor], Tensor],
        group=None,
        *,
        global_fn: Callable[[Tensor], Tensor] | None = None,
        scale: float | Callable[[list[int]], float] = 1.0,
        num_points: int = 0,
        layout: Any = None,
        settings: Any = None,
        local_error: BaseException | None = None,
    ):
        if not callable(local_fn):
            raise TypeError(
                f"local_fn must be callable (w -> scalar tensor); got {type(local_fn).__name__}."
            )
        if global_fn is not None and not callable(global_fn):
            raise TypeError(f"global_fn must be callable or None; got {type(global_fn).__name__}.")
        self.local_fn, self.global_fn, self.group = local_fn, global_fn, group
        self._scale_rule = scale
        self.scale: float | None = None
        self.local_num_points = int(num_points)
        self.layout = layout
        self.settings = settings
        self.local_error = local_error
        self.num_points: list[int] | None = None
        self.times = EvaluationTimes()
        self.is_writer = is_writer(group)
        self.rank = rank(group)
        self.world_size = world_size(group)
        if hasattr(local_fn, "dim"):
            self.dim = local_fn.dim

    # ---------------------------------------------------------------- start-up
    def start_chain(self, sampler: object, position: Tensor, options: dict) -> None:
        """Start-up check with a sampler's settings (called by the sampler; collective).

        ``options`` holds the sampler's constructor arguments that are not attributes
        (seed or generator state, step size, inverse mass, compile flag).
        """
        if options.get("compile_potential"):
            raise ValueError(
                "compile_potential=True is not supported with a sharded potential (the "
                "all-reduce cannot be traced); use compile_potential=False."
            )
        chain = {
            "sampler": type(sampler).__name__,
            "options": {k: getattr(sampler, k) for k in SAMPLER_OPTIONS if hasattr(sampler, k)},
            "dim": int(position.shape[-1]),
            "dtype": str(position.dtype),
            "initial_position": position,
            **{k: describe(v) for k, v in options.items()},
        }
        self.setup(chain)

    def setup(self, chain: Any = None) -> None:
        """Run the start-up check (one all-gather) and fix :attr:`scale` (collective)."""
        agreement = check_same_settings(
            self.layout,
            {"chain": chain, "potential": self.settings},
            self.local_num_points,
            self.local_error is not None,
            self.group,
        )
        if agreement.failed_ranks:
            message = f"building the sharded potential failed on rank(s) {agreement.failed_ranks}"
            if self.local_error is not None:
                err = self.local_error
                raise DistributedError(
                    f"{message}: {type(err).__name__}: {err} (this is rank {self.rank})",
                    agreement.failed_ranks,
                ) from err
            raise DistributedError(
                f"{message}; rank {self.rank} stops with them", agreement.failed_ranks, True
            )
        self.num_points = agreement.num_points
        rule = self._scale_rule
        self.scale = float(rule(self.num_points) if callable(rule) else rule)

    # ------------------------------------------------------------- evaluation
    def __call__(self, w: Tensor) -> Tensor:
        """The reduced :math:`U(w)`, differentiable with respect to ``w`` (collective)."""
        if not isinstance(w, Tensor) or w.ndim != 1:
            raise ValueError(
                "a sharded potential takes one 1-D position (a flat weight vector); got "
                f"{type(w).__name__ if not isinstance(w, Tensor) else tuple(w.shape)}."
            )
        if self.scale is None:
            self.setup()
        if torch.is_grad_enabled() and w.requires_grad:
            u = _Reduced.apply(w, self)
        else:
            u, _ = self.reduce(w, need_grad=False)
        if self.global_fn is not None:
            u = u + self.global_fn(w)
        return u

    def _local_terms(self, w: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        with torch.enable_grad() if need_grad else torch.no_grad():
            x = w.detach().requires_grad_(need_grad)
            u = self.local_fn(x)
            if not isinstance(u, Tensor) or u.numel() != 1:
                raise TypeError(
                    "local_fn must return a scalar tensor (this shard's term); got "
                    f"{type(u).__name__ if not isinstance(u, Tensor) else tuple(u.shape)}."
                )
            u = u.reshape(())
            if not need_grad:
                return u.detach(), None
            if not u.requires_grad:
                return u.detach(), torch.zeros_like(w)
            (grad,) = torch.autograd.grad(u, x, allow_unused=True)
        return u.detach(), torch.zeros_like(w) if grad is None else grad

    def reduce(self, w: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        """:math:`c \\sum_r L_r(w)` and (with ``need_grad``) its gradient; one all-reduce.

        Collective.  Raises :class:`~bnn_mcmc.distributed.group.DistributedError` on
        every rank when a rank's term raised (naming the ranks) or a rank is lost.
        """
        t0 = time.perf_counter()
        size, me = self.world_size, self.rank
        failure: BaseException | None = None
        try:
            u, grad = self._local_terms(w, need_grad)
        except NUMERICAL_ERRORS:
            u, grad = w.new_tensor(math.inf), torch.zeros_like(w) if need_grad else None
        except Exception as err:  # flagged to every rank below, then re-raised here
            failure = err
            u, grad = w.new_zeros(()), torch.zeros_like(w) if need_grad else None
        d = w.shape[0] if need_grad else 0
        buffer = torch.zeros(1 + d + size, dtype=w.dtype, device=communication_device(self.group))
        buffer[0] = u
        if need_grad:
            buffer[1 : 1 + d] = grad
        if failure is not None:
            buffer[1 + d + me] = 1.0
        t1 = time.perf_counter()
        if size > 1:
            try:
                dist.all_reduce(buffer, group=self.group)
            except RuntimeError as err:
                raise collective_failed(
                    "the all-reduce of the sharded potential", err, self.group
                ) from err
        flags = buffer[1 + d :].tolist()  # on CUDA this waits for the result
        t2 = time.perf_counter()
        failed = [r for r, f in enumerate(flags) if f > 0]
        if failed:
            message = f"the local potential raised on rank(s) {failed}"
            if failure is not None:
                raise DistributedError(
                    f"{message}: {type(failure).__name__}: {failure} (this is rank {me})", failed
                ) from failure
            raise DistributedError(f"{message}; rank {me} stops with them", failed, secondary=True)
        buffer = buffer.to(w.device)
        value = self.scale * buffer[0]
        grad_out = self.scale * buffer[1 : 1 + d] if need_grad else None
        self.times.num_reductions += 1
        self.times.total_seconds += time.perf_counter() - t0
        self.times.comm_seconds += t2 - t1
        return value, grad_out
