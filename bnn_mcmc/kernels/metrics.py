r"""Euclidean metrics (mass matrices) for Hamiltonian Monte Carlo.

The kinetic energy of a momentum :math:`p` under a mass matrix :math:`M` is

.. math:: K(p) = \tfrac12 p^\top M^{-1} p,

momenta are drawn from :math:`\mathcal N(0, M)` and the position moves with the
velocity :math:`\dot w = M^{-1} p`.  Every metric here is parameterised by the
*inverse* mass matrix :math:`M^{-1}` (the quantity that warmup estimates as the
posterior covariance), and works on any leading batch shape: a position of
shape ``(..., dim)`` gives kinetic energies of shape ``(...)``.

References
----------
Neal, R. M. (2011). MCMC using Hamiltonian dynamics. *Handbook of MCMC*, ch. 5.
Betancourt, M. (2017). A conceptual introduction to Hamiltonian Monte Carlo.
arXiv:1701.02434.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Metric:
    """Interface of a Euclidean metric; subclasses fix how :math:`M^{-1}` is stored.

    Subclasses implement :meth:`sample_momentum`, :meth:`velocity` and expose
    :attr:`inv_mass`.  Kinetic energy is derived from the velocity.
    """

    dim: int

    def sample_momentum(self, generator: torch.Generator, batch_shape: tuple = ()) -> Tensor:
        """Draw :math:`p \\sim \\mathcal N(0, M)` of shape ``batch_shape + (dim,)``."""
        raise NotImplementedError

    def velocity(self, momentum: Tensor) -> Tensor:
        """Return :math:`M^{-1} p` (same shape as ``momentum``)."""
        raise NotImplementedError

    def kinetic_energy(self, momentum: Tensor, velocity: Tensor | None = None) -> Tensor:
        """Return :math:`\\tfrac12 p^\\top M^{-1} p` summed over the last axis.

        ``velocity`` may be passed when :math:`M^{-1}p` is already known, to save work.
        The products are accumulated in float64, so the energy error
        :math:`K(p') - K(p_0)` of a large float32 chain is not lost in rounding.
        """
        if velocity is None:
            velocity = self.velocity(momentum)
        return 0.5 * (momentum.to(torch.float64) * velocity.to(torch.float64)).sum(-1)

    @property
    def inv_mass(self) -> Tensor | float:
        """The inverse mass matrix in its natural form (scalar, diagonal or dense)."""
        raise NotImplementedError

    def to(self, device: torch.device | str) -> Metric:
        """A copy of this metric on ``device``."""
        raise NotImplementedError


class ScalarMetric(Metric):
    """:math:`M^{-1} = c\\,I` for a positive scalar ``c``."""

    def __init__(self, inv_mass: float, dim: int, dtype: torch.dtype, device: torch.device):
        self.dim, self.dtype, self.device = dim, dtype, torch.device(device)
        self._c = float(inv_mass)
        self._sqrt_mass = self._c**-0.5

    def sample_momentum(self, generator, batch_shape=()):
        z = torch.randn(
            (*batch_shape, self.dim), generator=generator, dtype=self.dtype, device=self.device
        )
        return z * self._sqrt_mass

    def velocity(self, momentum):
        return momentum if self._c == 1.0 else momentum * self._c

    @property
    def inv_mass(self):
        return self._c

    def to(self, device):
        return ScalarMetric(self._c, self.dim, self.dtype, device)


class DiagMetric(Metric):
    """:math:`M^{-1} = \\operatorname{diag}(d)` with a positive vector ``d``."""

    def __init__(self, inv_mass_diag: Tensor):
        self._d = inv_mass_diag
        self.dim = inv_mass_diag.shape[-1]
        self.dtype, self.device = inv_mass_diag.dtype, inv_mass_diag.device
        self._sqrt_mass = inv_mass_diag.rsqrt()

    def sample_momentum(self, generator, batch_shape=()):
        z = torch.randn(
            (*batch_shape, self.dim), generator=generator, dtype=self.dtype, device=self.device
        )
        return z * self._sqrt_mass

    def velocity(self, momentum):
        return momentum * self._d

    @property
    def inv_mass(self):
        return self._d

    def to(self, device):
        return DiagMetric(self._d.to(device))


class DenseMetric(Metric):
    """A dense symmetric positive-definite :math:`M^{-1}`.

    With the Cholesky factor :math:`M^{-1} = L L^\\top`, a momentum
    :math:`p = L^{-\\top} z`, :math:`z \\sim \\mathcal N(0, I)`, has covariance
    :math:`L^{-\\top} L^{-1} = M`.
    """

    def __init__(self, inv_mass_matrix: Tensor, dtype: torch.dtype | None = None):
        dtype = inv_mass_matrix.dtype if dtype is None else dtype
        # factorise in float64 and cast the results: a float32 rounding of an estimate
        # with tiny eigenvalues need not be positive definite.
        chol, info = torch.linalg.cholesky_ex(inv_mass_matrix.to(torch.float64))
        if int(info) != 0:
            raise ValueError(
                "inv_mass: the dense inverse mass matrix is not positive definite; "
                "pass a symmetric positive-definite matrix (e.g. a covariance estimate)."
            )
        self._m = inv_mass_matrix.to(dtype)
        self.dim = inv_mass_matrix.shape[-1]
        self.dtype, self.device = dtype, inv_mass_matrix.device
        self._chol = chol.to(dtype)

    def sample_momentum(self, generator, batch_shape=()):
        z = torch.randn(
            (*batch_shape, self.dim, 1), generator=generator, dtype=self.dtype, device=self.device
        )
        p = torch.linalg.solve_triangular(self._chol.mT, z, upper=True)
        return p.squeeze(-1)

    def velocity(self, momentum):
        return momentum @ self._m  # symmetric, so p M^{-1} == (M^{-1} p)^T

    @property
    def inv_mass(self):
        return self._m

    def to(self, device):
        return DenseMetric(self._m.to(device))


def make_metric(
    inv_mass: float | Tensor | Metric, dim: int, dtype: torch.dtype, device: torch.device
) -> Metric:
    """Build a metric from a user's ``inv_mass`` and check it.

    Parameters
    ----------
    inv_mass
        A positive scalar (:math:`cI`), a positive 1-D tensor of length ``dim``
        (diagonal), a ``(dim, dim)`` symmetric positive-definite tensor (dense),
        a ready :class:`Metric` (e.g. a Kronecker-factored one), or any object with an
        ``as_metric()`` method returning one (e.g. a trained FishLeg optimiser).
    dim, dtype, device
        Those of the position the metric will be used with.

    Raises
    ------
    ValueError
        If the shape does not fit ``dim`` or the matrix is not positive (definite).
    TypeError
        If ``inv_mass`` is of another type.
    """
    if hasattr(inv_mass, "as_metric"):  # e.g. a trained FishLeg optimiser
        inv_mass = inv_mass.as_metric()
    if isinstance(inv_mass, Metric):
        if inv_mass.dim != dim:
            raise ValueError(f"inv_mass: metric has dim {inv_mass.dim}, position has {dim}.")
        return inv_mass
    if isinstance(inv_mass, bool) or not isinstance(inv_mass, (int, float, Tensor)):
        raise TypeError(
            "inv_mass must be a positive float, a 1-D tensor (diagonal), a 2-D tensor "
            f"(dense) or a Metric; got {type(inv_mass).__name__}."
        )
    if isinstance(inv_mass, Tensor) and inv_mass.ndim == 0:
        inv_mass = float(inv_mass)
    if not isinstance(inv_mass, Tensor):
        if not (inv_mass > 0 and inv_mass < float("inf")):
            raise ValueError(f"inv_mass must be positive and finite; got {inv_mass}.")
        return ScalarMetric(inv_mass, dim, dtype, device)
    inv_mass = inv_mass.detach().to(dtype=dtype, device=device)
    if inv_mass.ndim == 1:
        if inv_mass.shape[0] != dim:
            raise ValueError(
                f"inv_mass: diagonal has length {inv_mass.shape[0]}, expected {dim} "
                "(the length of the position)."
            )
        if not bool(torch.isfinite(inv_mass).all() and (inv_mass > 0).all()):
            raise ValueError("inv_mass: every diagonal entry must be positive and finite.")
        return DiagMetric(inv_mass)
    if inv_mass.ndim == 2:
        if inv_mass.shape != (dim, dim):
            raise ValueError(
                f"inv_mass: dense matrix has shape {tuple(inv_mass.shape)}, "
                f"expected ({dim}, {dim})."
            )
        if not torch.allclose(inv_mass, inv_mass.mT, rtol=1e-5, atol=1e-8):
            raise ValueError("inv_mass: the dense inverse mass matrix must be symmetric.")
        return DenseMetric(0.5 * (inv_mass + inv_mass.mT))
    raise ValueError(
        f"inv_mass: expected a scalar, 1-D or 2-D tensor; got {inv_mass.ndim} dimensions."
    )
