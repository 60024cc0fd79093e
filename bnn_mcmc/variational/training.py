r"""ELBO training shared by every variational posterior.

Each iteration draws :math:`S` reparameterised weight vectors :math:`w_s \sim q_\phi`, a
minibatch :math:`\mathcal B` of the :math:`N` data points, and descends the unbiased
negative-ELBO estimate

.. math:: \hat{\mathcal F}(\phi) = \frac1S \sum_{s=1}^S \frac{N}{|\mathcal B|}
          \sum_{i\in\mathcal B} -\log p(y_i \mid f(x_i; w_s))
          \;+\; \widehat{\mathrm{KL}}(q_\phi \Vert p),

with Adam, an optional cosine learning-rate schedule, a tqdm progress bar, tensorboard
curves and, given validation data, early stopping on the validation predictive NLL

.. math:: \mathrm{NLL}_{\text{val}} = -\frac1n \sum_{i=1}^n
          \log \frac1S \sum_{s} p(y_i \mid f(x_i; w_s)),

keeping the parameters of the best evaluation (and an AVB discriminator's state with
them).  The loss is the negative ELBO only when the KL term has a value: SSGE gives the
entropy's gradient, not its value, so its loss lacks the entropy and is labelled so
(:attr:`TrainingHistory.loss_kind`); :func:`~bnn_mcmc.variational.elbo_estimate`, logged
every ``elbo_every`` iterations, is the ELBO itself where ``q`` allows it.

References
----------
Hoffman, M. D., Blei, D. M., Wang, C. and Paisley, J. (2013). Stochastic variational
inference. *JMLR* 14, 1303-1347.
Loshchilov, I. and Hutter, F. (2017). SGDR: stochastic gradient descent with warm
restarts. *ICLR* (cosine schedule).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..bnn.functional import FunctionalNet, MainNetFunction, as_function
from ..bnn.likelihoods import Likelihood
from ..bnn.predictive import pointwise_log_likelihood
from ..bnn.priors import Prior
from ..checks import check_count
from .base import VariationalPosterior, check_prior, make_generator
from .elbo import elbo_estimate
from .implicit import ImplicitPosterior
from .ssge import SSGE


@dataclass
class TrainConfig:
    """Settings of :func:`fit_variational`.

    Attributes
    ----------
    num_iters : int
        Optimisation steps.
    lr : float
        Initial Adam learning rate.
    lr_final : float, optional
        Cosine-anneal the learning rate from ``lr`` to ``lr_final`` over ``num_iters``;
        ``None`` keeps it constant.
    batch_size : int, optional
        Data points per minibatch (reshuffled every epoch); ``None`` uses all.
    num_samples : int, optional
        Weight draws :math:`S` per step (``>= 2``: the KL estimators need several);
        ``None`` uses the posterior's :meth:`~VariationalPosterior.default_num_samples`
        (32 for mean field, ``min(max(64, dim), 512)`` for SSGE and AVB, whose entropy
        gradient and covariance contrast need draws in proportion to the dimension).
    eval_every : int
        Iterations between validation evaluations.
    val_num_samples : int
        Weight draws for the validation NLL (the same noise at every evaluation).
    patience : int, optional
        Stop after this many evaluations without improvement of the validation NLL;
        ``None`` never stops early (the best evaluation is still restored).
    elbo_every : int, optional
        Iterations between full-data :func:`~bnn_mcmc.variational.elbo_estimate` calls
        (logged as ``elbo``); ``None`` never.
    elbo_num_draws : int
        Draws per ELBO estimate.
    """

    num_iters: int = 1000
    lr: float = 1e-2
    lr_final: float | None = None
    batch_size: int | None = None
    num_samples: int | None = None
    eval_every: int = 50
    val_num_samples: int = 100
    patience: int | None = None
    elbo_every: int | None = 100
    elbo_num_draws: int = 64

    def __post_init__(self) -> None:
        check_count("num_iters", self.num_iters, 1)
        if self.num_samples is not None:
            check_count("num_samples", self.num_samples, 2)
        if self.elbo_every is not None:
            check_count("elbo_every", self.elbo_every, 1)
        check_count("elbo_num_draws", self.elbo_num_draws, 2)
        check_count("eval_every", self.eval_every, 1)
        check_count("val_num_samples", self.val_num_samples, 1)
        if self.batch_size is not None:
            check_count("batch_size", self.batch_size, 1)
        if self.patience is not None:
            check_count("patience", self.patience, 1)
        if not float(self.lr) > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}.")
        if self.lr_final is not None and not float(self.lr_final) >= 0:
            raise ValueError(f"lr_final must be >= 0 or None, got {self.lr_final!r}.")


@dataclass
class TrainingHistory:
    """Curves of a :func:`fit_variational` run (one entry per iteration unless noted).

    Attributes
    ----------
    loss : list of float
        The training loss; what it is says :attr:`loss_kind`.
    loss_kind : str
        ``'negative ELBO'`` (mean field, AVB) or ``'data NLL + cross-entropy (no entropy
        term; not an ELBO)'`` (SSGE, which estimates only the entropy's gradient).  For
        the ELBO itself see :attr:`elbo`.
    data_nll : list of float
        :math:`N/|\\mathcal B|`-scaled minibatch negative log-likelihood, averaged over draws.
    kl : list of float
        KL estimate, ``nan`` where the estimator gives only a gradient (SSGE).
    lr : list of float
        Learning rate used.
    disc_loss : list of float
        AVB discriminator loss after each step (``nan`` for other estimators).
    val_iters, val_nll : list
        Iterations (1-based) of the validation evaluations and their predictive NLL.
    elbo_iters, elbo, elbo_kind : list, list, str
        Iterations of the :func:`~bnn_mcmc.variational.elbo_estimate` calls, the
        estimates, and their kind (``'unavailable'`` when ``q`` has no usable density).
    best_iter : int or None
        Iteration of the restored parameters (``None`` without validation data).
    stopped_early : bool
        Whether ``patience`` ended the run.
    """

    loss: list[float] = field(default_factory=list)
    loss_kind: str = "negative ELBO"
    disc_loss: list[float] = field(default_factory=list)
    elbo_iters: list[int] = field(default_factory=list)
    elbo: list[float] = field(default_factory=list)
    elbo_kind: str = ""
    data_nll: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    val_iters: list[int] = field(default_factory=list)
    val_nll: list[float] = field(default_factory=list)
    best_iter: int | None = None
    stopped_early: bool = False


def predictive_nll(
    net: nn.Module | FunctionalNet | MainNetFunction,
    draws: Tensor,
    inputs: Tensor,
    targets: Tensor,
    likelihood: Likelihood,
) -> float:
    r"""Mean predictive negative log-likelihood :math:`-\frac1n\sum_i \log \frac1S\sum_s
    p(y_i \mid f(x_i; w_s))` of weight draws ``(S, dim)``."""
    ll = pointwise_log_likelihood(net, draws, inputs, targets, likelihood)
    ll = ll.reshape(-1, ll.shape[-1])
    return float(-(torch.logsumexp(ll, 0) - math.log(ll.shape[0])).mean())


def _check_data(name: str, inputs: object, targets: object) -> int:
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(f"{name} inputs and targets must be torch.Tensors.")
    if inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
        raise ValueError(
            f"{name} inputs and targets must hold the same positive number of data points; "
            f"got {tuple(inputs.shape)} and {tuple(targets.shape)}."
        )
    return inputs.shape[0]


def _minibatches(n: int, batch_size: int | None, generator: torch.Generator):
    """Endless stream of index tensors, reshuffled every epoch."""
    if batch_size is None or batch_size >= n:
        full = torch.arange(n)
        while True:
            yield full
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start : start + batch_size]


def fit_variational(
    posterior: VariationalPosterior,
    net: nn.Module | FunctionalNet | MainNetFunction,
    inputs: Tensor,
    targets: Tensor,
    likelihood: Likelihood,
    prior: Prior,
    config: TrainConfig | None = None,
    val_data: tuple[Tensor, Tensor] | None = None,
    writer=None,
    writer_tag: str = "variational",
    progress: bool = False,
    generator: torch.Generator | int | None = None,
) -> TrainingHistory:
    """Train ``posterior`` by maximising the ELBO.

    Parameters
    ----------
    posterior : VariationalPosterior
        :class:`~bnn_mcmc.variational.MeanFieldGaussian` or
        :class:`~bnn_mcmc.variational.ImplicitPosterior`; its ``dim`` must equal the
        network's number of weights.
    net : nn.Module, FunctionalNet or MainNetFunction
        The main network (:class:`~bnn_mcmc.bnn.MLP` or any module, see
        :func:`~bnn_mcmc.bnn.as_function`).
    inputs, targets : Tensor
        The full training set (``N`` points).
    likelihood : Likelihood
        Observation model without parameters of its own.
    prior : Prior
        Prior over the flat weights.
    config : TrainConfig, optional
        Optimisation settings (defaults of :class:`TrainConfig`).
    val_data : (Tensor, Tensor), optional
        Validation inputs and targets: enables evaluation, best-state restoring and
        early stopping.
    writer : tensorboardX.SummaryWriter, optional
        Receives the scalars ``{writer_tag}/loss``, ``data_nll``, ``kl``, ``lr`` and
        ``val_nll``.
    writer_tag : str
        Prefix of the tensorboard tags.
    progress : bool
        Show a tqdm progress bar.
    generator : torch.Generator or int, optional
        Randomness of draws and minibatches (an int is a seed).

    Returns
    -------
    TrainingHistory
    """
    if not isinstance(posterior, VariationalPosterior):
        raise TypeError(
            f"posterior must be a VariationalPosterior, got {type(posterior).__name__}."
        )
    if not isinstance(likelihood, Likelihood):
        raise TypeError(
            f"likelihood must be a bnn_mcmc.bnn.Likelihood, got {type(likelihood).__name__}."
        )
    if likelihood.num_extra_params:
        raise ValueError(
            f"{type(likelihood).__name__} has parameters of its own, which the variational "
            "posteriors do not model; fix them (e.g. GaussianLikelihood(tau_pred)) or use MCMC."
        )
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}.")
    f = as_function(net)
    if f.dim != posterior.dim:
        raise ValueError(
            f"the posterior is over {posterior.dim} weights but the network has {f.dim}."
        )
    check_prior(prior, posterior.dim)
    n = _check_data("training", inputs, targets)
    if val_data is not None:
        if not isinstance(val_data, (tuple, list)) or len(val_data) != 2:
            raise TypeError("val_data must be a pair (inputs, targets).")
        _check_data("validation", *val_data)
    elif config.patience is not None:
        raise ValueError("early stopping (patience) needs val_data=(inputs, targets).")

    gen = make_generator(generator)
    val_seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    params = posterior.variational_parameters()
    optimizer = torch.optim.Adam(params, lr=config.lr)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.num_iters, eta_min=config.lr_final
        )
        if config.lr_final is not None
        else None
    )
    batches = _minibatches(n, config.batch_size, gen)
    history = TrainingHistory()
    num_samples = (
        posterior.default_num_samples() if config.num_samples is None else config.num_samples
    )
    if isinstance(posterior, ImplicitPosterior) and isinstance(posterior.estimator, SSGE):
        history.loss_kind = "data NLL + cross-entropy (no entropy term; not an ELBO)"
    best_nll, best_state, best_aux, bad_evals = math.inf, None, None, 0
    bar = tqdm(range(1, config.num_iters + 1), disable=not progress, desc=writer_tag)
    for it in bar:
        idx = next(batches)
        xb, yb = inputs[idx], targets[idx]
        w = posterior.rsample(num_samples, gen)
        data_nll = likelihood.nll(f(w, xb), yb).mean() * (n / idx.numel())
        kl = posterior.kl_term(w, prior, gen)
        loss = data_nll + kl.surrogate
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        record = {
            "loss": float(loss.detach()),
            "data_nll": float(data_nll.detach()),
            "kl": math.nan if kl.estimate is None else kl.estimate,
            "lr": lr,
            "disc_loss": posterior.auxiliary_loss(),
        }
        for key, value in record.items():
            getattr(history, key).append(value)
            if writer is not None:
                writer.add_scalar(f"{writer_tag}/{key}", value, it)
        if config.elbo_every is not None and (
            it % config.elbo_every == 0 or it == config.num_iters
        ):
            est = elbo_estimate(
                posterior,
                f,
                inputs,
                targets,
                likelihood,
                prior,
                num_draws=config.elbo_num_draws,
                generator=torch.Generator().manual_seed(val_seed),
            )
            history.elbo_kind = est.kind
            if est.kind != "unavailable":
                history.elbo_iters.append(it)
                history.elbo.append(est.value)
                if writer is not None:
                    writer.add_scalar(f"{writer_tag}/elbo", est.value, it)
        if val_data is not None and (it % config.eval_every == 0 or it == config.num_iters):
            val_gen = torch.Generator().manual_seed(val_seed)
            draws = posterior.sample(config.val_num_samples, val_gen)
            val_nll = predictive_nll(f, draws, val_data[0], val_data[1], likelihood)
            history.val_iters.append(it)
            history.val_nll.append(val_nll)
            if writer is not None:
                writer.add_scalar(f"{writer_tag}/val_nll", val_nll, it)
            bar.set_postfix(loss=record["loss"], val_nll=val_nll)
            if val_nll < best_nll:
                best_nll, bad_evals, history.best_iter = val_nll, 0, it
                best_state = copy.deepcopy(posterior.state_dict())
                best_aux = posterior.auxiliary_state()
            else:
                bad_evals += 1
                if config.patience is not None and bad_evals >= config.patience:
                    history.stopped_early = True
                    break
        elif it % 10 == 0:
            bar.set_postfix(loss=record["loss"])
    bar.close()
    if best_state is not None:
        posterior.load_state_dict(best_state)
        posterior.load_auxiliary_state(best_aux)
    return history
