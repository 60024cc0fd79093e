r"""Target variances for hyperfan initialisation (Chang, Sacramento & Grewe, 2020).

A main-network layer :math:`y = W x + b` with :math:`W \in \mathbb{R}^{m_{out} \times m_{in}}`
(convolution kernels: fans multiplied by the receptive field) keeps the scale of its
activations (*fan-in*) or of its back-propagated gradients (*fan-out*) when

.. math::

    \mathrm{Var}(W)_{in} = \frac{c}{c_b\, m_{in}}, \qquad
    \mathrm{Var}(b)_{in} = \frac{c}{2}, \qquad
    \mathrm{Var}(W)_{out} = \frac{c}{m_{out}}, \qquad
    \mathrm{Var}(b)_{out} = c\,\max\Big(0,\ 1 - \frac{m_{in}}{m_{out}}\Big),

with :math:`c = 2` for Kaiming (ReLU main network) or :math:`c = 1` for Xavier, and
:math:`c_b = 2` if the layer has a bias (input and bias then contribute half the
variance each) else :math:`c_b = 1`.  ``'harmonic'`` uses the harmonic mean of the two,

.. math::

    \mathrm{Var}_{harm} = \frac{2\,\mathrm{Var}_{in}\mathrm{Var}_{out}}
                               {\mathrm{Var}_{in} + \mathrm{Var}_{out}}

(zero if either is zero); for a square layer without bias all three coincide.

A hypernetwork output head :math:`w = H h + \beta` with zero-mean :math:`H`,
:math:`\beta = 0` and last hidden layer :math:`h \in \mathbb{R}^{d_k}` gives
:math:`\mathrm{Var}(w) = d_k\,\mathrm{Var}(H)\,E[h_j^2]`, so the head is initialised with
:math:`\mathrm{Var}(H) = \mathrm{Var}_{target} / (d_k E[h_j^2])`.  Hidden layers
initialised with :math:`\mathrm{Var}(W_l) = g^2 / n_{l-1}` and zero biases, where
:math:`g^2` is the activation's gain (:func:`activation_gain2`), preserve the second moment
exactly in expectation for ReLU, leaky ReLU and linear activations, so
:math:`E[h_j^2]` equals the mean input variance

.. math::

    \bar v = \frac{n_e \mathrm{Var}(e) + n_z \mathrm{Var}(z)}{n_e + n_z}.

For a saturating activation (tanh) the gain is exact only for small pre-activations: with
unit input variance a tanh layer keeps about half of the second moment, and a head
initialised for :math:`E[h^2] = \bar v` gives half the target variance.  There
:func:`propagate_second_moment` follows the second moment through the layers instead,
treating each pre-activation as Gaussian (central limit over the fan-in),
:math:`m_l = E[\phi(a)^2]`, :math:`a \sim \mathcal N(0, g^2 m_{l-1})`, by Gauss-Hermite
quadrature.

References
----------
Chang, O., Flokas, L. & Lipson, H. (2020). Principled weight initialization for
hypernetworks. ICLR.
He, K. et al. (2015). Delving deep into rectifiers. ICCV.
Glorot, X. & Bengio, Y. (2010). Understanding the difficulty of training deep
feedforward neural networks. AISTATS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .formats import numel

#: Default output distributions (head weight mean/var, head bias mean/var) of tensors that
#: are neither weights nor biases: batch-norm / context-mod scales start at 1, shifts at
#: 0, embeddings are standard normal.
OTHER_DEFAULTS = {
    "bn_scale": (0.0, 0.0, 1.0, 0.0),
    "bn_shift": (0.0, 0.0, 0.0, 0.0),
    "cm_scale": (0.0, 0.0, 1.0, 0.0),
    "cm_shift": (0.0, 0.0, 0.0, 0.0),
    "embedding": (0.0, 0.0, 0.0, 1.0),
}

METHODS = ("in", "out", "harmonic")


def fan_in_out(shape: Sequence[int]) -> tuple[int, int]:
    """Fan-in and fan-out of a weight of shape ``(out, in, *kernel)`` (torch convention)."""
    if len(shape) < 2:
        raise ValueError(f"a weight tensor needs at least 2 dimensions, got shape {shape}")
    receptive = numel(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def harmonic_mean(a: float, b: float) -> float:
    r"""Harmonic mean :math:`2ab/(a+b)` of two non-negative numbers (0 if either is 0)."""
    if a <= 0.0 or b <= 0.0:
        return 0.0
    return 2.0 * a * b / (a + b)


def activation_gain2(activation_fn) -> float:
    r"""Squared gain :math:`g^2` with :math:`E[\phi(a)^2] = E[a^2]/g^2` for symmetric
    :math:`a`: 2 for ReLU, :math:`2/(1+s^2)` for leaky ReLU with slope :math:`s`, 1 for a
    linear layer (``None`` or :class:`torch.nn.Identity`), and :math:`(5/3)^2` for tanh
    (approximate, exact only for small pre-activations).

    Raises
    ------
    ValueError
        For other activations, whose second-moment propagation is not known here.
    """
    if activation_fn is None or isinstance(activation_fn, nn.Identity):
        return 1.0
    if isinstance(activation_fn, nn.ReLU) or activation_fn is torch.relu:
        return 2.0
    if isinstance(activation_fn, nn.LeakyReLU):
        return 2.0 / (1.0 + activation_fn.negative_slope**2)
    if isinstance(activation_fn, nn.Tanh) or activation_fn is torch.tanh:
        return nn.init.calculate_gain("tanh") ** 2
    raise ValueError(
        f"hyperfan init supports activation_fn ReLU, LeakyReLU, Tanh, Identity or None; "
        f"got {activation_fn!r}. Initialise the network yourself for other activations."
    )


def _gauss_expectation(fn, var: float, num_nodes: int = 80) -> float:
    r""":math:`E[fn(a)]` for :math:`a \sim \mathcal N(0, var)` by Gauss-Hermite quadrature."""
    x, w = np.polynomial.hermite_e.hermegauss(num_nodes)
    a = torch.as_tensor(math.sqrt(max(var, 0.0)) * x, dtype=torch.float64)
    vals = fn(a).double().numpy()
    return float((w * vals).sum() / math.sqrt(2.0 * math.pi))


def _preserves_second_moment(activation_fn) -> bool:
    return (
        activation_fn is None
        or isinstance(activation_fn, (nn.Identity, nn.ReLU, nn.LeakyReLU))
        or activation_fn is torch.relu
    )


def propagate_second_moment(
    activation_fn, input_m2: float, num_layers: int, batch_norm: bool = False
) -> float:
    r"""Second moment :math:`E[h^2]` after ``num_layers`` hidden layers initialised with
    variance :math:`g^2/n_{in}` and zero biases (see the module docstring).

    Parameters
    ----------
    activation_fn : callable or None
        The hidden activation (see :func:`activation_gain2`).
    input_m2 : float
        Mean second moment of the network's input.
    num_layers : int
        Number of hidden layers (0 returns ``input_m2``).
    batch_norm : bool
        Hidden pre-activations standardised (training-mode batch norm): every layer then
        sees :math:`a \sim \mathcal N(0, 1)`.
    """
    if num_layers == 0:
        return input_m2
    gain2 = activation_gain2(activation_fn)
    if _preserves_second_moment(activation_fn):
        return 1.0 / gain2 if batch_norm else input_m2
    fn = activation_fn if callable(activation_fn) else torch.tanh
    m2 = input_m2
    for _ in range(num_layers):
        m2 = _gauss_expectation(lambda a: fn(a).square(), 1.0 if batch_norm else gain2 * m2)
    return m2


def infer_meta(target_shapes: list, mnet=None) -> list[dict]:
    """Per target tensor: ``{'name': 'weight'|'bias'|..., 'layer': int}``.

    With ``mnet`` exposing ``param_shapes_meta`` (and ``param_shapes`` equal to
    ``target_shapes``) its metadata is used.  Otherwise tensors with two or more
    dimensions are weights of consecutive layers and a 1-D tensor is the bias of the
    weight directly before it (``layer = -1`` if there is none).
    """
    if mnet is not None:
        meta = getattr(mnet, "param_shapes_meta", None)
        shapes = getattr(mnet, "param_shapes", None)
        if meta is None or shapes is None:
            raise ValueError("mnet must expose param_shapes and param_shapes_meta")
        if [list(s) for s in shapes] != [list(s) for s in target_shapes]:
            raise ValueError(
                "mnet.param_shapes must equal the hypernetwork's target_shapes"
            )
        return [{"name": m["name"], "layer": int(m.get("layer", -1))} for m in meta]
    meta: list[dict] = []
    layer = 0
    for shape in target_shapes:
        if len(shape) >= 2:
            meta.append({"name": "weight", "layer": layer})
            layer += 1
        elif meta and meta[-1]["name"] == "weight":
            meta.append({"name": "bias", "layer": meta[-1]["layer"]})
        else:
            meta.append({"name": "bias", "layer": -1})
    return meta


def target_variances(target_shapes: list, meta: list[dict], method: str,
                     use_xavier: bool) -> list[float | None]:
    """Main-network target variance of each weight/bias tensor (``None`` for others).

    A bias whose layer weight is unknown (``layer = -1``) uses its own length as fan-in.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    c = 1.0 if use_xavier else 2.0
    layer_weight = {m["layer"]: s for s, m in zip(target_shapes, meta)
                    if m["name"] == "weight" and m["layer"] != -1}
    layer_bias = {m["layer"] for m in meta if m["name"] == "bias" and m["layer"] != -1}
    out: list[float | None] = []
    for shape, m in zip(target_shapes, meta):
        if m["name"] == "weight":
            fin, fout = fan_in_out(shape)
            c_b = 2.0 if m["layer"] in layer_bias else 1.0
            v_in, v_out = c / (c_b * fin), c / fout
        elif m["name"] == "bias":
            fout = shape[0]
            fin = fan_in_out(layer_weight[m["layer"]])[0] if m["layer"] in layer_weight else fout
            v_in, v_out = c / 2.0, c * max(0.0, 1.0 - fin / fout)
        else:
            out.append(None)
            continue
        out.append({"in": v_in, "out": v_out, "harmonic": harmonic_mean(v_in, v_out)}[method])
    return out


def mean_input_variance(sizes_and_vars: Sequence[tuple[int, float]]) -> float:
    r"""Size-weighted mean :math:`\sum_i n_i v_i / \sum_i n_i` of input variances."""
    total = sum(n for n, _ in sizes_and_vars)
    if total == 0:
        raise ValueError("the hypernetwork has no input")
    return sum(n * v for n, v in sizes_and_vars) / total


def chunk_variances(target_shapes: list, tensor_vars: Sequence[float],
                    chunk_size: int) -> list[float]:
    r"""Target variance of each chunk of the flattened outputs.

    A chunk covering :math:`n_k` entries of tensors with target variances :math:`v_k`
    gets :math:`\sum_k n_k v_k / \sum_k n_k`; the part of the last chunk beyond
    ``num_outputs`` (discarded) does not count.
    """
    per_entry = torch.cat([torch.full((numel(s),), float(v), dtype=torch.float64)
                           for s, v in zip(target_shapes, tensor_vars)])
    return [float(c.mean()) for c in per_entry.split(chunk_size)]


def uniform_(tensor: torch.Tensor, mean: float, var: float,
             generator: torch.Generator) -> None:
    r"""Fill with :math:`U(\mu - \sqrt{3v}, \mu + \sqrt{3v})` (mean ``mean``, variance ``var``)."""
    if var < 0:
        raise ValueError(f"a variance must be non-negative, got {var}")
    a = math.sqrt(3.0 * var)
    with torch.no_grad():
        if a == 0.0:
            tensor.fill_(mean)
        else:
            tensor.uniform_(mean - a, mean + a, generator=generator)
