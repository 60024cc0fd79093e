r"""A block-diagonal, Kronecker-factored Euclidean metric for HMC/NUTS.

The inverse mass matrix is block diagonal over groups of coordinates of the flat
position: Kronecker blocks :math:`M^{-1}_b = S_b S_b^\top` with

.. math:: S_b Z = A \odot \bigl(L\,(D \odot Z)\,R^\top\bigr)

acting on the coordinates of block :math:`b` arranged as an :math:`m \times n`
matrix :math:`Z` (:math:`L \in \mathbb R^{m\times m}`, :math:`R \in \mathbb R^{n\times n}`,
:math:`A, D` positive :math:`m \times n` arrays, all ones when absent, in which case
:math:`M_b^{-1} = LL^\top \otimes RR^\top`), diagonal blocks, and a diagonal for
every coordinate no block covers.  This is the structure of a trained FishLeg
:math:`Q(\lambda) \approx (F + \gamma I)^{-1}` (:mod:`bnn_mcmc.optim.qblocks`).

Everything goes through the factors, never a dense matrix:

* velocity :math:`M^{-1}p = S (S^\top p)` with
  :math:`S^\top P = D \odot (L^\top (A \odot P) R)` — :math:`O(mn(m+n))` per block;
* momentum :math:`p = S^{-\top} z \sim \mathcal N(0, (SS^\top)^{-1}) = \mathcal N(0, M)`,
  :math:`z \sim \mathcal N(0, I)`, with
  :math:`S^{-\top} Z = A^{-1} \odot \bigl(L^{-\top} (D^{-1} \odot Z) R^{-1}\bigr)`;
  the small inverses :math:`L^{-1}, R^{-1}` are computed once;
* kinetic energy :math:`\tfrac12 p^\top M^{-1} p` from the velocity (:class:`Metric`).

The metric is fixed: it must not be adapted during sampling, or detailed balance
is lost; step-size adaptation during warmup is unaffected.

References
----------
Martens, J., Grosse, R. (2015). Optimizing neural networks with Kronecker-factored
approximate curvature. *ICML 2015*.
Garcia, J. R., Yan, F., Lengyel, G., Hennequin, G. (2023). Fisher-Legendre (FishLeg)
optimization of deep neural networks. *ICLR 2023*.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .metrics import Metric


def _check_positive(x: Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all() and (x > 0).all()):
        raise ValueError(f"{name}: every entry must be positive and finite.")


class KroneckerFactor:
    """One Kronecker block :math:`M_b^{-1} = S S^\\top` of a :class:`KroneckerMetric`.

    Parameters
    ----------
    index
        Integer tensor of shape ``(m, n)``: the flat position of each entry of the block.
    left, right
        Invertible :math:`L` (``m x m``) and :math:`R` (``n x n``).
    outer, inner
        Optional positive ``(m, n)`` rescalings :math:`A` and :math:`D` (both or neither).
    """

    def __init__(self, index: Tensor, left: Tensor, right: Tensor,
                 outer: Tensor | None = None, inner: Tensor | None = None):
        if index.ndim != 2:
            raise ValueError(f"index: expected an (m, n) integer tensor, got shape "
                             f"{tuple(index.shape)}.")
        m, n = index.shape
        if left.shape != (m, m) or right.shape != (n, n):
            raise ValueError(f"left/right: expected shapes ({m}, {m}) and ({n}, {n}) to match "
                             f"index {tuple(index.shape)}; got {tuple(left.shape)} and "
                             f"{tuple(right.shape)}.")
        if (outer is None) != (inner is None):
            raise ValueError("outer, inner: pass both rescalings or neither.")
        if outer is not None:
            if outer.shape != (m, n) or inner.shape != (m, n):
                raise ValueError(f"outer/inner: expected shape ({m}, {n}).")
            _check_positive(outer.abs(), "outer")
            _check_positive(inner.abs(), "inner")
        self.index, self.left, self.right = index.long(), left, right
        self.outer, self.inner = outer, inner
        try:
            self._left_inv = torch.linalg.inv(left)
            self._right_inv = torch.linalg.inv(right)
        except RuntimeError as err:
            raise ValueError("left/right: the Kronecker factors must be invertible "
                             "(Q must be positive definite).") from err
        if not bool(torch.isfinite(self._left_inv).all() and torch.isfinite(self._right_inv).all()):
            raise ValueError("left/right: the Kronecker factors must be invertible.")

    @property
    def flat_index(self) -> Tensor:
        return self.index.reshape(-1)

    def _mat(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-1], *self.index.shape)

    def velocity(self, p: Tensor) -> Tensor:
        """:math:`S S^\\top p` for ``p`` of shape ``(..., m*n)`` (row-major block entries)."""
        P = self._mat(p)
        if self.outer is None:
            out = self.left @ (self.left.mT @ P @ self.right) @ self.right.mT
        else:
            inner = self.inner**2 * (self.left.mT @ (self.outer * P) @ self.right)
            out = self.outer * (self.left @ inner @ self.right.mT)
        return out.reshape(p.shape)

    def momentum(self, z: Tensor) -> Tensor:
        """:math:`S^{-\\top} z`, which is :math:`\\mathcal N(0, M_b)` for standard normal ``z``."""
        Z = self._mat(z)
        if self.outer is not None:
            Z = Z / self.inner
        out = self._left_inv.mT @ Z @ self._right_inv
        if self.outer is not None:
            out = out / self.outer
        return out.reshape(z.shape)

    def diagonal(self) -> Tensor:
        """The diagonal of :math:`M_b^{-1}`, flat."""
        if self.outer is None:
            return torch.outer((self.left**2).sum(1), (self.right**2).sum(1)).reshape(-1)
        return (self.outer**2 * (self.left**2 @ self.inner**2 @ (self.right**2).mT)).reshape(-1)

    def dense(self) -> Tensor:
        """:math:`M_b^{-1}` as a dense matrix (tests and small problems only)."""
        S = torch.kron(self.left, self.right)
        if self.outer is not None:
            S = self.outer.reshape(-1, 1) * S * self.inner.reshape(1, -1)
        return S @ S.mT

    def to(self, device: torch.device | str) -> KroneckerFactor:
        opt = (None, None) if self.outer is None else (self.outer.to(device), self.inner.to(device))
        return KroneckerFactor(self.index.to(device), self.left.to(device),
                               self.right.to(device), *opt)


class DiagonalFactor:
    """A diagonal block: inverse masses ``values`` at flat positions ``index`` (1-D)."""

    def __init__(self, index: Tensor, values: Tensor):
        if index.ndim != 1 or values.shape != index.shape:
            raise ValueError("index, values: expected two 1-D tensors of the same length.")
        _check_positive(values, "values")
        self.index, self.values = index.long(), values

    @property
    def flat_index(self) -> Tensor:
        return self.index

    def velocity(self, p: Tensor) -> Tensor:
        return p * self.values

    def momentum(self, z: Tensor) -> Tensor:
        return z * self.values.rsqrt()

    def diagonal(self) -> Tensor:
        return self.values

    def dense(self) -> Tensor:
        return torch.diag(self.values)

    def to(self, device: torch.device | str) -> DiagonalFactor:
        return DiagonalFactor(self.index.to(device), self.values.to(device))


class KroneckerMetric(Metric):
    """Block-diagonal inverse mass matrix built from Kronecker and diagonal factors.

    Parameters
    ----------
    dim
        Length of the flat position.
    factors
        :class:`KroneckerFactor` / :class:`DiagonalFactor` blocks on disjoint coordinates.
    base_inv_mass
        Inverse mass of the coordinates no factor covers: a positive float, or a
        positive 1-D tensor of length ``dim`` (its entries under a factor are unused).
    dtype, device
        Those of the position (default: those of the first factor).

    Notes
    -----
    :attr:`inv_mass` is the *diagonal* of :math:`M^{-1}` (the matrix itself is never
    formed); :meth:`to_dense` builds it for checks on small problems.
    """

    def __init__(self, dim: int, factors: Sequence[KroneckerFactor | DiagonalFactor],
                 base_inv_mass: float | Tensor = 1.0, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int; got {dim!r}.")
        self.factors = list(factors)
        ref = self.factors[0].index if self.factors else None
        self.dtype = dtype if dtype is not None else (
            self.factors[0].diagonal().dtype if self.factors else torch.get_default_dtype())
        self.device = torch.device(device) if device is not None else (
            ref.device if ref is not None else torch.device("cpu"))
        self.dim = dim
        base = torch.as_tensor(base_inv_mass, dtype=self.dtype, device=self.device)
        if base.ndim == 0:
            base = base.expand(dim).clone()
        if base.shape != (dim,):
            raise ValueError(f"base_inv_mass: expected a float or a length-{dim} tensor; "
                             f"got shape {tuple(base.shape)}.")
        _check_positive(base, "base_inv_mass")
        self._base = base
        covered = torch.zeros(dim, dtype=torch.long, device=self.device)
        for f in self.factors:
            idx = f.flat_index.to(self.device)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= dim):
                raise ValueError(f"factors: an index lies outside [0, {dim}).")
            covered.index_add_(0, idx, torch.ones_like(idx))
        if bool((covered > 1).any()):
            raise ValueError("factors: blocks must cover disjoint coordinates.")

    def velocity(self, momentum: Tensor) -> Tensor:
        if momentum.dtype != self.dtype:
            raise TypeError(f"momentum has dtype {momentum.dtype} but the metric {self.dtype}; "
                            "build the metric in the position's dtype (e.g. train FishLeg on "
                            "net.double() for a float64 position).")
        out = momentum * self._base
        for f in self.factors:
            idx = f.flat_index
            out = out.index_copy(-1, idx, f.velocity(momentum[..., idx]))
        return out

    def sample_momentum(self, generator: torch.Generator, batch_shape: tuple = ()) -> Tensor:
        z = torch.randn((*batch_shape, self.dim), generator=generator, dtype=self.dtype,
                        device=self.device)
        out = z * self._base.rsqrt()
        for f in self.factors:
            idx = f.flat_index
            out = out.index_copy(-1, idx, f.momentum(z[..., idx]))
        return out

    @property
    def inv_mass(self) -> Tensor:
        d = self._base.clone()
        for f in self.factors:
            d[f.flat_index] = f.diagonal()
        return d

    def to_dense(self) -> Tensor:
        """:math:`M^{-1}` as a dense ``(dim, dim)`` matrix (for checks on small problems)."""
        m = torch.diag(self._base)
        for f in self.factors:
            idx = f.flat_index
            m[idx.unsqueeze(1), idx.unsqueeze(0)] = f.dense()
        return m

    def to(self, device: torch.device | str) -> KroneckerMetric:
        return KroneckerMetric(self.dim, [f.to(device) for f in self.factors],
                               self._base.to(device), self.dtype, device)
