r"""A fully-connected main network whose weights may come from outside (hypernetworks, MCMC).

:class:`MLP` follows the main-network interface of the original toolkit: it describes
its weight tensors through :attr:`MLP.param_shapes` / :attr:`MLP.param_shapes_meta`, may
keep no weights of its own (``no_weights=True``), and its :meth:`MLP.forward` accepts
weights as a list of tensors, a flat vector ``(P,)`` or a batch of flat vectors
``(B, P)``.  The flat layout is ``[W_1, b_1, W_2, b_2, ..., W_L, b_L]`` (row-major
``W_l`` of shape ``(out, in)``), the same as ``named_parameters()`` order, so a
hypernetwork's flattened output ``(B, P)`` plugs straight in.  A batch of weight vectors
is evaluated with batched matrix products (no Python loop over draws):

.. math:: h_{l} = \phi(h_{l-1} W_l^\top + b_l), \qquad f = h_{L-1} W_L^\top + b_L .

References
----------
von Oswald, J., Henning, C., Grewe, B. F. and Sacramento, J. (2020). Continual learning
with hypernetworks. *ICLR*.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _default_generator(generator: torch.Generator | None) -> torch.Generator:
    return torch.Generator().manual_seed(0) if generator is None else generator


def _fresh_generator(generator: torch.Generator | None) -> torch.Generator:
    """``generator``, or one seeded from the operating system (never the global RNG)."""
    return torch.Generator().manual_seed(secrets.randbits(63)) if generator is None else generator


class MLP(nn.Module):
    """Multi-layer perceptron with optional externally supplied weights.

    Parameters
    ----------
    n_in, n_out : int
        Input and output sizes.
    hidden_layers : sequence of int
        Hidden layer widths (empty: a linear model).
    activation_fn : callable
        Nonlinearity after every hidden layer (not after the output layer).
    use_bias : bool
        Whether layers have bias vectors.
    no_weights : bool
        Keep no internal weights; :meth:`forward` then requires ``weights``.
    generator : torch.Generator, optional
        Random source of the initial weights (``None``: a generator seeded with 0, so
        construction is reproducible).  The initialisation is PyTorch's ``nn.Linear``
        default, :math:`U(-1/\\sqrt{n_{in}}, 1/\\sqrt{n_{in}})` for weights and biases.
    """

    def __init__(
        self,
        n_in: int = 1,
        n_out: int = 1,
        hidden_layers: Sequence[int] = (10, 10),
        activation_fn: Callable[[Tensor], Tensor] = torch.nn.ReLU(),
        use_bias: bool = True,
        no_weights: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        sizes = [n_in, *hidden_layers, n_out]
        if not all(isinstance(s, int) and s > 0 for s in sizes):
            raise ValueError(
                f"n_in, hidden_layers and n_out must be positive ints, got n_in={n_in!r}, "
                f"hidden_layers={tuple(hidden_layers)!r}, n_out={n_out!r}."
            )
        if not callable(activation_fn):
            raise TypeError(f"activation_fn must be callable, got {activation_fn!r}.")
        self.n_in, self.n_out = n_in, n_out
        self.hidden_layers = tuple(hidden_layers)
        self.activation_fn = activation_fn
        self.has_bias = bool(use_bias)
        self.no_weights = bool(no_weights)

        shapes: list[list[int]] = []
        meta: list[dict] = []
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            shapes.append([fan_out, fan_in])
            meta.append({"name": "weight", "layer": layer})
            if self.has_bias:
                shapes.append([fan_out])
                meta.append({"name": "bias", "layer": layer})
        for i, m in enumerate(meta):
            m["index"] = -1 if self.no_weights else i
        self._param_shapes = shapes
        self._param_shapes_meta = meta
        self._numels = [math.prod(s) for s in shapes]
        self._num_layers = len(sizes) - 1

        if self.no_weights:
            self.weights = None
        else:
            self.weights = nn.ParameterList([nn.Parameter(torch.empty(s)) for s in shapes])
            self.reset_parameters(generator)

    # ------------------------------------------------------------------ interface
    @property
    def param_shapes(self) -> list[list[int]]:
        """Shapes of all weight tensors, in flat-vector order (weight, bias per layer)."""
        return [list(s) for s in self._param_shapes]

    @property
    def param_shapes_meta(self) -> list[dict]:
        """One dict per entry of :attr:`param_shapes`.

        Keys: ``'name'`` (``'weight'`` or ``'bias'``), ``'layer'`` (0-based layer index) and
        ``'index'`` (position in :attr:`internal_params`, or -1 without internal weights).
        """
        return [dict(m) for m in self._param_shapes_meta]

    @property
    def num_params(self) -> int:
        """Total number ``P`` of weights (length of a flat weight vector)."""
        return sum(self._numels)

    @property
    def internal_params(self) -> list[nn.Parameter] | None:
        """The internally kept weight tensors, or ``None`` when ``no_weights=True``."""
        return None if self.weights is None else list(self.weights)

    @property
    def hyper_shapes_learned(self) -> list[list[int]] | None:
        """Shapes a hypernetwork must produce: all of :attr:`param_shapes` when the net has
        no weights of its own, else ``None``."""
        return self.param_shapes if self.no_weights else None

    @property
    def layer_weight_tensors(self) -> list[nn.Parameter]:
        """Internal weight matrices, one per layer."""
        return self._internal_by_name("weight")

    @property
    def layer_bias_vectors(self) -> list[nn.Parameter]:
        """Internal bias vectors, one per layer (empty without biases)."""
        return self._internal_by_name("bias")

    def _internal_by_name(self, name: str) -> list[nn.Parameter]:
        if self.weights is None:
            raise ValueError("this MLP was built with no_weights=True and has no weights.")
        return [
            p
            for p, m in zip(self.weights, self._param_shapes_meta, strict=True)
            if m["name"] == name
        ]

    # -------------------------------------------------------------- initialisation
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """PyTorch's ``nn.Linear`` initialisation, :math:`U(\\pm 1/\\sqrt{n_{in}})`."""
        gen = _default_generator(generator)
        with torch.no_grad():
            for w, b in self._layer_pairs():
                bound = 1.0 / math.sqrt(w.shape[1])
                w.uniform_(-bound, bound, generator=gen)
                if b is not None:
                    b.uniform_(-bound, bound, generator=gen)

    def custom_init(
        self,
        normal_init: bool = False,
        normal_std: float = 0.02,
        zero_bias: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        r"""Re-initialise the internal weights.

        Weight matrices get Xavier-uniform init,
        :math:`U(\pm\sqrt{6/(n_{in}+n_{out})})` (Glorot and Bengio, 2010), or
        :math:`\mathcal N(0, \sigma^2)` with ``normal_init=True`` and
        :math:`\sigma` = ``normal_std``; biases are set to zero (``zero_bias``) or drawn
        like :meth:`reset_parameters` does.  Without ``generator`` every call draws
        fresh weights (seeded from the operating system, not the global RNG), so
        calling it once per chain gives different starting points.
        """
        if not normal_std > 0:
            raise ValueError(f"normal_std must be positive, got {normal_std}.")
        gen = _fresh_generator(generator)
        with torch.no_grad():
            for w, b in self._layer_pairs():
                if normal_init:
                    w.normal_(0.0, normal_std, generator=gen)
                else:
                    nn.init.xavier_uniform_(w, generator=gen)
                if b is not None:
                    if zero_bias:
                        b.zero_()
                    else:
                        bound = 1.0 / math.sqrt(w.shape[1])
                        b.uniform_(-bound, bound, generator=gen)

    def _layer_pairs(self) -> list[tuple[Tensor, Tensor | None]]:
        weights = self.layer_weight_tensors
        biases = self.layer_bias_vectors if self.has_bias else [None] * len(weights)
        return list(zip(weights, biases, strict=True))

    # -------------------------------------------------------------------- weights
    @staticmethod
    def flatten_params(
        params: Tensor | Sequence[Tensor],
        param_shapes: Sequence[Sequence[int]] | None = None,
        unflatten: bool = False,
    ) -> Tensor | list[Tensor]:
        """Flatten a list of weight tensors into one vector, or split a vector back.

        Parameters
        ----------
        params : list of Tensor or Tensor
            With ``unflatten=False``: tensors (optionally with a common leading batch
            dimension ``B``, then ``param_shapes`` is required).  With ``unflatten=True``:
            a flat vector ``(P,)`` or a batch ``(B, P)``.
        param_shapes : list of shapes, optional
            The shapes (e.g. :attr:`param_shapes`); required to unflatten.
        unflatten : bool
            Direction of the conversion.

        Returns
        -------
        Tensor or list of Tensor
            ``(P,)`` / ``(B, P)`` when flattening; list of ``(*lead, *shape)`` views when
            unflattening.
        """
        if unflatten:
            if param_shapes is None:
                raise ValueError("param_shapes is required to unflatten a flat vector.")
            if not isinstance(params, Tensor):
                raise TypeError(f"params must be a flat Tensor, got {type(params).__name__}.")
            numels = [math.prod(s) for s in param_shapes]
            if params.dim() not in (1, 2) or params.shape[-1] != sum(numels):
                raise ValueError(
                    f"expected a flat vector of length {sum(numels)} or a batch "
                    f"(B, {sum(numels)}); got shape {tuple(params.shape)}."
                )
            lead = params.shape[:-1]
            chunks = torch.split(params, numels, dim=-1)
            return [c.reshape(*lead, *s) for c, s in zip(chunks, param_shapes, strict=True)]
        params = list(params)
        if param_shapes is None:
            return torch.cat([p.reshape(-1) for p in params])
        if len(params) != len(param_shapes):
            raise ValueError(f"expected {len(param_shapes)} tensors, got {len(params)}.")
        lead = params[0].shape[: params[0].dim() - len(param_shapes[0])]
        for p, s in zip(params, param_shapes, strict=True):
            if tuple(p.shape) != (*lead, *s):
                raise ValueError(
                    f"tensor of shape {tuple(p.shape)} does not fit shape {tuple(s)} with "
                    f"leading dims {tuple(lead)}."
                )
        return torch.cat([p.reshape(*lead, -1) for p in params], dim=-1)

    def _as_list(self, weights: Tensor | Sequence[Tensor] | None) -> tuple[list[Tensor], bool]:
        """Weights as a list of tensors, and whether they carry a leading batch dim."""
        if weights is None:
            if self.weights is None:
                raise ValueError(
                    "this MLP has no internal weights (no_weights=True); pass weights=."
                )
            return list(self.weights), False
        if isinstance(weights, Tensor):
            if weights.dim() not in (1, 2) or weights.shape[-1] != self.num_params:
                raise ValueError(
                    f"flat weights must have shape ({self.num_params},) or "
                    f"(B, {self.num_params}); got {tuple(weights.shape)}."
                )
            chunks = weights.split_with_sizes(self._numels, dim=-1)
            if weights.dim() == 1:  # hot path of every potential evaluation: no 1-D reshapes
                tensors = [
                    c if len(s) == 1 else c.view(s)
                    for c, s in zip(chunks, self._param_shapes, strict=True)
                ]
                return tensors, False
            b = weights.shape[0]
            tensors = [c.reshape(b, *s) for c, s in zip(chunks, self._param_shapes, strict=True)]
            return tensors, True
        weights = list(weights)
        if len(weights) != len(self._param_shapes):
            raise ValueError(
                f"expected {len(self._param_shapes)} weight tensors (param_shapes), got "
                f"{len(weights)}."
            )
        batched = weights[0].dim() == len(self._param_shapes[0]) + 1
        for w, s in zip(weights, self._param_shapes, strict=True):
            expected = ((weights[0].shape[0],) if batched else ()) + tuple(s)
            if tuple(w.shape) != expected:
                raise ValueError(f"weight tensor must have shape {expected}, got {tuple(w.shape)}.")
        return weights, batched

    # -------------------------------------------------------------------- forward
    def forward(self, x: Tensor, weights: Tensor | Sequence[Tensor] | None = None) -> Tensor:
        """Evaluate the network.

        Parameters
        ----------
        x : Tensor
            Inputs ``(n, n_in)``; with batched weights also ``(B, n, n_in)``.
        weights : list of Tensor or Tensor, optional
            ``None`` (internal weights), a list matching :attr:`param_shapes` (optionally
            each with a leading batch dim ``B``), a flat vector ``(P,)`` or a batch
            ``(B, P)``.

        Returns
        -------
        Tensor
            ``(n, n_out)``, or ``(B, n, n_out)`` for batched weights.
        """
        tensors, batched = self._as_list(weights)
        if x.device != tensors[0].device:
            raise ValueError(
                f"inputs are on device {x.device} but the weights on {tensors[0].device}; "
                f"move them with x.to({str(tensors[0].device)!r})."
            )
        if x.is_floating_point() and x.dtype != tensors[0].dtype:
            raise TypeError(
                f"inputs have dtype {x.dtype} but the weights {tensors[0].dtype}; cast one of "
                f"them, e.g. x.to({tensors[0].dtype})."
            )
        if x.shape[-1] != self.n_in:
            raise ValueError(
                f"inputs must have {self.n_in} features in the last dimension, got shape "
                f"{tuple(x.shape)}."
            )
        step = 2 if self.has_bias else 1
        h = x
        if batched:
            h = x.expand(tensors[0].shape[0], *x.shape[-2:]) if x.dim() == 2 else x
        for layer in range(self._num_layers):
            w = tensors[step * layer]
            b = tensors[step * layer + 1] if self.has_bias else None
            if batched:
                wt = w.transpose(-1, -2)
                h = torch.bmm(h, wt) if b is None else torch.baddbmm(b.unsqueeze(-2), h, wt)
            else:
                h = F.linear(h, w, b)
            if layer < self._num_layers - 1:
                h = self.activation_fn(h)
        return h
