r"""Chunked MLP hypernetwork: one small full hypernetwork generates the flattened target
vector chunk by chunk (Ha et al., 2016; von Oswald et al., 2020).

The ``num_outputs`` target scalars are split into :math:`C = \lceil N / n_v \rceil` chunks
of size :math:`n_v` (``chunk_size``).  Chunk :math:`j` is
:math:`v_j = f_\theta([c_j; e; z])` with a learned chunk embedding :math:`c_j`; the surplus
of the last chunk is discarded.  All chunks of all ``B`` samples go through
:math:`f_\theta` as one batch of ``B * C`` rows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from . import hyperfan as hf
from .formats import check_shapes
from .hmlp import HMLP
from .interface import HyperNetInterface
from .rng import make_generator


class ChunkedHMLP(nn.Module, HyperNetInterface):
    """Chunked fully-connected hypernetwork.

    Parameters
    ----------
    target_shapes : list of list of int
        Shapes of the generated tensors.
    chunk_size : int
        Scalars produced per pass of the internal network.
    chunk_emb_size : int
        Size of each chunk embedding (initialised :math:`\\mathcal N(0, 1)`).
    cond_chunk_embs : bool
        If true, every condition has its own chunk embeddings (conditional parameters);
        otherwise one set is shared (unconditional parameters).
    uncond_in_size, cond_in_size, layers, activation_fn, use_bias, no_uncond_weights, \
no_cond_weights, num_cond_embs, dropout_rate, use_spectral_norm, use_batch_norm, generator
        As for :class:`~bnn_mcmc.hnets.hmlp.HMLP`; they describe the internal network,
        whose input is ``[c_j; e; z]``.
    """

    def __init__(
        self,
        target_shapes: Sequence[Sequence[int]],
        chunk_size: int,
        chunk_emb_size: int = 8,
        cond_chunk_embs: bool = False,
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
        for name, v in (("chunk_size", chunk_size), ("chunk_emb_size", chunk_emb_size)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name, v in (("uncond_in_size", uncond_in_size), ("cond_in_size", cond_in_size),
                        ("num_cond_embs", num_cond_embs)):
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        self._generator = make_generator(generator)
        self._chunk_size = chunk_size
        self._chunk_emb_size = chunk_emb_size
        self._cond_chunk_embs = cond_chunk_embs
        self._uncond_in_size = uncond_in_size
        self._cond_in_size = cond_in_size
        self._no_uncond_weights = no_uncond_weights
        self._num_chunks = math.ceil(self.num_outputs / chunk_size)
        self.internal_hnet = HMLP(
            [[chunk_size]], uncond_in_size=cond_in_size + uncond_in_size,
            cond_in_size=chunk_emb_size, layers=layers, activation_fn=activation_fn,
            use_bias=use_bias, no_uncond_weights=no_uncond_weights, no_cond_weights=True,
            num_cond_embs=0, dropout_rate=dropout_rate, use_spectral_norm=use_spectral_norm,
            use_batch_norm=use_batch_norm, generator=self._generator, verbose=False)
        ce_shape = [self._num_chunks, chunk_emb_size]
        has_conds = cond_in_size > 0 or cond_chunk_embs
        self._num_known_conds = num_cond_embs if has_conds else 0
        n_conds = self._num_known_conds
        self._uncond_shapes = self.internal_hnet.unconditional_param_shapes
        if not cond_chunk_embs:
            self._uncond_shapes.append(ce_shape)
        self._cond_shapes = [[cond_in_size]] * (n_conds if cond_in_size > 0 else 0)
        if cond_chunk_embs:
            self._cond_shapes = self._cond_shapes + [ce_shape] * n_conds

        def randn(shape):
            return nn.Parameter(torch.randn(*shape, generator=self._generator))

        self.chunk_embs = None
        self.cond_chunk_emb_list = None
        self.cond_embs = None
        if not cond_chunk_embs and not no_uncond_weights:
            self.chunk_embs = randn(ce_shape)
        if not no_cond_weights and n_conds > 0:
            if cond_in_size > 0:
                self.cond_embs = nn.ParameterList(randn([cond_in_size]) for _ in range(n_conds))
            if cond_chunk_embs:
                self.cond_chunk_emb_list = nn.ParameterList(randn(ce_shape)
                                                            for _ in range(n_conds))
        self._use_bias = use_bias
        self._report(verbose, "ChunkedHMLP",
                     f"{self._num_chunks} chunks of {chunk_size}, hidden layers {list(layers)}")

    @property
    def chunk_size(self) -> int:
        """Scalars per chunk."""
        return self._chunk_size

    @property
    def chunk_emb_size(self) -> int:
        """Size of a chunk embedding."""
        return self._chunk_emb_size

    @property
    def cond_chunk_embs(self) -> bool:
        """Whether chunk embeddings are per condition."""
        return self._cond_chunk_embs

    @property
    def num_chunks(self) -> int:
        """Number of chunks :math:`C` per generated weight set."""
        return self._num_chunks

    @property
    def unconditional_params(self) -> list | None:
        if self._no_uncond_weights:
            return None
        extra = [] if self.chunk_embs is None else [self.chunk_embs]
        return self.internal_hnet.unconditional_params + extra

    @property
    def conditional_params(self) -> list | None:
        params = list(self.cond_embs or []) + list(self.cond_chunk_emb_list or [])
        return params or None

    def get_cond_in_emb(self, cond_id: int) -> nn.Parameter:
        """The held input embedding of condition ``cond_id``."""
        if self.cond_embs is None or not 0 <= cond_id < len(self.cond_embs):
            raise ValueError("no held condition embedding with this cond_id")
        return self.cond_embs[cond_id]

    def get_chunk_emb(self, chunk_id: int | None = None, cond_id: int | None = None):
        """Held chunk embeddings ``(C, E)`` (or row ``chunk_id``); ``cond_id`` selects the
        condition's set when ``cond_chunk_embs`` is true."""
        if self._cond_chunk_embs:
            if self.cond_chunk_emb_list is None or cond_id is None \
                    or not 0 <= cond_id < len(self.cond_chunk_emb_list):
                raise ValueError("cond_chunk_embs=True: pass a valid cond_id of a held set")
            embs = self.cond_chunk_emb_list[cond_id]
        else:
            if cond_id is not None:
                raise ValueError("cond_id is only used with cond_chunk_embs=True")
            if self.chunk_embs is None:
                raise ValueError("chunk embeddings are not held (no_uncond_weights=True)")
            embs = self.chunk_embs
        return embs if chunk_id is None else embs[chunk_id]

    def forward(self, uncond_input=None, cond_input=None, cond_id=None, weights=None,
                distilled_params=None, condition=None, ret_format="squeezed"):
        """Generate target tensors; see :meth:`HyperNetInterface.forward`.

        ``weights`` may be a dict with the extra key ``'chunk_embs'``, a ``(B, C, E)``
        batch of chunk embeddings (only with ``cond_chunk_embs=True``, exclusive with
        ``cond_id``).
        """
        self._check_unused(distilled_params, condition)
        uw, cw, extra = self._split_weights(weights)
        if set(extra) - {"chunk_embs"}:
            raise ValueError(f"unknown weights keys {sorted(set(extra) - {'chunk_embs'})}")
        n_c = self._num_known_conds if self._cond_in_size > 0 else 0
        cond_in = cw[:n_c] if cw is not None else list(self.cond_embs or [])
        cond_ce = cw[n_c:] if cw is not None else list(self.cond_chunk_emb_list or [])
        shared = None
        if self._cond_in_size + self._uncond_in_size > 0:
            shared = self._shared_input(uncond_input, cond_input, cond_id, cond_in)
        if self._cond_chunk_embs:
            if "chunk_embs" in extra:
                if cond_id is not None:
                    raise ValueError("give either weights['chunk_embs'] or cond_id, not both")
                ce = extra["chunk_embs"]
                if ce.dim() != 3 or list(ce.shape[1:]) != [self._num_chunks,
                                                          self._chunk_emb_size]:
                    raise ValueError(f"weights['chunk_embs'] must have shape "
                                     f"(B, {self._num_chunks}, {self._chunk_emb_size})")
            else:
                ce = self._cond_part_chunks(cond_id, cond_ce)
        else:
            if "chunk_embs" in extra:
                raise ValueError("weights['chunk_embs'] needs cond_chunk_embs=True")
            if uw is None and self.chunk_embs is None:
                raise ValueError("no_uncond_weights=True: pass weights={'uncond_weights': ...}")
            ce = (uw[-1] if uw is not None else self.chunk_embs).unsqueeze(0)
        flat = self._generate(shared, ce, None if uw is None else
                              uw[:len(self.internal_hnet.unconditional_param_shapes)])
        return self._format_output(flat, ret_format)

    def _cond_part_chunks(self, cond_id, cond_ce: list) -> torch.Tensor:
        if not cond_ce:
            raise ValueError("no chunk embeddings held: pass weights['chunk_embs'] or "
                             "weights['cond_weights']")
        if cond_id is None:
            if len(cond_ce) != 1:
                raise ValueError(f"{len(cond_ce)} conditions are held: pass cond_id")
            cond_id = 0
        ids = [cond_id] if isinstance(cond_id, int) else list(cond_id)
        if any(not isinstance(i, int) or not 0 <= i < len(cond_ce) for i in ids):
            raise ValueError(f"cond_id entries must be ints in [0, {len(cond_ce)})")
        return torch.stack([cond_ce[i] for i in ids])

    def _generate(self, shared: torch.Tensor | None, ce: torch.Tensor,
                  internal_weights: list | None) -> torch.Tensor:
        """Run all ``B * C`` chunks through the internal network at once."""
        b = max(ce.shape[0], 1 if shared is None else shared.shape[0])
        if ce.shape[0] not in (1, b) or (shared is not None and shared.shape[0] not in (1, b)):
            raise ValueError("batch sizes of inputs and chunk embeddings differ")
        parts = [ce.expand(b, -1, -1)]
        if shared is not None:
            parts.append(shared.unsqueeze(1).expand(b, self._num_chunks, -1))
        x = torch.cat(parts, dim=2).reshape(b * self._num_chunks, -1)
        out = self.internal_hnet.forward_flat(x, internal_weights)
        return out.reshape(b, self._num_chunks * self._chunk_size)[:, :self.num_outputs]

    def apply_chunked_hyperfan_init(
        self,
        method: str = "in",
        use_xavier: bool = False,
        uncond_var: float = 1.0,
        cond_var: float = 1.0,
        eps: float = 1e-5,
        cemb_normal_init: bool = False,
        mnet=None,
        target_vars: list | dict | None = None,
        generator: torch.Generator | int | None = None,
    ) -> list[float]:
        r"""Chunked hyperfan initialisation through the chunk-embedding variances.

        The internal network is initialised to pass the mean input second moment to its
        output: hidden layers with variance :math:`g^2/n_{in}`, output layer with
        :math:`1/d_k`, zero biases, so
        :math:`\mathrm{Var}(v) = (n_c \mathrm{Var}(c) + n_s \bar v_s)/(n_c + n_s)` where
        :math:`n_s \bar v_s = n_e \mathrm{Var}(e) + n_z \mathrm{Var}(z)` is the shared
        input.  Chunk :math:`j` should have the size-weighted average
        :math:`\mathrm{Var}_j = \sum_k n_k \mathrm{Var}(w_k) / \sum_k n_k` of the target
        variances of the main-network tensors it covers (see
        :mod:`bnn_mcmc.hnets.hyperfan`), so its embedding gets

        .. math::

            \mathrm{Var}(c_j) = \frac{(n_c + n_s)\mathrm{Var}_j/\alpha - n_s \bar v_s}{n_c},
            \qquad \alpha = \min\Big(1, \frac{\min_j \mathrm{Var}_j}{\bar v_s}\Big),

        where the output layer gets variance :math:`\alpha/d_k`.  Without the factor
        :math:`\alpha` the embedding variance of a chunk whose target is below the shared
        input's (:math:`\bar v_s = 1` by default, main-network targets around
        :math:`2/m_{in}`) would be negative and had to be clipped, leaving those weights
        many times too large; with it the smallest target chunk gets
        :math:`\mathrm{Var}(c_j) = \bar v_s` and all targets are met in expectation
        (exactly for ReLU / linear internal networks; approximately for tanh, whose
        second-moment map is not linear).  ``eps`` remains the floor of the variances.

        Parameters
        ----------
        method, use_xavier, uncond_var, cond_var, mnet, generator
            As in :meth:`HMLP.apply_hyperfan_init`.
        eps : float
            Smallest chunk-embedding variance.
        cemb_normal_init : bool
            Normal instead of uniform chunk embeddings.
        target_vars : list or dict, optional
            Target variances overriding the defaults (list over target tensors with
            ``None`` for default, or dict by tensor name); tensors that are neither
            weights nor biases default to 1.

        Returns
        -------
        list of float
            The chunk target variances :math:`\mathrm{Var}_j`.
        """
        hnet = self.internal_hnet
        hnet._check_initialisable()
        if hnet.body.norms is not None:
            raise ValueError("chunked hyperfan init is not applicable with use_batch_norm=True "
                             "(batch norm removes the chunk-embedding variance)")
        if self._cond_chunk_embs and self.cond_chunk_emb_list is None:
            raise ValueError("chunk embeddings are not held (no_cond_weights=True)")
        g = self._generator if generator is None else make_generator(generator)
        meta = hf.infer_meta(self._target_shapes, mnet)
        tvars = hf.target_variances(self._target_shapes, meta, method, use_xavier)
        overrides = [None] * len(tvars)
        if isinstance(target_vars, dict):
            overrides = [target_vars.get(m["name"]) for m in meta]
        elif target_vars is not None:
            if len(target_vars) != len(tvars):
                raise ValueError("target_vars must be a dict or a list of len(target_shapes)")
            overrides = list(target_vars)
        tvars = [o if o is not None else (t if t is not None else 1.0)
                 for o, t in zip(overrides, tvars)]
        chunk_vars = hf.chunk_variances(self._target_shapes, tvars, self._chunk_size)
        hnet.init_hidden_fan_in(g)
        head_w = hnet.body.weight_tensor(len(hnet.layers))
        n_c = self._chunk_emb_size
        n_s = self._cond_in_size + self._uncond_in_size
        shared_sum = self._cond_in_size * cond_var + self._uncond_in_size * uncond_var
        shared_mean = shared_sum / n_s if n_s else 0.0
        alpha = min(1.0, min(chunk_vars) / shared_mean) if shared_mean > 0 else 1.0
        hf.uniform_(head_w, 0.0, alpha / head_w.shape[1], g)
        if hnet.body.linears[-1].bias is not None:
            nn.init.zeros_(hnet.body.linears[-1].bias)
        c_vars = [((n_c + n_s) * v / alpha - shared_sum) / n_c for v in chunk_vars]
        n_clipped = sum(cv < eps for cv in c_vars)
        if n_clipped:
            warnings.warn(
                f"{n_clipped}/{len(c_vars)} chunk-embedding variances were clipped to {eps}: "
                f"use a shared input variance below {(n_c + n_s) * min(chunk_vars) / n_s:.3g}",
                stacklevel=2)
        c_vars = [max(eps, cv) for cv in c_vars]
        sets = list(self.cond_chunk_emb_list) if self._cond_chunk_embs else [self.chunk_embs]
        with torch.no_grad():
            for embs in sets:
                for j, cv in enumerate(c_vars):
                    if cemb_normal_init:
                        embs[j].normal_(0.0, math.sqrt(cv), generator=g)
                    else:
                        hf.uniform_(embs[j], 0.0, cv, g)
        return chunk_vars

