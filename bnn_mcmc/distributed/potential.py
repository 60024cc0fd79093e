r"""A data-parallel potential: each rank evaluates its shard, one all-reduce joins them.

With the data set :math:`\mathcal D` split into shards :math:`\mathcal D_0, \dots,
\mathcal D_{R-1}` over :math:`R` ranks, the potential of a Bayesian neural network

.. math:: U(w) = \frac{1}{T}\,\frac{N}{n} \sum_{r=0}^{R-1} \sum_{i \in \mathcal D_r}
          -\log p(y_i \mid f(x_i; w)) \;-\; \log p(w),
          \qquad n = \sum_r |\mathcal D_r|,

is a sum of per-rank terms, and so is its gradient.  Rank :math:`r` computes

.. math:: U_r(w) = \frac{1}{T}\,\frac{N}{n} \sum_{i \in \mathcal D_r}
          -\log p(y_i \mid f(x_i; w)) \;-\; [r = 0]\,\log p(w)

and :math:`\nabla U_r(w)` with one reverse pass; the pair, packed into one flat
buffer :math:`(U_r, \nabla U_r)` of length :math:`1 + d`, is summed over the ranks by
**one** :func:`torch.distributed.all_reduce`.  The prior is counted once: rank 0 adds
it to its own term (its cost is :math:`O(d)`, negligible next to the data term), so
no rank divides it and no second reduction or second reverse pass is needed.

Every rank gets the same bits back from the all-reduce, so every rank holds the same
:math:`U` and :math:`\nabla U`, and a sampler run with the same seed on every rank
makes the same accept/reject and tree decisions without further messages
(Izmailov et al. 2021 ran full-batch HMC this way on 512 TPU devices).

The reduced value is returned as an autograd leaf whose gradient *is* the reduced
gradient (a :class:`torch.autograd.Function`), so the samplers, which call
``torch.autograd.grad(U(w), w)``, run unchanged.  Without gradient tracking (e.g.
Metropolis–Hastings under ``torch.no_grad``) only the values are reduced.

Failures stay consistent across ranks: a numerical failure in one rank's term
(:data:`bnn_mcmc.kernels.potential.NUMERICAL_ERRORS`, or a non-finite value) makes
the sum non-finite on every rank, which the kernels count as a divergence; any other
exception in one rank's term is flagged in the same buffer and every rank raises a
:class:`~bnn_mcmc.distributed.group.DistributedError` naming the rank; a rank that
died or stopped makes the all-reduce fail (or time out) on the others, which raise
the same error type.

References
----------
Izmailov, P., Vikram, S., Hoffman, M. D. and Wilson, A. G. (2021). What are Bayesian
neural network posteriors really like? *ICML*.
Neal, R. M. (2011). MCMC using Hamiltonian dynamics. *Handbook of MCMC*, ch. 5.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..bnn import (
    FunctionalNet,
    Likelihood,
    MainNetFunction,
    Prior,
    as_function,
    nn_pot_energy,
    resolve_likelihood,
)
from ..kernels.potential import NUMERICAL_ERRORS
from .checks import check_same_settings, describe, report_failures
from .group import DistributedError, communication_device, is_writer, rank, world_size

#: Words of the error message of a failed all-reduce; the launcher uses them to tell
#: the rank that failed first from the ranks that stopped because of it.
PEER_LOST = "the all-reduce of the potential failed"


def shard_range(n: int, num_shards: int, index: int) -> range:
    """Rows of shard ``index`` when ``n`` rows are cut into ``num_shards`` contiguous shards.

    The first ``n % num_shards`` shards get one row more (as :func:`numpy.array_split`).
    """
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index must be in [0, {num_shards}); got {index}.")
    base, extra = divmod(n, num_shards)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))


def local_shard(*tensors: Tensor, group=None) -> tuple[Tensor, ...]:
    """This rank's contiguous shard (first axis) of each tensor (all of it without a group).

    For data that fit in every rank's memory; with larger data sets load only
    ``shard_range(n, world_size, rank)`` on each rank.
    """
    if not tensors:
        raise ValueError("local_shard needs at least one tensor.")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(
            "local_shard: the tensors have different numbers of rows "
            f"{[t.shape[0] for t in tensors]}."
        )
    rows = shard_range(n, world_size(group), rank(group))
    return tuple(t[rows.start : rows.stop] for t in tensors)


@dataclass
class EvaluationTimes:
    """Where the time of the sharded evaluations went (this rank's wall clock).

    Attributes
    ----------
    num_evals
        Evaluations (each one all-reduce).
    total_seconds
        Wall time inside the sharded potential.
    comm_seconds
        Wall time inside :func:`torch.distributed.all_reduce` (on CUDA with ``nccl``,
        the launch and the wait for the result).
    """

    num_evals: int = 0
    total_seconds: float = 0.0
    comm_seconds: float = 0.0

    @property
    def communication_share(self) -> float:
        """``comm_seconds / total_seconds`` (``nan`` before the first evaluation)."""
        return self.comm_seconds / self.total_seconds if self.total_seconds else math.nan


class _ReducedEnergy(torch.autograd.Function):
    """``U(w)`` summed over ranks; its backward multiplies the saved reduced gradient."""

    @staticmethod
    def forward(ctx, w: Tensor, potential: ShardedPotential) -> Tensor:  # noqa: D102
        value, grad = potential.value_and_grad(w)
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):  # noqa: D102
        (grad,) = ctx.saved_tensors
        return grad_output.unsqueeze(-1) * grad, None


class ShardedPotential:
    r"""A user's potential of the local shard, summed over the ranks of a process group.

    Parameters
    ----------
    local_fn
        ``U_r(w)``: this rank's term, a scalar for ``w`` of shape ``(dim,)`` (or
        ``(B,)`` for ``(B, dim)`` when it accepts batches).  It must not talk to the
        other ranks itself.
    global_fn
        A term of the whole posterior that must be counted once, typically
        :math:`-\log p(w)`; rank 0 adds it to its term before the reduction.
    group
        The process group (default: the default group; without one the potential is
        ``local_fn + global_fn`` in this process).

    Attributes
    ----------
    times : EvaluationTimes
        Time spent in the evaluations and in the all-reduce, for benchmarks.
    accepts_batches : bool
        Copied from ``local_fn`` (the vectorised multi-chain backend then skips vmap).

    Notes
    -----
    Every rank must call the potential the same number of times with positions of the
    same shape and with the same gradient mode — which a sampler run with the same
    seed and options on every rank does.  Calling it on one rank only blocks until the
    process group's timeout.
    """

    def __init__(
        self,
        local_fn: Callable[[Tensor], Tensor],
        global_fn: Callable[[Tensor], Tensor] | None = None,
        group=None,
    ):
        if not callable(local_fn):
            raise TypeError(
                f"local_fn must be callable (w -> tensor); got {type(local_fn).__name__}."
            )
        if global_fn is not None and not callable(global_fn):
            raise TypeError(f"global_fn must be callable or None; got {type(global_fn).__name__}.")
        self.local_fn, self.global_fn, self.group = local_fn, global_fn, group
        self.times = EvaluationTimes()
        self.accepts_batches = bool(getattr(local_fn, "accepts_batches", False))
        if hasattr(local_fn, "dim"):
            self.dim = local_fn.dim

    def __call__(self, w: Tensor) -> Tensor:
        """The reduced :math:`U(w)`, differentiable with respect to ``w``."""
        if not isinstance(w, Tensor):
            raise TypeError(f"the position must be a torch.Tensor; got {type(w).__name__}.")
        if torch.is_grad_enabled() and w.requires_grad:
            return _ReducedEnergy.apply(w, self)
        value, _ = self._evaluate(w, need_grad=False)
        return value

    def value_and_grad(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """The reduced :math:`U(w)` and :math:`\\nabla U(w)` (detached), one all-reduce."""
        value, grad = self._evaluate(w, need_grad=True)
        return value, grad

    # ------------------------------------------------------------------ internals
    def _local_terms(self, w: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        with torch.enable_grad() if need_grad else torch.no_grad():
            x = w.detach().requires_grad_(need_grad)
            u = self.local_fn(x)
            if not isinstance(u, Tensor):
                raise TypeError(f"local_fn must return a tensor; got {type(u).__name__}.")
            if self.global_fn is not None and is_writer(self.group):
                u = u + self.global_fn(x)
            if u.shape != w.shape[:-1]:
                raise ValueError(
                    f"local_fn returned shape {tuple(u.shape)} for a position of shape "
                    f"{tuple(w.shape)}; expected {tuple(w.shape[:-1])} (one energy per position)."
                )
            if not need_grad:
                return u.detach(), None
            (grad,) = torch.autograd.grad(u.sum(), x, allow_unused=True)
        return u.detach(), torch.zeros_like(w) if grad is None else grad

    def _evaluate(self, w: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        t0 = time.perf_counter()
        batch = w.shape[:-1]
        failure: BaseException | None = None
        try:
            u, grad = self._local_terms(w, need_grad)
        except NUMERICAL_ERRORS:
            u = torch.full(batch, math.inf, dtype=w.dtype, device=w.device)
            grad = torch.zeros_like(w) if need_grad else None
        except Exception as err:  # flagged to every rank below, then re-raised here
            failure = err
            u = torch.zeros(batch, dtype=w.dtype, device=w.device)
            grad = torch.zeros_like(w) if need_grad else None
        parts = [u.reshape(-1).to(w.dtype)]
        if need_grad:
            parts.append(grad.reshape(-1).to(w.dtype))
        flag = torch.tensor([0.0 if failure is None else 1.0], dtype=w.dtype, device=w.device)
        buffer = torch.cat(parts + [flag]).to(communication_device(self.group))
        t1 = time.perf_counter()
        if world_size(self.group) > 1:
            try:
                dist.all_reduce(buffer, group=self.group)
            except RuntimeError as err:
                raise DistributedError(
                    f"rank {rank(self.group)}: {PEER_LOST}: another rank stopped, died or did "
                    f"not answer within the process group's timeout ({err})"
                ) from err
        failed = float(buffer[-1])  # waits for the result on CUDA
        t2 = time.perf_counter()
        if failed > 0:
            self._raise_failure(failure)
        buffer = buffer.to(w.device)
        n = u.numel()
        value = buffer[:n].reshape(batch)
        grad_out = buffer[n:-1].reshape(w.shape) if need_grad else None
        t3 = time.perf_counter()
        self.times.num_evals += 1
        self.times.total_seconds += t3 - t0
        self.times.comm_seconds += t2 - t1
        return value, grad_out

    def _raise_failure(self, failure: BaseException | None) -> None:
        """Every rank learns which ranks' terms raised (more messages, on failure only)."""
        report_failures(failure, "the local potential", self.group)
        raise DistributedError("the local potential failed on another rank")  # not reached


def all_reduce_potential(
    local_fn: Callable[[Tensor], Tensor],
    global_fn: Callable[[Tensor], Tensor] | None = None,
    *,
    group=None,
    settings: Mapping[str, Any] | None = None,
) -> ShardedPotential:
    """Wrap a user's potential of the local shard into a :class:`ShardedPotential`.

    Parameters
    ----------
    local_fn, global_fn, group
        See :class:`ShardedPotential`.
    settings
        Anything that must be equal on every rank (seed, sampler options, feature
        shapes); compared once, here, by one all-gather of its hash
        (:func:`~bnn_mcmc.distributed.checks.check_same_settings`).

    Examples
    --------
    >>> import torch
    >>> x = torch.linspace(-1, 1, 8, dtype=torch.float64)  # this rank's shard
    >>> U = all_reduce_potential(lambda w: 0.5 * ((x - w) ** 2).sum(),
    ...                          global_fn=lambda w: 0.5 * (w**2).sum())
    >>> w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    >>> u = U(w)
    >>> round(float(u.detach()), 6), torch.autograd.grad(u, w)[0].tolist()
    (1.714286, [0.0])
    """
    check_same_settings({"settings": settings}, group=group)
    return ShardedPotential(local_fn, global_fn, group)


def _zero_log_prior(w: Tensor) -> Tensor:
    return w.new_zeros(w.shape[:-1])


def sharded_pot_energy(
    net: nn.Module | FunctionalNet | MainNetFunction,
    inputs: Tensor,
    targets: Tensor,
    prior_log_prob_func: Callable[[Tensor], Tensor] | None = None,
    tau_pred: float = 1.0,
    nll_type: str = "regression",
    *,
    likelihood: Likelihood | None = None,
    prior: Prior | None = None,
    temperature: float = 1.0,
    dataset_size: int | None = None,
    chunk_size: int | None = None,
    group=None,
    settings: Mapping[str, Any] | None = None,
) -> ShardedPotential:
    r"""The potential of :func:`~bnn_mcmc.nn_pot_energy` with the data sharded over ranks.

    Call it on every rank with that rank's shard (:func:`local_shard` cuts one; shards
    may have different sizes).  It equals ``nn_pot_energy`` of the concatenated shards
    (within float rounding: sums are taken in another order).

    Parameters
    ----------
    net, prior_log_prob_func, tau_pred, nll_type, likelihood, prior, temperature, chunk_size
        As for :func:`~bnn_mcmc.nn_pot_energy`; the same on every rank.
    inputs, targets
        This rank's shard (at least one data point); feature shapes and dtypes must
        agree across ranks.
    dataset_size
        :math:`N`, the size of the full data set when the shards together are a
        minibatch; default: the total number of points in the shards.
    group
        The process group (default: the default group).
    settings
        Further settings that must agree across ranks (the seed, the sampler's
        options); hashed together with the shapes and options above.

    Returns
    -------
    ShardedPotential
        ``U(w)``, with attributes ``dim``, ``likelihood``, ``function``,
        ``accepts_batches``, ``num_points`` (per rank) and ``times``.

    Raises
    ------
    DistributedError
        If the ranks' feature shapes, dtypes, network sizes, options or ``settings``
        differ (naming the ranks and keys), or a shard is empty.
    """
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise TypeError("inputs and targets must be torch.Tensors (this rank's shard).")
    f = as_function(net, chunk_size)
    lik = resolve_likelihood(likelihood, nll_type, tau_pred)
    n_local = int(targets.shape[0]) if targets.dim() else 0
    common = {
        "inputs": {"shape": list(inputs.shape[1:]), "dtype": str(inputs.dtype)},
        "targets": {"shape": list(targets.shape[1:]), "dtype": str(targets.dtype)},
        "inputs_rows_match_targets": int(inputs.shape[0]) == n_local if inputs.dim() else False,
        "network": {"type": type(net).__qualname__, "dim": f.dim},
        "likelihood": describe(lik),
        "prior": describe(prior),
        "prior_log_prob_func": describe(prior_log_prob_func),
        "temperature": float(temperature),
        "dataset_size": dataset_size,
        "settings": settings,
    }
    counts = check_same_settings(common, counts=[n_local], group=group).column(0)
    empty = [r for r, c in enumerate(counts) if c == 0]
    if empty:
        raise DistributedError(
            f"rank(s) {empty} hold no data points; give every rank at least one (fewer "
            f"processes than the {sum(counts)} points)."
        )
    if not common["inputs_rows_match_targets"]:
        raise ValueError(
            f"inputs ({inputs.shape[0] if inputs.dim() else 0} rows) and targets ({n_local}) "
            "of this shard differ in length."
        )
    n_total = sum(counts)
    if dataset_size is not None and (
        isinstance(dataset_size, bool)
        or not isinstance(dataset_size, int)
        or dataset_size < n_total
    ):
        raise ValueError(
            f"dataset_size must be an int >= the {n_total} points of all shards; got "
            f"{dataset_size!r}."
        )
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    # nn_pot_energy divides its data term by the temperature: T n / N scales each shard by
    # N / (n T), the factor of the concatenated shards (exactly T when N = n)
    local_t = (
        float(temperature)
        if dataset_size in (None, n_total)
        else (float(temperature) * n_total / dataset_size)
    )
    failure: BaseException | None = None
    try:
        if is_writer(group):
            local = nn_pot_energy(
                f,
                inputs,
                targets,
                prior_log_prob_func,
                likelihood=lik,
                prior=prior,
                temperature=local_t,
            )
        else:
            # the prior is rank 0's: here a zero prior, and the likelihood's own parameters'
            # prior (learned noise) is taken out again
            local = nn_pot_energy(
                f, inputs, targets, _zero_log_prior, likelihood=lik, temperature=local_t
            )
            if lik.num_extra_params:
                local = _without_extra_prior(local, lik, f.dim)
    except Exception as err:  # reported to every rank: none waits for a rank that stopped
        failure = err
    report_failures(failure, "building the sharded potential", group)
    potential = ShardedPotential(local, None, group)
    potential.dim = f.dim + lik.num_extra_params
    potential.likelihood = lik
    potential.function = f
    potential.accepts_batches = True
    potential.num_points = counts
    return potential


def _without_extra_prior(local: Callable[[Tensor], Tensor], lik: Likelihood, num_net: int):
    """``local`` minus the prior of the likelihood's own parameters (counted on rank 0 only)."""

    def term(w: Tensor) -> Tensor:
        return local(w) + lik.extra_log_prior(w[..., num_net:])

    term.accepts_batches = True
    return term
