r"""Maximum-a-posteriori starting points for MCMC chains.

Each chain starts from its own initialisation (a PyTorch-style random draw
:math:`w_j \sim \mathcal U(-1/\sqrt{n_\text{in}}, 1/\sqrt{n_\text{in}})` per layer, or a
prior draw) and descends the potential

.. math:: U(w) = -\sum_i \log p(y_i \mid f(x_i; w), \rho) - \log p(w) - \log p(\rho)

(:math:`\rho` the likelihood's own parameters, if any) with FishLeg or Adam.  The
result, one flat vector per chain in ``named_parameters()`` order followed by
:math:`\rho`, is the layout of :func:`bnn_mcmc.bnn.nn_pot_energy`.

References
----------
Garcia, J. R., Yan, F., Lengyel, G., Hennequin, G. (2023). Fisher-Legendre (FishLeg)
optimization of deep neural networks. *ICLR 2023*.
Kingma, D. P., Ba, J. (2015). Adam: a method for stochastic optimization. *ICLR 2015*.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from .fisher_metric import prior_precision
from .fishleg import FishLeg


def _random_init(net: nn.Module, generator: torch.Generator) -> Tensor:
    """PyTorch's default layer initialisation, drawn from ``generator``: every
    parameter of a module uniform in :math:`\\pm 1/\\sqrt{\\text{fan-in}}` of the
    module's weight (1 for parameters of modules without a matrix weight)."""
    parts = []
    for module in net.modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        weight = getattr(module, "weight", None)
        fan_in = weight[0].numel() if isinstance(weight, Tensor) and weight.dim() > 1 else 1
        bound = 1.0 / math.sqrt(fan_in)
        for p in own:
            u = torch.rand(p.shape, generator=generator, dtype=p.dtype, device=generator.device)
            parts.append((id(p), (2 * u - 1).to(p.device) * bound))
    by_id = dict(parts)
    return torch.cat([by_id[id(p)].reshape(-1) for p in net.parameters()])


def find_map(
    net: nn.Module,
    nll,
    prior,
    data: tuple[Tensor, Tensor],
    optimizer: str = "fishleg",
    steps: int = 500,
    num_chains: int = 1,
    init: str = "random",
    generator: torch.Generator | None = None,
    lr: float | None = None,
    **optimizer_options,
) -> Tensor:
    """Optimise the log posterior from ``num_chains`` initialisations.

    Parameters
    ----------
    net : nn.Module
        The network (left unchanged: a copy is optimised).
    nll : bnn_mcmc.bnn.likelihoods.Likelihood
        The observation model (its ``nll``, ``draw``, and own parameters if any).
    prior : bnn_mcmc.bnn.priors.Prior
        Prior over the flat network weights (``log_prob``; ``sample`` for ``init='prior'``).
    data : (inputs, targets)
        The full data set (one batch).
    optimizer : {'fishleg', 'adam'}
        FishLeg with its own defaults (K-FAC warm start of :math:`Q`, one auxiliary
        update per step) except the damping, the prior precision (the curvature the prior
        adds to the Fisher in the MAP loss), or Adam.
    steps : int
        Optimisation steps per chain.
    num_chains : int
        Number of starting points.
    init : {'random', 'prior'}
        PyTorch-style uniform layer initialisation, or a draw from ``prior``
        (the likelihood's parameters from ``nll.sample_extra`` in that case, else 0).
    generator : torch.Generator
        Random source for initialisations and FishLeg's model-drawn targets.
    lr : float, optional
        Learning rate (default: FishLeg's ``fish_lr`` (0.3), 0.01 for Adam).
    **optimizer_options
        Further keyword arguments of :class:`FishLeg` or :class:`torch.optim.Adam`.

    Returns
    -------
    Tensor
        Shape ``(num_chains, dim)``, ``dim`` = number of network weights +
        ``nll.num_extra_params``.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}.")
    if optimizer not in ("fishleg", "adam"):
        raise ValueError(f"optimizer must be 'fishleg' or 'adam', got {optimizer!r}.")
    if init not in ("random", "prior"):
        raise ValueError(f"init must be 'random' or 'prior', got {init!r}.")
    for name, val in (("steps", steps), ("num_chains", num_chains)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}.")
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            "generator: pass a torch.Generator (e.g. torch.Generator().manual_seed(0))."
        )
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError("data must be a pair (inputs, targets).")
    if not hasattr(nll, "nll") or not hasattr(nll, "draw"):
        raise TypeError(
            "nll must be a likelihood object (with nll and draw methods), e.g. "
            "bnn_mcmc.bnn.likelihoods.GaussianLikelihood."
        )
    if not hasattr(prior, "log_prob"):
        raise TypeError(
            "prior must be a prior object with log_prob (and sample for "
            "init='prior'), e.g. bnn_mcmc.bnn.priors.GaussianPrior."
        )
    x, y = data
    work = copy.deepcopy(net)
    ref = next(work.parameters())
    starts = []
    for _ in range(num_chains):
        if init == "random":
            w0 = _random_init(work, generator)
            extra0 = torch.zeros(nll.num_extra_params, dtype=ref.dtype, device=ref.device)
        else:
            num_net = sum(p.numel() for p in work.parameters())
            w0 = prior.sample(generator, dim=num_net, dtype=ref.dtype)
            extra0 = nll.sample_extra(generator, dtype=ref.dtype).reshape(-1)
        vector_to_parameters(w0.to(ref.device), work.parameters())
        starts.append(
            _optimise(
                work,
                nll,
                prior,
                x,
                y,
                optimizer,
                steps,
                generator,
                lr,
                extra0.to(ref.device),
                optimizer_options,
            )
        )
    return torch.stack(starts)


def _optimise(net, lik, prior, x, y, optimizer, steps, generator, lr, extra0, options) -> Tensor:
    if optimizer == "fishleg":
        # the MAP loss has the prior's curvature on top of the Fisher: damping = prior precision
        options = {
            "damping": prior_precision(prior.log_prob, parameters_to_vector(net.parameters())),
            **options,
        }
        if lr is not None:
            options = {**options, "fish_lr": lr}
        opt = FishLeg(net, None, None, [(x, y)], likelihood=lik, generator=generator, **options)
        extra = opt.extra
        if extra is not None:
            with torch.no_grad():
                extra.copy_(extra0)
    else:
        extra = nn.Parameter(extra0.clone()) if extra0.numel() else None
        params = list(net.parameters()) + ([extra] if extra is not None else [])
        opt = torch.optim.Adam(params, lr=0.01 if lr is None else lr, **options)
    for _ in range(steps):
        opt.zero_grad()
        w = parameters_to_vector(net.parameters())
        loss = lik.nll(net(x), y, extra) - prior.log_prob(w)
        if extra is not None:
            loss = loss - lik.extra_log_prior(extra)
        loss.backward()
        opt.step()
    w = parameters_to_vector(net.parameters()).detach()
    return torch.cat([w, extra.detach()]) if extra is not None else w.clone()
