r"""Structured chunked hypernetwork: architecture-aware chunks, one internal full
hypernetwork per chunk type.

Internal network :math:`i` produces ``num_per_chunk[i]`` chunks, each a list of tensors
with shapes ``chunk_shapes[i]``, from inputs :math:`[c_{ik}; e; z]` with learned chunk
embeddings :math:`c_{ik}` (:math:`k < K_i`).  ``assembly_fct`` turns the list of all chunks
into the target tensors, e.g. concatenating two chunks of shape ``[10, 5]`` into one
``[20, 5]`` tensor, or reusing templates for soft weight sharing (Savarese & Maire, 2019).
All samples and all chunks of one type go through their network as one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .formats import check_shapes, numel
from .hmlp import HMLP
from .interface import HyperNetInterface
from .rng import make_generator

_RESERVED = ("target_shapes", "uncond_in_size", "cond_in_size", "no_uncond_weights",
             "no_cond_weights", "num_cond_embs", "generator")


class StructuredHMLP(nn.Module, HyperNetInterface):
    """Structured chunked fully-connected hypernetwork.

    Parameters
    ----------
    target_shapes : list of list of int
        Shapes of the generated tensors.
    chunk_shapes : list of list of list of int
        ``chunk_shapes[i]`` are the target shapes of internal network ``i``.
    num_per_chunk : list of int
        How many chunks internal network ``i`` produces.
    chunk_emb_sizes : int or list of int
        Chunk-embedding size per internal network (``0`` allowed only where
        ``num_per_chunk[i] == 1``: no embedding).
    hmlp_kwargs : dict or list of dict
        Keyword arguments of each internal :class:`~bnn_mcmc.hnets.hmlp.HMLP` (e.g.
        ``layers``, ``activation_fn``); the keys ``target_shapes, uncond_in_size,
        cond_in_size, no_uncond_weights, no_cond_weights, num_cond_embs, generator`` are
        set by this class.
    assembly_fct : callable or None
        ``assembly_fct(list_of_chunks) -> list of tensors`` for **one sample**:
        ``list_of_chunks`` holds, for network 0's chunks, then network 1's, ..., a list
        of tensors of shapes ``s`` for ``s`` in ``chunk_shapes[i]``; it must return
        tensors of shapes ``target_shapes``.  A batch is assembled by
        :func:`torch.func.vmap` over the samples (a plain loop where ``vmap`` fails).
        ``None`` concatenates the chunks' tensors in order, which
        requires that sequence of shapes to equal ``target_shapes``.
    cond_chunk_embs : bool
        Chunk embeddings per condition (conditional) instead of shared (unconditional).
    uncond_in_size, cond_in_size, no_uncond_weights, no_cond_weights, num_cond_embs, \
generator
        As for :class:`~bnn_mcmc.hnets.hmlp.HMLP`.
    """

    def __init__(
        self,
        target_shapes: Sequence[Sequence[int]],
        chunk_shapes: Sequence[Sequence[Sequence[int]]],
        num_per_chunk: Sequence[int],
        chunk_emb_sizes: int | Sequence[int],
        hmlp_kwargs: dict | Sequence[dict],
        assembly_fct: Callable | None,
        cond_chunk_embs: bool = False,
        uncond_in_size: int = 0,
        cond_in_size: int = 8,
        verbose: bool = True,
        no_uncond_weights: bool = False,
        no_cond_weights: bool = False,
        num_cond_embs: int = 1,
        generator: torch.Generator | int | None = None,
    ) -> None:
        super().__init__()
        self._target_shapes = check_shapes(target_shapes)
        n = len(chunk_shapes)
        if n == 0:
            raise ValueError("chunk_shapes must list at least one chunk type")
        self._chunk_shapes = [check_shapes(cs, f"chunk_shapes[{i}]")
                              for i, cs in enumerate(chunk_shapes)]
        if len(num_per_chunk) != n or any(not isinstance(k, int) or k <= 0
                                          for k in num_per_chunk):
            raise ValueError("num_per_chunk must be positive ints, one per chunk_shapes entry")
        sizes = [chunk_emb_sizes] * n if isinstance(chunk_emb_sizes, int) else list(
            chunk_emb_sizes)
        if len(sizes) != n or any(not isinstance(e, int) or e < 0 for e in sizes):
            raise ValueError("chunk_emb_sizes must be a non-negative int or one per chunk type")
        for i, (k, e) in enumerate(zip(num_per_chunk, sizes)):
            if e == 0 and k > 1:
                raise ValueError(f"chunk_emb_sizes[{i}] = 0 needs num_per_chunk[{i}] = 1")
        kwargs = [dict(hmlp_kwargs)] * n if isinstance(hmlp_kwargs, dict) else [
            dict(kw) for kw in hmlp_kwargs]
        if len(kwargs) != n:
            raise ValueError("hmlp_kwargs must be a dict or one dict per chunk type")
        for kw in kwargs:
            bad = sorted(set(kw) & set(_RESERVED))
            if bad:
                raise ValueError(f"hmlp_kwargs may not set {bad}; use this class's arguments")
        if assembly_fct is not None and not callable(assembly_fct):
            raise TypeError("assembly_fct must be callable or None")
        if assembly_fct is None:
            seq = [s for cs, k in zip(self._chunk_shapes, num_per_chunk) for _ in range(k)
                   for s in cs]
            if seq != self._target_shapes:
                raise ValueError("assembly_fct=None needs the chunks' shapes, in order, to "
                                 "equal target_shapes; pass an assembly_fct")
        for name, v in (("uncond_in_size", uncond_in_size), ("cond_in_size", cond_in_size),
                        ("num_cond_embs", num_cond_embs)):
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        self._generator = make_generator(generator)
        self._num_per_chunk = list(num_per_chunk)
        self._chunk_emb_sizes = sizes
        self._assembly_fct = assembly_fct
        self._cond_chunk_embs = cond_chunk_embs
        self._uncond_in_size = uncond_in_size
        self._cond_in_size = cond_in_size
        self._no_uncond_weights = no_uncond_weights
        n_s = cond_in_size + uncond_in_size
        self.internal_hnets = nn.ModuleList(
            HMLP(cs, uncond_in_size=n_s, cond_in_size=e, no_uncond_weights=no_uncond_weights,
                 no_cond_weights=True, num_cond_embs=0, generator=self._generator,
                 **{"verbose": False, **kw})
            for cs, e, kw in zip(self._chunk_shapes, sizes, kwargs))
        ce_shapes = self.chunk_emb_shapes
        has_conds = cond_in_size > 0 or (cond_chunk_embs and ce_shapes)
        self._num_known_conds = num_cond_embs if has_conds else 0
        n_conds = self._num_known_conds
        self._uncond_shapes = [s for h in self.internal_hnets
                               for s in h.unconditional_param_shapes]
        if not cond_chunk_embs:
            self._uncond_shapes += ce_shapes
        self._cond_shapes = [[cond_in_size]] * (n_conds if cond_in_size > 0 else 0)
        if cond_chunk_embs:
            self._cond_shapes = self._cond_shapes + ce_shapes * n_conds

        def randn(shape):
            return nn.Parameter(torch.randn(*shape, generator=self._generator))

        self.chunk_embs = None
        self.cond_chunk_emb_list = None
        self.cond_embs = None
        if not cond_chunk_embs and not no_uncond_weights and ce_shapes:
            self.chunk_embs = nn.ParameterList(randn(s) for s in ce_shapes)
        if not no_cond_weights and n_conds > 0:
            if cond_in_size > 0:
                self.cond_embs = nn.ParameterList(randn([cond_in_size]) for _ in range(n_conds))
            if cond_chunk_embs and ce_shapes:
                self.cond_chunk_emb_list = nn.ParameterList(
                    randn(s) for _ in range(n_conds) for s in ce_shapes)
        self._report(verbose, "StructuredHMLP",
                     f"{len(self.internal_hnets)} internal networks, {sum(num_per_chunk)} chunks")

    def get_cond_in_emb(self, cond_id: int) -> nn.Parameter:
        """The held input embedding of condition ``cond_id``."""
        if self.cond_embs is None or not 0 <= cond_id < len(self.cond_embs):
            raise ValueError("no held condition embedding with this cond_id")
        return self.cond_embs[cond_id]

    @property
    def chunk_emb_shapes(self) -> list:
        """``[K_i, E_i]`` for every internal network with ``E_i > 0``."""
        return [[k, e] for k, e in zip(self._num_per_chunk, self._chunk_emb_sizes) if e > 0]

    @property
    def num_chunks(self) -> int:
        """Total number of chunks, ``sum(num_per_chunk)``."""
        return sum(self._num_per_chunk)

    @property
    def cond_chunk_embs(self) -> bool:
        """Whether chunk embeddings are per condition."""
        return self._cond_chunk_embs

    @property
    def unconditional_params(self) -> list | None:
        if self._no_uncond_weights:
            return None
        params = [p for h in self.internal_hnets for p in h.unconditional_params]
        return params + list(self.chunk_embs or [])

    @property
    def conditional_params(self) -> list | None:
        params = list(self.cond_embs or []) + list(self.cond_chunk_emb_list or [])
        return params or None

    def get_chunk_embs(self, cond_id: int | None = None) -> list:
        """Held chunk embeddings (one tensor per entry of :attr:`chunk_emb_shapes`)."""
        m = len(self.chunk_emb_shapes)
        if self._cond_chunk_embs:
            if self.cond_chunk_emb_list is None or cond_id is None \
                    or not 0 <= cond_id < self._num_known_conds:
                raise ValueError("cond_chunk_embs=True: pass a valid cond_id of a held set")
            return list(self.cond_chunk_emb_list)[cond_id * m:(cond_id + 1) * m]
        if cond_id is not None:
            raise ValueError("cond_id is only used with cond_chunk_embs=True")
        return list(self.chunk_embs or [])

    def forward(self, uncond_input=None, cond_input=None, cond_id=None, weights=None,
                distilled_params=None, condition=None, ret_format="squeezed"):
        """Generate target tensors; see :meth:`HyperNetInterface.forward`.

        ``weights`` may be a dict with the extra key ``'chunk_embs'``: a list of
        ``(B, K_i, E_i)`` tensors following :attr:`chunk_emb_shapes` (only with
        ``cond_chunk_embs=True``, exclusive with ``cond_id``).
        """
        self._check_unused(distilled_params, condition)
        uw, cw, extra = self._split_weights(weights)
        if set(extra) - {"chunk_embs"}:
            raise ValueError(f"unknown weights keys {sorted(set(extra) - {'chunk_embs'})}")
        ce_shapes = self.chunk_emb_shapes
        n_ci = self._num_known_conds if self._cond_in_size > 0 else 0
        cond_in = cw[:n_ci] if cw is not None else list(self.cond_embs or [])
        shared = None
        if self._cond_in_size + self._uncond_in_size > 0:
            shared = self._shared_input(uncond_input, cond_input, cond_id, cond_in)
        n_int = [len(h.unconditional_param_shapes) for h in self.internal_hnets]
        internal_w = [None] * len(n_int)
        if uw is not None:
            bounds = [sum(n_int[:i]) for i in range(len(n_int) + 1)]
            internal_w = [uw[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        elif self._no_uncond_weights:
            raise ValueError("no_uncond_weights=True: pass weights={'uncond_weights': [...]}")
        if self._cond_chunk_embs and ce_shapes:
            embs = self._cond_chunk_batch(cond_id, extra, cw, n_ci)
        else:
            if "chunk_embs" in extra:
                raise ValueError("weights['chunk_embs'] needs cond_chunk_embs=True")
            held = uw[sum(n_int):] if uw is not None else list(self.chunk_embs or [])
            embs = [e.unsqueeze(0) for e in held]
        return self._format_output(self._generate(shared, embs, internal_w), ret_format)

    def _cond_chunk_batch(self, cond_id, extra: dict, cw, n_ci: int) -> list:
        ce_shapes = self.chunk_emb_shapes
        if "chunk_embs" in extra:
            if cond_id is not None:
                raise ValueError("give either weights['chunk_embs'] or cond_id, not both")
            embs = list(extra["chunk_embs"])
            if len(embs) != len(ce_shapes) or any(
                    e.dim() != 3 or list(e.shape[1:]) != s for e, s in zip(embs, ce_shapes)):
                raise ValueError(f"weights['chunk_embs'] must be tensors (B, *s) for s in "
                                 f"{ce_shapes}")
            return embs
        flat = cw[n_ci:] if cw is not None else list(self.cond_chunk_emb_list or [])
        if not flat:
            raise ValueError("no chunk embeddings held: pass weights['chunk_embs']")
        m = len(ce_shapes)
        n_conds = len(flat) // m
        if cond_id is None:
            if n_conds != 1:
                raise ValueError(f"{n_conds} conditions are held: pass cond_id")
            cond_id = 0
        ids = [cond_id] if isinstance(cond_id, int) else list(cond_id)
        if any(not isinstance(i, int) or not 0 <= i < n_conds for i in ids):
            raise ValueError(f"cond_id entries must be ints in [0, {n_conds})")
        return [torch.stack([flat[i * m + j] for i in ids]) for j in range(m)]

    def _assemble(self, chunks: list, b: int) -> list:
        """Apply the per-sample ``assembly_fct`` to every sample of the batch: vectorised
        by :func:`torch.func.vmap`, or sample by sample where ``vmap`` cannot trace it."""
        fct = self._assembly_fct
        try:
            return list(torch.func.vmap(lambda c: list(fct(c)))(chunks))
        except (RuntimeError, ValueError, TypeError):
            per = [list(fct([[t[i] for t in chunk] for chunk in chunks])) for i in range(b)]
            return [torch.stack([p[k] for p in per]) for k in range(len(per[0]))]

    def _generate(self, shared, embs: list, internal_w: list) -> torch.Tensor:
        sizes = [shared.shape[0]] if shared is not None else []
        sizes += [e.shape[0] for e in embs]
        b = max(sizes + [1])
        if any(s not in (1, b) for s in sizes):
            raise ValueError("batch sizes of inputs and chunk embeddings differ")
        chunks: list[list[torch.Tensor]] = []
        it = iter(embs)
        for hnet, k, e_size, cs, w in zip(self.internal_hnets, self._num_per_chunk,
                                          self._chunk_emb_sizes, self._chunk_shapes,
                                          internal_w):
            parts = [next(it).expand(b, -1, -1)] if e_size > 0 else []
            if shared is not None:
                parts.append(shared.unsqueeze(1).expand(b, k, -1))
            x = torch.cat(parts, dim=2).reshape(b * k, -1)
            out = hnet.forward_flat(x, w).reshape(b, k, -1)
            pieces = torch.split(out, [numel(s) for s in cs], dim=2)
            for j in range(k):
                chunks.append([p[:, j].reshape(b, *s) for p, s in zip(pieces, cs)])
        if self._assembly_fct is None:
            tensors = [t for chunk in chunks for t in chunk]
        else:
            tensors = self._assemble(chunks, b)
        if len(tensors) != len(self._target_shapes) or any(
                list(t.shape) != [b, *s] for t, s in zip(tensors, self._target_shapes)):
            raise ValueError("assembly_fct must return, per sample, tensors of shapes "
                             "target_shapes")
        return torch.cat([t.reshape(b, -1) for t in tensors], dim=1)
