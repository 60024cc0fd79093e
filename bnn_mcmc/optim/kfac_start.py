r"""Kronecker (K-FAC) statistics of dense and convolutional layers, found by their weights.

A layer :math:`s = W a` (bias folded in as a trailing 1 of :math:`a`) has Fisher block
:math:`F = \mathbb E[a a^\top \otimes g g^\top]` with :math:`g = \partial \ell / \partial s`
at targets drawn from the model.  K-FAC (Martens & Grosse, 2015) approximates it by
:math:`\bar A \otimes G` with :math:`\bar A = \mathbb E[a a^\top]`,
:math:`G = \mathbb E[g g^\top]`; for convolutions :math:`a` is a patch of the input
(``unfold``) and every spatial position is one row (Grosse & Martens, 2016).

The layers are found without knowing how the network is written: a
:class:`torch.overrides.TorchFunctionMode` sees every ``linear`` / ``conv2d`` call, and
a call whose weight (and bias) *is* a parameter of a Kronecker block is recorded.  So
``nn.Linear`` / ``nn.Conv2d`` modules in any container and functional networks holding
raw parameters (e.g. :class:`bnn_mcmc.bnn.MLP`) are treated alike.

References
----------
Martens, J., Grosse, R. (2015). Optimizing neural networks with Kronecker-factored
approximate curvature. *ICML 2015*.
Grosse, R., Martens, J. (2016). A Kronecker-factored approximate Fisher matrix for
convolution layers. *ICML 2016*.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode


@dataclass
class LayerCall:
    """One recorded call of a layer: its input rows :math:`a` and its output tensor."""

    block: int
    rows: Tensor
    output: Tensor
    conv: bool


@dataclass
class KronStats:
    """Unnormalised Kronecker statistics of one block: :math:`\\sum a a^\\top` (inputs,
    bias column included) and :math:`\\sum g g^\\top` (outputs)."""

    inputs: Tensor
    outputs: Tensor


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class _Recorder(TorchFunctionMode):
    """Records ``linear`` / ``conv2d`` calls whose weight and bias belong to a block."""

    def __init__(self, layers: Sequence[tuple[Tensor, Tensor | None]]):
        super().__init__()
        self.index = {id(w): (i, b) for i, (w, b) in enumerate(layers)}
        self.calls: list[LayerCall] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name not in ("linear", "conv2d") or len(args) < 2:
            return out
        hit = self.index.get(id(args[1]))
        if hit is None:
            return out
        i, bias = hit
        given = args[2] if len(args) > 2 else kwargs.get("bias")
        if (given is None) != (bias is None) or (bias is not None and given is not bias):
            return out  # the weight with another bias: not this block's layer
        x = args[0].detach()
        if name == "linear":
            rows = x.reshape(-1, x.shape[-1])
            conv = False
        else:
            stride, padding, dilation, groups = list(args[3:7]) + [1, 0, 1, 1][len(args[3:7]) :]
            stride = kwargs.get("stride", stride)
            padding = kwargs.get("padding", padding)
            dilation = kwargs.get("dilation", dilation)
            groups = kwargs.get("groups", groups)
            if groups != 1 or isinstance(padding, str) or x.dim() != 4:
                return out  # grouped / string padding: left to the diagonal start
            k = args[1].shape[-2:]
            cols = F.unfold(
                x, k, dilation=_pair(dilation), padding=_pair(padding), stride=_pair(stride)
            )
            rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
            conv = True
        if bias is not None:
            rows = torch.cat([rows, torch.ones_like(rows[:, :1])], 1)
        self.calls.append(LayerCall(i, rows, out, conv))
        return out


@torch.enable_grad()
def kronecker_statistics(
    layers: Sequence[tuple[Tensor, Tensor | None]],
    nll: Callable[[tuple[Tensor, Tensor]], Tensor],
    draw: Callable[[Tensor], Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
) -> list[KronStats | None]:
    r"""Sum :math:`a a^\top` and :math:`g g^\top` of each ``(weight, bias)`` layer over
    ``batches``, :math:`g` the gradient of ``nll`` at targets ``draw(x)`` with respect to
    the layer's output.  ``None`` for a layer never seen (its block keeps another start).
    """
    sums: list[KronStats | None] = [None] * len(layers)
    for x, _ in batches:
        with torch.no_grad():
            y_tilde = draw(x)
        rec = _Recorder(layers)
        with rec:
            loss = nll((x, y_tilde))
        if not rec.calls:
            continue
        grads = torch.autograd.grad(loss, [c.output for c in rec.calls], allow_unused=True)
        for c, g in zip(rec.calls, grads, strict=True):
            if g is None:
                continue
            g = g.detach()
            g = g.movedim(1, -1).reshape(-1, g.shape[1]) if c.conv else g.reshape(-1, g.shape[-1])
            aa, gg = c.rows.mT @ c.rows, g.mT @ g
            s = sums[c.block]
            sums[c.block] = (
                KronStats(aa, gg) if s is None else KronStats(s.inputs + aa, s.outputs + gg)
            )
    return sums


def damped_inverse_factors(stats: KronStats, trace: float, damping: float) -> tuple[Tensor, Tensor]:
    r"""Cholesky factors :math:`L, R` with :math:`LL^\top \otimes RR^\top \approx
    (F + \gamma I)^{-1}` for one block.

    The scale of :math:`\bar A \otimes G` is set so that its trace equals ``trace`` (an
    unbiased estimate of :math:`\operatorname{tr} F` over the block, from exact curvature
    products), which makes the result independent of how the loss is normalised; the
    damping is split between the factors as in K-FAC's factored Tikhonov damping,
    :math:`(G + \tfrac{\sqrt\gamma}{\pi} I) \otimes (\bar A + \pi\sqrt\gamma I)` with
    :math:`\pi^2 = (\operatorname{tr}\bar A / n) / (\operatorname{tr} G / m)`.
    """
    A, G = stats.inputs, stats.outputs
    n, m = A.shape[0], G.shape[0]
    tr_a, tr_g = float(A.trace()), float(G.trace())
    if not (tr_a > 0 and tr_g > 0 and trace > 0):
        raise ValueError("degenerate layer statistics")
    c = (trace / (tr_a * tr_g)) ** 0.5
    A, G = c * A, c * G
    pi = ((c * tr_a / n) / (c * tr_g / m)) ** 0.5
    root = damping**0.5
    eye_a = torch.eye(n, dtype=A.dtype, device=A.device)
    eye_g = torch.eye(m, dtype=G.dtype, device=G.device)
    inv_a = torch.linalg.inv(A + pi * root * eye_a)
    inv_g = torch.linalg.inv(G + root / pi * eye_g)
    R = torch.linalg.cholesky(0.5 * (inv_a + inv_a.mT))
    L = torch.linalg.cholesky(0.5 * (inv_g + inv_g.mT))
    return L, R
