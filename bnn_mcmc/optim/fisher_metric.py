r"""``inv_mass='fisher'``: a Kronecker-factored metric fitted by FishLeg at the start.

For a potential built by :func:`bnn_mcmc.bnn.nn_pot_energy` the network, likelihood,
data and prior are known (its ``.spec``), so the sampler can fit
:math:`Q(\lambda) \approx (F + \gamma I)^{-1}` at the initial position, with
:math:`\gamma` the prior precision (the mean diagonal of :math:`-\nabla^2 \log p(w)`,
estimated with one Hutchinson probe; exact for isotropic Gaussian priors).  Then
:math:`Q` is the inverse of the Gauss-Newton approximation of the posterior precision
:math:`F + \gamma I`, used as a fixed inverse mass matrix.  The fit: the FishLeg
Fisher-diagonal warm start, then ``num_aux_updates`` auxiliary updates along random
directions (so :math:`\mathbb E[uu^\top] = I` and every direction is learned).

References
----------
Garcia, J. R., Yan, F., Lengyel, G., Hennequin, G. (2023). Fisher-Legendre (FishLeg)
optimization of deep neural networks. *ICLR 2023*.
Girolami, M., Calderhead, B. (2011). Riemann manifold Langevin and Hamiltonian Monte
Carlo methods. *JRSS B* 73(2) (Fisher-shaped metrics for HMC).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils import vector_to_parameters

from ..kernels.kron_metric import KroneckerMetric
from .fishleg import FishLeg

logger = logging.getLogger(__name__)

#: Auxiliary updates of the fit (random directions, full data).
NUM_AUX_UPDATES = 300


def prior_precision(log_prior: Callable[[Tensor], Tensor], w: Tensor) -> float:
    """Mean diagonal of :math:`-\\nabla^2 \\log p(w)` at ``w`` (one Rademacher probe)."""
    w = w.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(log_prior(w), w, create_graph=True)
        z = torch.randint(0, 2, w.shape, generator=torch.Generator().manual_seed(0)).to(w) * 2 - 1
        (hz,) = torch.autograd.grad(g, w, grad_outputs=z, allow_unused=True)
    if hz is None:
        return 1.0
    prec = float(-(z * hz).mean())
    return prec if prec > 0 else 1.0


def fit_fisher_metric(
    pot_energy_func: Callable[[Tensor], Tensor],
    initial_position: Tensor,
    num_aux_updates: int = NUM_AUX_UPDATES,
    seed: int = 0,
) -> KroneckerMetric:
    """Fit the FishLeg Kronecker metric at ``initial_position`` (see the module docstring).

    Raises
    ------
    ValueError
        If the potential was not built by :func:`bnn_mcmc.bnn.nn_pot_energy` from an
        ``nn.Module``, or uses a minibatch / tempered data term.
    """
    spec = getattr(pot_energy_func, "spec", None)
    if spec is None:
        raise ValueError(
            "inv_mass='fisher' needs a potential built by bnn_mcmc.bnn.nn_pot_energy (which "
            "knows the network, likelihood and data); for a plain function pass a float, a "
            "tensor, or a trained FishLeg optimiser / its as_metric() as inv_mass."
        )
    if not isinstance(spec.net, nn.Module):
        raise ValueError(
            "inv_mass='fisher': the potential's network must be an nn.Module "
            f"(got {type(spec.net).__name__})."
        )
    if spec.data_scale != 1.0:
        raise ValueError(
            "inv_mass='fisher': only for full-data potentials at temperature 1 "
            "(no dataset_size= / temperature=); pass a fitted metric instead."
        )
    net = copy.deepcopy(spec.net)
    lik = spec.likelihood
    w0 = initial_position.detach()
    num_net = sum(p.numel() for p in net.parameters())
    if w0.shape != (num_net + lik.num_extra_params,):
        raise ValueError(
            f"initial_position: expected shape ({num_net + lik.num_extra_params},), "
            f"got {tuple(w0.shape)}."
        )
    vector_to_parameters(w0[:num_net].to(next(net.parameters())), net.parameters())
    damping = prior_precision(spec.log_prior, w0[:num_net])
    data = [(spec.inputs, spec.targets)]
    opt = FishLeg(
        net,
        None,
        None,
        data,
        likelihood=lik,
        damping=damping,
        update_aux_every=0,
        aux_lr=1e-2,
        generator=torch.Generator(device=w0.device).manual_seed(seed),
    )
    if opt.extra is not None:
        with torch.no_grad():
            opt.extra.copy_(w0[num_net:])
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(num_aux_updates):
        opt.update_aux(torch.randn(w0.shape, generator=gen).to(w0))
    logger.warning(
        "inv_mass='fisher': fitted a Kronecker-factored metric (FishLeg, damping = "
        "prior precision %.3g, %d auxiliary updates) at the initial position; it "
        "stays fixed while sampling.",
        damping,
        num_aux_updates,
    )
    return opt.as_metric()


def resolve_inv_mass(
    inv_mass, pot_energy_func: Callable[[Tensor], Tensor], initial_position: Tensor
):
    """``inv_mass`` unchanged, or the fitted metric for ``inv_mass='fisher'``.

    Raises
    ------
    ValueError
        For another string, or for ``'fisher'`` with a potential that lacks ``.spec``.
    """
    if not isinstance(inv_mass, str):
        return inv_mass
    if inv_mass != "fisher":
        raise ValueError(f"inv_mass: the only string accepted is 'fisher', got {inv_mass!r}.")
    return fit_fisher_metric(pot_energy_func, initial_position)
