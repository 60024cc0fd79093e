r"""The fully-connected stack used inside the MLP hypernetworks.

Layer :math:`l` computes :math:`a_l = W_l h_{l-1} + b_l`, optionally batch-normalises
:math:`a_l` (Ioffe & Szegedy, 2015), applies the activation and optionally dropout; the
last layer is linear.  With spectral normalisation every weight is used as
:math:`W / \sigma_{\max}(W)`, :math:`\sigma_{\max}` estimated by power iteration
(Miyato et al., 2018; :func:`torch.nn.utils.parametrizations.spectral_norm`).

The parameters can be replaced per call (:meth:`FCBody.call_with`) through
:func:`torch.func.functional_call`, so spectral normalisation, batch norm and dropout act
on externally supplied weights exactly as on held ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..bnn.batchnorm import BatchNormLayer
from .rng import GeneratorDropout, seeded_global_rng


class FCBody(nn.Module):
    """Fully-connected stack ``in_size -> layers... -> out_size``.

    Parameters
    ----------
    in_size, out_size : int
        Input and output widths.
    layers : sequence of int
        Hidden widths (may be empty: a single linear map).
    activation_fn : callable or None
        Hidden activation; ``None`` means linear.
    use_bias : bool
        Whether linear layers have biases.
    dropout_rate : float
        ``-1`` for none, else the dropout probability after each hidden activation.
    use_spectral_norm : bool
        Spectrally normalise every linear layer.
    use_batch_norm : bool
        Batch-normalise every hidden pre-activation with a
        :class:`~bnn_mcmc.bnn.BatchNormLayer` (learned scale and shift).
    generator : torch.Generator
        Source of randomness for initialisation and dropout.
    num_bn_stats : int
        Number of sets of running batch-norm statistics per layer (one per condition),
        selected by ``stats_id`` in :meth:`forward`.
    """

    def __init__(self, in_size: int, out_size: int, layers: Sequence[int],
                 activation_fn: Callable | None, use_bias: bool, dropout_rate: float,
                 use_spectral_norm: bool, use_batch_norm: bool,
                 generator: torch.Generator, num_bn_stats: int = 1) -> None:
        super().__init__()
        if in_size <= 0:
            raise ValueError("the hypernetwork input size must be positive")
        if any(not isinstance(n, int) or n <= 0 for n in layers):
            raise ValueError(f"layers must be positive ints, got {layers!r}")
        if dropout_rate != -1 and not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be -1 or in [0, 1), got {dropout_rate}")
        if activation_fn is not None and not callable(activation_fn):
            raise TypeError("activation_fn must be callable (e.g. torch.nn.ReLU()) or None")
        self.activation_fn = activation_fn
        self.use_spectral_norm = use_spectral_norm
        widths = [in_size, *layers, out_size]
        self.linears = nn.ModuleList()
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            lin = torch.nn.utils.skip_init(nn.Linear, n_in, n_out, bias=use_bias)
            bound = 1.0 / math.sqrt(n_in)
            nn.init.uniform_(lin.weight, -bound, bound, generator=generator)
            if use_bias:
                nn.init.uniform_(lin.bias, -bound, bound, generator=generator)
            self.linears.append(lin)
        self.norms = None
        if use_batch_norm:
            self.norms = nn.ModuleList(BatchNormLayer(n) for n in layers)
            for bn in self.norms:
                for _ in range(num_bn_stats - 1):
                    bn.checkpoint_stats()
        self.dropouts = (nn.ModuleList(GeneratorDropout(dropout_rate, generator) for _ in layers)
                         if dropout_rate != -1 else None)
        if use_spectral_norm:
            with seeded_global_rng(generator):
                for lin in self.linears:
                    torch.nn.utils.parametrizations.spectral_norm(lin)
        self.param_names = []
        for i, lin in enumerate(self.linears):
            w_attr = "parametrizations.weight.original" if use_spectral_norm else "weight"
            self.param_names.append(f"linears.{i}.{w_attr}")
            if lin.bias is not None:
                self.param_names.append(f"linears.{i}.bias")
            if self.norms is not None and i < len(self.norms):
                self.param_names += [f"norms.{i}.scale", f"norms.{i}.bias"]
        if sorted(self.param_names) != sorted(n for n, _ in self.named_parameters()):
            raise RuntimeError("FCBody parameter bookkeeping is inconsistent")

    def weight_tensor(self, i: int) -> torch.Tensor:
        """Raw (unnormalised) weight of linear layer ``i`` (a leaf tensor, for init)."""
        lin = self.linears[i]
        if self.use_spectral_norm:
            return lin.parametrizations.weight.original
        return lin.weight

    def release_params(self) -> None:
        """Turn every parameter into a non-persistent buffer: the weights must then be
        passed to :meth:`call_with` (``no_uncond_weights=True``)."""
        for name in self.param_names:
            *path, attr = name.split(".")
            mod = self.get_submodule(".".join(path)) if path else self
            value = getattr(mod, attr).detach()
            delattr(mod, attr)
            mod.register_buffer(attr, value, persistent=False)

    def held_params(self) -> list[torch.Tensor]:
        """Parameters in :attr:`param_names` order: per layer the weight, the bias and
        (hidden layers with batch norm) the batch-norm scale and shift."""
        named = dict(self.named_parameters())
        return [named[n] for n in self.param_names]

    @property
    def num_bn_stats(self) -> int:
        """Sets of running batch-norm statistics per layer (0 without batch norm)."""
        return 0 if self.norms is None else self.norms[0].num_stats if len(self.norms) else 0

    def forward(self, x: torch.Tensor, stats_id: int | None = None) -> torch.Tensor:
        h = x
        last = len(self.linears) - 1
        for i, lin in enumerate(self.linears):
            h = lin(h)
            if i == last:
                break
            if self.norms is not None:
                h = self.norms[i](h, stats_id=stats_id)
            if self.activation_fn is not None:
                h = self.activation_fn(h)
            if self.dropouts is not None:
                h = self.dropouts[i](h)
        return h

    def call_with(self, x: torch.Tensor, params: list[torch.Tensor] | None,
                  stats_id: int | None = None) -> torch.Tensor:
        """Evaluate with ``params`` (in :attr:`param_names` order) or the held ones;
        ``stats_id`` selects the batch-norm statistics."""
        if params is None:
            return self(x, stats_id)
        return torch.func.functional_call(self, dict(zip(self.param_names, params)),
                                          (x, stats_id))

    def param_meta(self) -> list[tuple[str, int]]:
        """``(name, layer)`` of every entry of :attr:`param_names`: ``'weight'``,
        ``'bias'``, ``'bn_scale'`` or ``'bn_shift'``."""
        out = []
        for n in self.param_names:
            parts = n.split(".")
            layer = int(parts[1])
            if parts[0] == "norms":
                out.append(("bn_scale" if parts[2] == "scale" else "bn_shift", layer))
            else:
                out.append(("bias" if parts[-1] == "bias" else "weight", layer))
        return out
