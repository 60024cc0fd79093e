r"""The potential of a Bayesian neural network with its data sharded over ranks.

:func:`sharded_pot_energy` is :func:`~bnn_mcmc.nn_pot_energy` for data split over the
ranks of a process group.  With shards :math:`\mathcal D_r` of sizes :math:`n_r`,
:math:`n = \sum_r n_r` points in all, a full data set of size :math:`N` (default
:math:`n`) and temperature :math:`T`,

.. math:: U(w) = \frac{N}{n\,T} \sum_{r} \sum_{i \in \mathcal D_r}
          -\log p(y_i \mid f(x_i; w)) \;-\; \log p(w),

which is ``nn_pot_energy`` of the concatenated shards: each rank sums the negative
log likelihood of its own shard, one all-reduce sums the shards' terms and
gradients, and the factor :math:`N/(nT)` and the prior (with the prior of the
likelihood's own parameters, e.g. a learned noise scale) are applied to the reduced
value, once, identically on every rank (:class:`~.potential.ShardedPotential`).
Shards may have different sizes; :math:`n` is learnt in the start-up check.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ..bnn import (
    FunctionalNet,
    Likelihood,
    MainNetFunction,
    Prior,
    as_function,
    nn_pot_energy,
    resolve_likelihood,
)
from .group import rank, world_size
from .potential import ShardedPotential
from .settings import describe


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

    For data that fit in every rank's memory; for larger ones load only the rows
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


def _zero_log_prior(w: Tensor) -> Tensor:
    return w.new_zeros(w.shape[:-1])


def sharded_pot_energy(
    net: nn.Module | FunctionalNet | MainNetFunction,
    inputs: Tensor,
    targets: Tensor,
    prior_log_prob_func: Callable[[Tensor], Tensor] | None = None,
    *,
    likelihood: Likelihood | None = None,
    prior: Prior | None = None,
    temperature: float = 1.0,
    dataset_size: int | None = None,
    group=None,
) -> ShardedPotential:
    r"""The potential of :func:`~bnn_mcmc.nn_pot_energy` with the data sharded over ranks.

    Call it on every rank with that rank's shard (:func:`local_shard` cuts one).  Its
    value and gradient equal those of ``nn_pot_energy`` of the concatenated shards
    within float rounding (the sum over points is taken shard by shard).

    Parameters
    ----------
    net, prior_log_prob_func, likelihood, prior, temperature
        As for :func:`~bnn_mcmc.nn_pot_energy`; the same on every rank.
    inputs, targets
        This rank's shard (at least one point); shapes after the first axis and dtypes
        must agree across ranks.
    dataset_size
        :math:`N`, the size of the full data set when the shards together are a
        minibatch; default: the number of points of all shards.
    group
        The process group (default: the default group).

    Returns
    -------
    ShardedPotential
        ``U(w)`` for a 1-D ``w``; attributes ``dim``, ``likelihood``, ``function``,
        ``times``, ``is_writer`` and, after the start-up check, ``num_points``.

    Raises
    ------
    DistributedError
        At the start-up check (when a sampler is built on it, or at the first
        evaluation), if the ranks' feature shapes, dtypes, network, likelihood, prior
        or sampler settings differ, naming the ranks.
    ValueError
        If ``dataset_size`` is smaller than the number of points of all shards.
    """
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise TypeError("inputs and targets must be torch.Tensors (this rank's shard).")
    f = as_function(net)
    lik = resolve_likelihood(likelihood)
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    if dataset_size is not None and (
        isinstance(dataset_size, bool) or not isinstance(dataset_size, int)
    ):
        raise TypeError(f"dataset_size must be an int or None; got {dataset_size!r}.")
    # the data term of this shard, unscaled and without prior; and the prior, from the full form
    # (an error here is reported to every rank at the start-up check, so none waits for it)
    error: BaseException | None = None
    try:
        data = nn_pot_energy(f, inputs, targets, _zero_log_prior, likelihood=lik)
        full = nn_pot_energy(f, inputs, targets, prior_log_prob_func, likelihood=lik, prior=prior)
        log_prior = full.spec.log_prior
    except Exception as err:
        error = err

        def data(w: Tensor) -> Tensor:  # never called: the start-up check raises first
            raise error

        log_prior = _zero_log_prior
    num_net, num_extra = f.dim, lik.num_extra_params

    if num_extra:

        def local_fn(w: Tensor) -> Tensor:
            # nn_pot_energy subtracts the likelihood's own prior: it is counted once, below
            return data(w) + lik.extra_log_prior(w[num_net:])

        def global_fn(w: Tensor) -> Tensor:
            return -(log_prior(w[:num_net]) + lik.extra_log_prior(w[num_net:]))

    else:
        local_fn = data

        def global_fn(w: Tensor) -> Tensor:
            return -log_prior(w)

    def scale(counts: list[int]) -> float:
        n = sum(counts)
        if dataset_size is not None and dataset_size < n:
            raise ValueError(
                f"dataset_size must be >= the {n} points of all shards; got {dataset_size}."
            )
        return (1.0 if dataset_size is None else dataset_size / n) / float(temperature)

    layout = {
        "inputs": {"shape": list(inputs.shape[1:]), "dtype": str(inputs.dtype)},
        "targets": {"shape": list(targets.shape[1:]), "dtype": str(targets.dtype)},
    }
    settings = {
        "network": {"type": type(net).__qualname__, "dim": num_net},
        "likelihood": describe(lik),
        "prior": describe(prior),
        "temperature": float(temperature),
        "dataset_size": dataset_size,
    }
    potential = ShardedPotential(
        local_fn,
        group,
        global_fn=global_fn,
        scale=scale,
        num_points=int(targets.shape[0]) if targets.dim() else 0,
        layout=layout,
        settings=settings,
        local_error=error,
    )
    potential.dim = num_net + num_extra
    potential.likelihood = lik
    potential.function = f
    return potential
