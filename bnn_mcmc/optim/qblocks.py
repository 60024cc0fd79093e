r"""Per-layer blocks of the FishLeg inverse-Fisher approximation :math:`Q(\lambda)`.

FishLeg approximates the inverse damped Fisher :math:`(F + \gamma I)^{-1}` by a
block-diagonal positive-definite matrix, one block per layer, each parameterised
by auxiliary parameters :math:`\lambda` that are learned (Garcia et al., 2023).
Every block here is written as :math:`Q = S S^\top` with an explicit square
factor :math:`S`, which keeps it positive semi-definite for any :math:`\lambda`
and lets a Hamiltonian Monte Carlo metric draw momenta and evaluate kinetic
energies through the factors (:mod:`bnn_mcmc.kernels.kron_metric`).

Kronecker block (``Linear``, ``Conv2d``)
    The weight is viewed as a matrix :math:`W \in \mathbb R^{m \times n}`
    (``m`` outputs; ``n`` inputs, times the kernel size for a convolution, plus
    one column for the bias).  With :math:`L \in \mathbb R^{m\times m}`,
    :math:`R \in \mathbb R^{n \times n}` and, when ``full``, two positive
    :math:`m \times n` arrays :math:`A` (outer) and :math:`D` (inner) rescalings,

    .. math:: S Z = A \odot \bigl(L\,(D \odot Z)\,R^\top\bigr), \qquad
              Q V = A \odot L\,\bigl(D^2 \odot (L^\top (A \odot V) R)\bigr)\,R^\top .

    Without ``full`` (:math:`A = D = 1`) this is :math:`Q = L L^\top \otimes R R^\top`
    on the row-major vectorisation of :math:`W`, i.e. :math:`QV = L L^\top V R R^\top`
    (the ":math:`RR^\top \otimes LL^\top`" of the paper in column-major order).  Its
    diagonal is :math:`\operatorname{diag}(Q)_{ij} = A_{ij}^2 \sum_{kl} L_{ik}^2
    D_{kl}^2 R_{jl}^2`, i.e. :math:`A^2 \odot (L^{\circ 2} D^{\circ 2} R^{\circ 2\top})`.
Diagonal block (``BatchNorm2d``, ``LayerNorm``, likelihood parameters)
    :math:`Q = \operatorname{diag}(d^2)` over all the module's parameters.

References
----------
Garcia, J. R., Yan, F., Lengyel, G., Hennequin, G. (2023). Fisher-Legendre (FishLeg)
optimization of deep neural networks. *ICLR 2023*.
Martens, J., Grosse, R. (2015). Optimizing neural networks with Kronecker-factored
approximate curvature. *ICML 2015* (the Kronecker structure, and its extension to
convolutions by Grosse & Martens, 2016).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..kernels.kron_metric import DiagonalFactor, KroneckerFactor


def _as_tuple(v: Sequence[Tensor], n: int, name: str) -> tuple[Tensor, ...]:
    v = tuple(v)
    if len(v) != n:
        raise ValueError(f"{name}: expected {n} tensors (one per parameter), got {len(v)}.")
    return v


class QBlock(nn.Module):
    """One block of :math:`Q(\\lambda)`, covering the parameters of one module.

    Attributes
    ----------
    params : list of Tensor
        The model parameters this block preconditions (not registered here, so
        :meth:`parameters` yields only the auxiliary parameters :math:`\\lambda`).
    """

    params: list[Tensor]

    def Qv(self, v: Sequence[Tensor]) -> tuple[Tensor, ...]:  # noqa: N802 (paper's name)
        """Return :math:`Q(\\lambda) v` for ``v`` shaped like :attr:`params`."""
        raise NotImplementedError

    def diagQ(self) -> tuple[Tensor, ...]:  # noqa: N802 (paper's name)
        """Return the diagonal of :math:`Q(\\lambda)`, shaped like :attr:`params`."""
        raise NotImplementedError

    def reset(self, scale: float) -> None:
        """Set :math:`Q = \\text{scale}\\cdot I`."""
        raise NotImplementedError

    def set_diagonal(self, diag: Sequence[Tensor]) -> None:
        """Set :math:`Q` to a diagonal matrix (as close as the structure allows)."""
        raise NotImplementedError

    @torch.no_grad()
    def rescale(self, factor: float) -> None:
        """Multiply :math:`Q` by ``factor > 0``."""
        for q in self._scaled():
            q.mul_(float(factor) ** 0.5)

    def _scaled(self) -> list[Tensor]:
        """The auxiliary parameters :math:`Q` is quadratic in (one per factor)."""
        raise NotImplementedError

    def factor(self, index: Sequence[Tensor]) -> KroneckerFactor | DiagonalFactor:
        """A detached copy of this block for a metric; ``index`` gives each parameter's
        positions in the flat weight vector (shaped like the parameter)."""
        raise NotImplementedError


class KroneckerQ(QBlock):
    """Kronecker-factored block for a weight (and optional bias) of a ``Linear``
    or ``Conv2d`` layer; see the module docstring for the maths.

    Parameters
    ----------
    weight
        The layer's weight, of shape ``(m, ...)``; flattened to ``(m, prod(...))``.
    bias
        The layer's bias of shape ``(m,)``, or ``None``.
    full
        Add the outer and inner diagonal rescalings :math:`A, D`.
    scale
        Initial :math:`Q = \\text{scale}\\cdot I`.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, full: bool, scale: float):
        super().__init__()
        self.params = [weight] if bias is None else [weight, bias]
        m = weight.shape[0]
        n = weight[0].numel() + (bias is not None)
        self.shape = (m, n)
        self.full = bool(full)
        kw = {"dtype": weight.dtype, "device": weight.device}
        self.L = nn.Parameter(torch.empty(m, m, **kw))
        self.R = nn.Parameter(torch.empty(n, n, **kw))
        # fixed starting factors: the learned L, R, A act in the coordinates they whiten
        self.register_buffer("L0", torch.empty(m, m, **kw))
        self.register_buffer("R0", torch.empty(n, n, **kw))
        if self.full:
            self.A = nn.Parameter(torch.empty(m, n, **kw))
            self.D = nn.Parameter(torch.empty(m, n, **kw))
            self.register_buffer("A0", torch.empty(m, n, **kw))
            self.register_buffer("D0", torch.empty(m, n, **kw))
        self.reset(scale)

    def factors(self) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        r"""The effective :math:`(L, R, A, D)` of the module docstring (``A, D`` are
        ``None`` without ``full``).

        They are :math:`L = L_0 L'`, :math:`R = R_0 R'`, :math:`A = A_0 \odot A'`,
        :math:`D = D_0 \\odot D'` with fixed starting factors :math:`L_0, R_0, A_0, D_0` (the
        warm start)
        and learned :math:`L', R', A', D'` (attributes ``L, R, A, D``, starting at the
        identity / ones).  So Adam's steps on the auxiliary parameters are relative to
        the start: an absolute step of ``aux_lr`` on a factor entry of size
        :math:`10^{-2}` would otherwise change :math:`Q` a hundredfold.
        """
        L, R = self.L0 @ self.L, self.R0 @ self.R
        if self.full:
            return L, R, self.A0 * self.A, self.D0 * self.D
        return L, R, None, None

    def _to_matrix(self, v: Sequence[Tensor]) -> Tensor:
        v = _as_tuple(v, len(self.params), "v")
        w = v[0].reshape(self.shape[0], -1)
        return w if len(v) == 1 else torch.cat([w, v[1].reshape(-1, 1)], dim=1)

    def _from_matrix(self, mat: Tensor) -> tuple[Tensor, ...]:
        if len(self.params) == 1:
            return (mat.reshape(self.params[0].shape),)
        return mat[:, :-1].reshape(self.params[0].shape), mat[:, -1].reshape(self.params[1].shape)

    def Qv(self, v):  # noqa: N802
        V = self._to_matrix(v)
        L, R, A, D = self.factors()
        if self.full:
            inner = D**2 * (L.mT @ (A * V) @ R)
            return self._from_matrix(A * (L @ inner @ R.mT))
        return self._from_matrix(L @ (L.mT @ V @ R) @ R.mT)

    def diagQ(self):  # noqa: N802
        L, R, A, D = self.factors()
        if self.full:
            return self._from_matrix(A**2 * (L**2 @ D**2 @ (R**2).mT))
        return self._from_matrix(torch.outer((L**2).sum(1), (R**2).sum(1)))

    @torch.no_grad()
    def _restart(self) -> None:
        """Learned factors back to the identity / ones."""
        self.L.copy_(torch.eye(self.shape[0]))
        self.R.copy_(torch.eye(self.shape[1]))
        if self.full:
            self.A.fill_(1.0)
            self.D.fill_(1.0)
            self.A0.fill_(1.0)
            self.D0.fill_(1.0)

    @torch.no_grad()
    def reset(self, scale):
        self._restart()
        self.L0.copy_(torch.eye(self.shape[0]) * float(scale) ** 0.5)
        self.R0.copy_(torch.eye(self.shape[1]))

    @torch.no_grad()
    def set_diagonal(self, diag):
        r"""Exact with ``full`` (:math:`A_0^2 = \text{diag}`, :math:`L_0=R_0=I`); otherwise
        the best rank-one fit :math:`a b^\top` of the diagonal (Perron vectors of its SVD)
        gives :math:`L_0 = \operatorname{diag}(\sqrt a)` and
        :math:`R_0 = \operatorname{diag}(\sqrt b)`.
        """
        target = self._to_matrix(diag)
        self.reset(1.0)
        if self.full:
            self.A0.copy_(target.sqrt())
            return
        u, s, vh = torch.linalg.svd(target, full_matrices=False)
        self.L0.copy_(torch.diag((u[:, 0].abs() * s[0]).sqrt()))
        self.R0.copy_(torch.diag(vh[0].abs().sqrt()))

    def _scaled(self):
        return [self.L0]

    @torch.no_grad()
    def set_kronecker(self, L: Tensor, R: Tensor) -> None:  # noqa: N803 (the maths' names)
        """Set :math:`Q = LL^\\top \\otimes RR^\\top` (:math:`L_0 = L`, :math:`R_0 = R`, the
        rest at the identity / ones), e.g. a K-FAC inverse (:mod:`bnn_mcmc.optim.kfac_start`)."""
        if L.shape != self.L.shape or R.shape != self.R.shape:
            raise ValueError(
                f"L, R: expected shapes {tuple(self.L.shape)} and "
                f"{tuple(self.R.shape)}, got {tuple(L.shape)} and {tuple(R.shape)}."
            )
        self._restart()
        self.L0.copy_(L)
        self.R0.copy_(R)

    @torch.no_grad()
    def factor(self, index):
        idx = self._to_matrix(index)
        L, R, A, D = self.factors()
        if self.full:
            return KroneckerFactor(idx, L, R, A, D)
        return KroneckerFactor(idx, L, R)


class DiagonalQ(QBlock):
    """Diagonal block :math:`Q = \\operatorname{diag}(d^2)` over a list of parameters
    (the affine parameters of ``BatchNorm2d`` / ``LayerNorm``, or a likelihood's).

    Parameters
    ----------
    params
        The parameters covered, in order.
    scale
        Initial :math:`Q = \\text{scale}\\cdot I`.
    """

    def __init__(self, params: Sequence[Tensor], scale: float):
        super().__init__()
        self.params = list(params)
        if not self.params:
            raise ValueError("params: a diagonal block needs at least one parameter.")
        self.d = nn.ParameterList([nn.Parameter(torch.empty_like(p)) for p in self.params])
        for k, p in enumerate(self.params):  # fixed start d0; learned d relative to it
            self.register_buffer(f"d0_{k}", torch.empty_like(p))
        self.reset(scale)

    def scales(self) -> tuple[Tensor, ...]:
        """The effective :math:`d = d_0 \\odot d'` (fixed start times learned factor)."""
        return tuple(getattr(self, f"d0_{k}") * d for k, d in enumerate(self.d))

    def Qv(self, v):  # noqa: N802
        v = _as_tuple(v, len(self.params), "v")
        return tuple(d**2 * x for d, x in zip(self.scales(), v, strict=True))

    def diagQ(self):  # noqa: N802
        return tuple(d**2 for d in self.scales())

    @torch.no_grad()
    def reset(self, scale):
        for k, d in enumerate(self.d):
            d.fill_(1.0)
            getattr(self, f"d0_{k}").fill_(float(scale) ** 0.5)

    @torch.no_grad()
    def set_diagonal(self, diag):
        for k, (d, x) in enumerate(
            zip(self.d, _as_tuple(diag, len(self.params), "diag"), strict=True)
        ):
            d.fill_(1.0)
            getattr(self, f"d0_{k}").copy_(x.sqrt())

    def _scaled(self):
        return [getattr(self, f"d0_{k}") for k in range(len(self.params))]

    @torch.no_grad()
    def factor(self, index):
        index = _as_tuple(index, len(self.params), "index")
        return DiagonalFactor(
            torch.cat([i.reshape(-1) for i in index]),
            torch.cat([d.reshape(-1) ** 2 for d in self.scales()]),
        )


def make_qblock(module: nn.Module, full: bool, scale: float) -> QBlock | None:
    """The :class:`QBlock` for a supported module, or ``None`` if it has no trainable
    parameters of its own or its type is not supported.

    Supported: ``nn.Linear`` and ``nn.Conv2d`` (Kronecker), ``nn.BatchNorm2d`` and
    ``nn.LayerNorm`` with affine parameters (diagonal).
    """
    own = [p for p in module.parameters(recurse=False) if p.requires_grad]
    if not own:
        return None
    if isinstance(module, (nn.Linear, nn.Conv2d)) and module.weight.requires_grad:
        bias = module.bias if module.bias is not None and module.bias.requires_grad else None
        return KroneckerQ(module.weight, bias, full, scale)
    if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
        return DiagonalQ(own, scale)
    return None


def shape_qblocks(module: nn.Module, full: bool, scale: float) -> list[tuple[str, QBlock]]:
    """Blocks for the parameters a module holds directly when it is not a supported layer
    type (e.g. the ``ParameterList`` of :class:`bnn_mcmc.bnn.MLP`), found from the shapes.

    Walking the module's own parameters in order, a matrix ``(m, n)`` followed by a vector
    ``(m,)`` is the weight and bias of one dense layer (a Kronecker block), a matrix alone a
    weight without bias, and anything else gets a diagonal block.  Returns
    ``(parameter name, block)`` pairs, the name being the weight's.
    """
    own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]
    out: list[tuple[str, QBlock]] = []
    i = 0
    while i < len(own):
        name, p = own[i]
        if p.dim() == 2:
            nxt = own[i + 1][1] if i + 1 < len(own) else None
            if nxt is not None and nxt.dim() == 1 and nxt.shape[0] == p.shape[0]:
                out.append((name, KroneckerQ(p, nxt, full, scale)))
                i += 2
                continue
            out.append((name, KroneckerQ(p, None, full, scale)))
        else:
            out.append((name, DiagonalQ([p], scale)))
        i += 1
    return out
