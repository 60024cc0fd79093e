r"""Priors over flat weight vectors of neural networks.

Every prior has ``log_prob(w)`` for ``w`` of shape ``(..., dim)`` (returns ``(...)``,
normalising constants included) and ``sample(generator, sample_shape)`` to initialise
chains from the prior.  A prior with a fixed ``dim`` rejects vectors of another length.

References
----------
Neal, R. M. (1996). *Bayesian Learning for Neural Networks*. Springer.
Fortuin, V. et al. (2022). Bayesian neural network priors revisited. *ICLR*.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_LOG_2PI = math.log(2.0 * math.pi)


def log_prob_standard_normal_prior(
    position: Tensor, mean: float | Tensor = 0.0, std: float | Tensor = 1.0
) -> Tensor:
    r"""Sum of Gaussian log-densities :math:`\sum_j \log\mathcal N(w_j; \mu, \sigma^2)`.

    .. math:: \log p(w) = -\sum_j \left[\tfrac{(w_j-\mu)^2}{2\sigma^2} + \log\sigma
              + \tfrac12\log 2\pi\right]

    Parameters
    ----------
    position : Tensor
        Shape ``(..., dim)``.
    mean, std : float or Tensor
        Broadcastable to ``position``; ``std`` must be positive.

    Returns
    -------
    Tensor
        Shape ``(...)``.
    """
    if isinstance(std, Tensor):
        if not bool((std > 0).all()):
            raise ValueError("std must be positive.")
        z = (position - mean) / std
        per_coord = -0.5 * z.square() - torch.log(std) - 0.5 * _LOG_2PI
        return per_coord.expand(position.shape).sum(-1)
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}.")
    return _isotropic_log_prob(position, mean, float(std))


def _isotropic_log_prob(w: Tensor, mean: float | Tensor, std: float) -> Tensor:
    """Isotropic Gaussian log density with as few tensor operations as possible."""
    centred = w if isinstance(mean, float | int) and mean == 0 else w - mean
    const = w.shape[-1] * (math.log(std) + 0.5 * _LOG_2PI)
    return centred.square().sum(-1).mul(-0.5 / std**2) - const


class Prior:
    """Interface: a density over flat weight vectors of length :attr:`dim`."""

    dim: int | None = None

    def _check(self, w: Tensor) -> None:
        if not isinstance(w, Tensor):
            raise TypeError(f"w must be a torch.Tensor, got {type(w).__name__}.")
        if w.dim() == 0 or (self.dim is not None and w.shape[-1] != self.dim):
            raise ValueError(
                f"{type(self).__name__} is defined on vectors of length {self.dim}; got a "
                f"position of shape {tuple(w.shape)}."
            )

    def _sample_dim(self, dim: int | None) -> int:
        if self.dim is not None:
            if dim is not None and dim != self.dim:
                raise ValueError(f"this prior has dim={self.dim}; got dim={dim}.")
            return self.dim
        if dim is None:
            raise ValueError("this prior has no fixed size; pass dim= to sample().")
        return dim

    def log_prob(self, w: Tensor) -> Tensor:
        """Log density of ``w`` (shape ``(..., dim)``), returns shape ``(...)``."""
        raise NotImplementedError

    def sample(
        self,
        generator: torch.Generator,
        sample_shape: tuple[int, ...] = (),
        dim: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw weights of shape ``(*sample_shape, dim)``."""
        raise NotImplementedError


class GaussianPrior(Prior):
    r"""Isotropic Gaussian :math:`w_j \sim \mathcal N(\mu, \sigma^2)`.

    Parameters
    ----------
    std : float
        :math:`\sigma > 0`.
    mean : float
        :math:`\mu`.
    dim : int, optional
        Fix the length of the weight vector (checked in :meth:`log_prob`).
    """

    def __init__(self, std: float = 1.0, mean: float = 0.0, dim: int | None = None) -> None:
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}.")
        self.std, self.mean, self.dim = float(std), float(mean), dim

    def log_prob(self, w: Tensor) -> Tensor:
        self._check(w)
        return _isotropic_log_prob(w, self.mean, self.std)

    def sample(self, generator, sample_shape=(), dim=None, dtype=None):
        d = self._sample_dim(dim)
        z = torch.randn(*sample_shape, d, generator=generator, dtype=dtype, device=generator.device)
        return self.mean + self.std * z


class LayerwiseGaussianPrior(Prior):
    r"""Independent Gaussians with one standard deviation per parameter tensor.

    :math:`w^{(t)}_j \sim \mathcal N(0, \sigma_t^2)` for the entries of tensor :math:`t`.

    Parameters
    ----------
    stds : sequence of float
        :math:`\sigma_t` for every tensor.
    shapes : sequence of shapes
        The tensors' shapes, in flat-vector order.
    """

    def __init__(self, stds, shapes) -> None:
        stds = [float(s) for s in stds]
        shapes = [tuple(s) for s in shapes]
        if len(stds) != len(shapes):
            raise ValueError(f"got {len(stds)} stds for {len(shapes)} parameter tensors.")
        if not all(s > 0 for s in stds):
            raise ValueError(f"all stds must be positive, got {stds}.")
        self.stds, self.shapes = stds, shapes
        numels = [math.prod(s) for s in shapes]
        self.dim = sum(numels)
        self._std_vec = torch.cat(
            [torch.full((n,), s, dtype=torch.float64) for s, n in zip(stds, numels, strict=True)]
        )
        self._log_norm = float(torch.log(self._std_vec).sum()) + 0.5 * self.dim * _LOG_2PI

    @classmethod
    def from_net(
        cls, net: nn.Module, weight_scale: float = 1.0, bias_std: float = 1.0
    ) -> LayerwiseGaussianPrior:
        r"""Fan-in scaled prior for a network.

        Tensors with two or more dimensions get :math:`\sigma = s/\sqrt{\text{fan-in}}`
        (``s`` = ``weight_scale``, fan-in = product of all but the first dimension, as for
        linear and convolutional weights), one-dimensional tensors (biases) get
        ``bias_std``.  Works for :class:`~bnn_mcmc.bnn.mlp.MLP` (via ``param_shapes``,
        also without internal weights) and for any ``nn.Module`` (``named_parameters``).
        """
        if hasattr(net, "param_shapes"):
            shapes = [tuple(s) for s in net.param_shapes]
        elif isinstance(net, nn.Module):
            shapes = [tuple(p.shape) for p in net.parameters()]
        else:
            raise TypeError(f"net must be an nn.Module, got {type(net).__name__}.")
        stds = [
            weight_scale / math.sqrt(math.prod(s[1:])) if len(s) > 1 else bias_std for s in shapes
        ]
        return cls(stds, shapes)

    def log_prob(self, w: Tensor) -> Tensor:
        self._check(w)
        std = self._std_vec.to(dtype=w.dtype, device=w.device)
        return -0.5 * (w / std).square().sum(-1) - self._log_norm

    def sample(self, generator, sample_shape=(), dim=None, dtype=None):
        d = self._sample_dim(dim)
        z = torch.randn(*sample_shape, d, generator=generator, dtype=dtype, device=generator.device)
        return z * self._std_vec.to(dtype=z.dtype, device=z.device)


class LaplacePrior(Prior):
    r"""Independent Laplace :math:`p(w_j) = \frac{1}{2b}\exp(-|w_j-\mu|/b)`.

    Parameters
    ----------
    scale : float
        :math:`b > 0`.
    loc : float
        :math:`\mu`.
    dim : int, optional
        Fix the length of the weight vector.
    """

    def __init__(self, scale: float = 1.0, loc: float = 0.0, dim: int | None = None) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}.")
        self.scale, self.loc, self.dim = float(scale), float(loc), dim

    def log_prob(self, w: Tensor) -> Tensor:
        self._check(w)
        const = w.shape[-1] * math.log(2.0 * self.scale)
        return -(w - self.loc).abs().sum(-1) / self.scale - const

    def sample(self, generator, sample_shape=(), dim=None, dtype=None):
        d = self._sample_dim(dim)
        u = (
            torch.rand(*sample_shape, d, generator=generator, dtype=dtype, device=generator.device)
            - 0.5
        )
        # inverse CDF: loc - b sign(u) log(1 - 2|u|)
        return self.loc - self.scale * torch.sign(u) * torch.log1p(-2.0 * u.abs())
