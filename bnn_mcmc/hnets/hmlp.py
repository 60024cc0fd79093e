r"""Fully-connected ("full") hypernetwork producing all target tensors in one pass.

The input :math:`x = [e; z]` (condition embedding :math:`e`, unconditional input
:math:`z`) goes through a fully-connected stack whose linear output layer has one row
block ("head") per target tensor, :math:`w_k = H_k h + \beta_k`.  A batch of ``B`` inputs
gives ``B`` weight sets in one batched pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from . import hyperfan as hf
from .body import FCBody
from .formats import check_shapes, numel
from .interface import HyperNetInterface
from .rng import make_generator


class HMLP(nn.Module, HyperNetInterface):
    """Full MLP hypernetwork.

    Parameters
    ----------
    target_shapes : list of list of int
        Shapes of the generated tensors (e.g. ``MLP.param_shapes``).
    uncond_in_size : int
        Size of the unconditional input ``z`` (e.g. base noise); 0 for none.
    cond_in_size : int
        Size of the condition embeddings ``e``; 0 for none.
    layers : sequence of int
        Hidden widths; empty for a linear hypernetwork.
    verbose : bool
        Print a summary of the network (outputs, hidden layers, parameter counts).
    activation_fn : callable or None
        Hidden activation.
    use_bias : bool
        Biases in the linear layers.
    no_uncond_weights : bool
        If true the unconditional parameters are not held and must be passed to
        :meth:`forward` (``weights``).
    no_cond_weights : bool
        If true the condition embeddings are not held.
    num_cond_embs : int
        Number of held condition embeddings (initialised :math:`\\mathcal N(0, 1)`).
    dropout_rate : float
        ``-1`` for none, else dropout probability after each hidden activation
        (training mode only).
    use_spectral_norm : bool
        Spectral normalisation of every linear layer (training mode updates the power
        iteration).
    use_batch_norm : bool
        Batch norm of every hidden pre-activation (batch statistics in training mode,
        running statistics in eval mode).
    generator : torch.Generator or int, optional
        Randomness for initialisation and dropout; ``None`` seeds from the OS.
    """

    def __init__(
        self,
        target_shapes: Sequence[Sequence[int]],
        uncond_in_size: int = 0,
        cond_in_size: int = 8,
        layers: Sequence[int] = (100, 100),
        verbose: bool = True,
        activation_fn: Callable | None = nn.ReLU(),  # noqa: B008 - stateless module
        use_bias: bool = True,
        no_uncond_weights: bool = False,
        no_cond_weights: bool = False,
        num_cond_embs: int = 1,
        dropout_rate: float = -1,
        use_spectral_norm: bool = False,
        use_batch_norm: bool = False,
        generator: torch.Generator | int | None = None,
    ) -> None:
        super().__init__()
        self._target_shapes = check_shapes(target_shapes)
        for name, v in (("uncond_in_size", uncond_in_size), ("cond_in_size", cond_in_size),
                        ("num_cond_embs", num_cond_embs)):
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        if uncond_in_size + cond_in_size == 0:
            raise ValueError("uncond_in_size + cond_in_size must be positive")
        self._uncond_in_size = uncond_in_size
        self._cond_in_size = cond_in_size
        self._generator = make_generator(generator)
        self._layers = list(layers)
        self._no_uncond_weights = no_uncond_weights
        self.body = FCBody(cond_in_size + uncond_in_size, self.num_outputs, self._layers,
                           activation_fn, use_bias, dropout_rate, use_spectral_norm,
                           use_batch_norm, self._generator,
                           num_bn_stats=max(1, num_cond_embs if cond_in_size > 0 else 1))
        self._uncond_shapes = [list(p.shape) for p in self.body.held_params()]
        if no_uncond_weights:
            self.body.release_params()
        n_conds = num_cond_embs if cond_in_size > 0 else 0
        self._num_known_conds = n_conds
        self._cond_shapes = [[cond_in_size] for _ in range(n_conds)]
        self.cond_embs = None
        if n_conds > 0 and not no_cond_weights:
            self.cond_embs = nn.ParameterList(
                nn.Parameter(torch.randn(cond_in_size, generator=self._generator))
                for _ in range(n_conds)
            )
        self._use_bias = use_bias
        self._report(verbose, "HMLP", f"hidden layers {self._layers}"
                     + (", batch norm" if use_batch_norm else ""))

    def _meta_names(self) -> tuple[list, list]:
        return self.body.param_meta(), [("embedding", -1) for _ in self._cond_shapes]

    @property
    def unconditional_params(self) -> list | None:
        return None if self._no_uncond_weights else self.body.held_params()

    @property
    def conditional_params(self) -> list | None:
        return None if self.cond_embs is None else list(self.cond_embs)

    @property
    def layers(self) -> list:
        """Hidden widths."""
        return list(self._layers)

    def get_cond_in_emb(self, cond_id: int) -> nn.Parameter:
        """The held embedding of condition ``cond_id``."""
        if self.cond_embs is None:
            raise ValueError("this hypernetwork holds no condition embeddings")
        if not 0 <= cond_id < len(self.cond_embs):
            raise ValueError(f"cond_id must be in [0, {len(self.cond_embs)})")
        return self.cond_embs[cond_id]

    def forward(self, uncond_input=None, cond_input=None, cond_id=None, weights=None,
                distilled_params=None, condition=None, ret_format="squeezed"):
        """Generate target tensors; see :meth:`HyperNetInterface.forward`."""
        if self.body.norms is None:
            self._check_unused(distilled_params, condition)
        else:
            self._check_unused(distilled_params)
            n = self.body.num_bn_stats
            if condition is None and n > 1:
                raise ValueError(f"this network keeps {n} sets of batch-norm statistics "
                                 "(one per condition): pass condition=<int>")
            if condition is not None and (not isinstance(condition, int)
                                          or not 0 <= condition < n):
                raise ValueError(f"condition must be an int in [0, {n})")
        uw, cw, extra = self._split_weights(weights)
        if extra:
            raise ValueError(f"unknown weights keys {sorted(extra)} for HMLP")
        flat = self.forward_flat(self._shared_input(uncond_input, cond_input, cond_id,
                                                    cw if cw is not None
                                                    else self.conditional_params), uw,
                                 condition)
        return self._format_output(flat, ret_format)

    def forward_flat(self, x: torch.Tensor, uncond_weights: list | None = None,
                     condition: int | None = None) -> torch.Tensor:
        """Map a prepared input ``x`` of shape ``(B, cond_in_size + uncond_in_size)`` to
        the ``(B, num_outputs)`` output (``condition``: batch-norm statistics)."""
        if uncond_weights is None and self._no_uncond_weights:
            raise ValueError(
                "no_uncond_weights=True: pass weights={'uncond_weights': [...]} to forward"
            )
        return self.body.call_with(x, uncond_weights, condition)

    def _check_initialisable(self) -> None:
        if self._no_uncond_weights:
            raise ValueError("no_uncond_weights=True: there are no held weights to initialise")
        if self.body.use_spectral_norm:
            raise ValueError(
                "hyperfan init cannot set output variances with use_spectral_norm=True "
                "(weights are rescaled by their spectral norm)"
            )

    def init_hidden_fan_in(self, generator: torch.Generator) -> float:
        r"""Initialise hidden layers with :math:`U` of variance :math:`g^2/n_{in}` and zero
        biases (second-moment preserving, see :mod:`bnn_mcmc.hnets.hyperfan`); batch-norm
        affine parameters to (1, 0).

        Returns
        -------
        float
            The squared gain :math:`g^2` used (1 without hidden layers).
        """
        gain2 = hf.activation_gain2(self.body.activation_fn) if self._layers else 1.0
        n_hidden = len(self._layers)
        for i in range(n_hidden):
            w = self.body.weight_tensor(i)
            hf.uniform_(w, 0.0, gain2 / w.shape[1], generator)
            if self.body.linears[i].bias is not None:
                nn.init.zeros_(self.body.linears[i].bias)
        if self.body.norms is not None:
            for bn in self.body.norms:
                nn.init.ones_(bn.scale)
                nn.init.zeros_(bn.bias)
                bn.reset_running_stats()
        return gain2

    def _last_hidden_m2(self, input_var: float, gain2: float) -> float:
        # exact for ReLU / leaky ReLU / linear; followed through the layers for tanh
        return hf.propagate_second_moment(
            self.body.activation_fn if self._layers else None,
            input_var,
            len(self._layers),
            batch_norm=self.body.norms is not None,
        )

    def apply_hyperfan_init(
        self,
        method: str = "in",
        use_xavier: bool = False,
        uncond_var: float = 1.0,
        cond_var: float = 1.0,
        mnet=None,
        w_val: list | dict | None = None,
        w_var: list | dict | None = None,
        b_val: list | dict | None = None,
        b_var: list | dict | None = None,
        generator: torch.Generator | int | None = None,
    ) -> None:
        r"""Hyperfan initialisation (Chang et al., 2020) so that generated main-network
        tensors have the variance of a fan-in / fan-out / harmonic-mean init.

        See :mod:`bnn_mcmc.hnets.hyperfan` for the maths.  Head :math:`k` producing a
        weight or bias gets :math:`H_k \sim U` with
        :math:`\mathrm{Var}(H_k) = \mathrm{Var}_{target,k} / (d_k E[h^2])` and
        :math:`\beta_k = 0`, so :math:`\mathrm{Var}(w_k) = \mathrm{Var}_{target,k}` in
        expectation over initialisation and inputs.  The analysis is for eval mode
        (dropout inactive); with batch norm it assumes training-mode standardised hidden
        pre-activations, :math:`E[h^2] = 1/g^2`.

        Parameters
        ----------
        method : {'in', 'out', 'harmonic'}
            Target: fan-in, fan-out, or the harmonic mean of the two variances.
        use_xavier : bool
            Target Xavier (:math:`c = 1`) instead of Kaiming (:math:`c = 2`) variances.
        uncond_var, cond_var : float
            Variances of the zero-mean unconditional inputs and condition embeddings.
        mnet : object, optional
            Main network with ``param_shapes`` (equal to ``target_shapes``) and
            ``param_shapes_meta``; without it, tensors with ≥ 2 dims are weights and 1-D
            tensors the bias of the preceding weight.
        w_val, w_var, b_val, b_var : list or dict, optional
            Per-head overrides of the head weight mean/variance and head bias mean/variance
            (a list over target tensors with ``None`` for "default", or a dict keyed by
            tensor name such as ``'weight'``, ``'bias'``, ``'bn_scale'``).  Defaults: for
            weights/biases ``(0, hyperfan, 0, 0)``; others from
            :data:`~bnn_mcmc.hnets.hyperfan.OTHER_DEFAULTS`.
        generator : torch.Generator or int, optional
            Randomness; defaults to the network's generator.
        """
        self._check_initialisable()
        g = self._generator if generator is None else make_generator(generator)
        meta = hf.infer_meta(self._target_shapes, mnet)
        tvars = hf.target_variances(self._target_shapes, meta, method, use_xavier)
        input_var = hf.mean_input_variance(
            [(self._cond_in_size, cond_var), (self._uncond_in_size, uncond_var)])
        gain2 = self.init_hidden_fan_in(g)
        m2 = self._last_hidden_m2(input_var, gain2)
        head_w = self.body.weight_tensor(len(self._layers))
        head_b = self.body.linears[-1].bias
        d_k = head_w.shape[1]
        overrides = [self._override(a, meta, name) for a, name in
                     ((w_val, "w_val"), (w_var, "w_var"), (b_val, "b_val"), (b_var, "b_var"))]
        start = 0
        for k, (shape, m) in enumerate(zip(self._target_shapes, meta)):
            stop = start + numel(shape)
            if tvars[k] is not None:
                default = (0.0, tvars[k] / (d_k * m2), 0.0, 0.0)
            elif m["name"] in hf.OTHER_DEFAULTS:
                default = hf.OTHER_DEFAULTS[m["name"]]
            else:
                raise ValueError(f"no default init for tensors named {m['name']!r}")
            wv, wvar, bv, bvar = (o[k] if o[k] is not None else d
                                  for o, d in zip(overrides, default))
            hf.uniform_(head_w[start:stop], wv, wvar, g)
            if head_b is not None:
                hf.uniform_(head_b[start:stop], bv, bvar, g)
            elif bv != 0.0 or bvar != 0.0:
                raise ValueError("b_val/b_var need use_bias=True")
            start = stop

    def _override(self, arg, meta: list[dict], name: str) -> list:
        n = len(self._target_shapes)
        if arg is None:
            return [None] * n
        if isinstance(arg, dict):
            return [arg.get(m["name"]) for m in meta]
        if isinstance(arg, (list, tuple)) and len(arg) == n:
            return list(arg)
        raise ValueError(f"{name} must be a dict or a list of length {n} (len(target_shapes))")
