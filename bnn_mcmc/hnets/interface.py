r"""Common interface of hypernetworks.

A hypernetwork :math:`h_\theta` maps an input :math:`x` to the parameters
:math:`w = h_\theta(x)` of a main network (Ha et al., 2016).  The input is the
concatenation :math:`x = [e; z]` of a *conditional* part :math:`e` (e.g. a task or
condition embedding, of size ``cond_in_size``) and an *unconditional* part :math:`z`
(e.g. base noise of an implicit distribution, of size ``uncond_in_size``).

The hypernetwork's own parameters split into *unconditional* parameters :math:`\theta`
(shared by all conditions) and *conditional* parameters (e.g. one embedding per known
condition).  Each group may be held by the module or supplied to :meth:`forward` through
``weights`` (e.g. when the hypernetwork's parameters are themselves generated or sampled).

References
----------
Ha, D., Dai, A. & Le, Q. V. (2016). HyperNetworks. arXiv:1609.09106.
von Oswald, J. et al. (2020). Continual learning with hypernetworks. ICLR.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from .formats import check_format, from_flattened, numel, to_flattened


class HyperNetInterface(ABC):
    """Abstract interface shared by every hypernetwork of :mod:`bnn_mcmc.hnets`.

    Subclasses are :class:`torch.nn.Module` instances that set, in their constructor,
    ``_target_shapes`` (list of shapes), ``_uncond_in_size``, ``_cond_in_size``,
    ``_uncond_shapes`` / ``_cond_shapes`` (shapes of the unconditional / conditional
    parameters, held or not) and ``_num_known_conds``, and that implement
    :meth:`forward`, :attr:`unconditional_params` and :attr:`conditional_params`.
    """

    _target_shapes: list
    _uncond_in_size: int
    _cond_in_size: int
    _uncond_shapes: list
    _cond_shapes: list
    _num_known_conds: int

    @property
    def target_shapes(self) -> list:
        """Shapes of the generated tensors (e.g. a main network's ``param_shapes``)."""
        return [list(s) for s in self._target_shapes]

    @property
    def num_outputs(self) -> int:
        r"""Number of generated scalars, :math:`N = \sum_k \prod_j s_{kj}`."""
        return sum(numel(s) for s in self._target_shapes)

    @property
    def uncond_in_size(self) -> int | None:
        """Size of the unconditional input ``z`` (``None`` if not fixed)."""
        return self._uncond_in_size

    @property
    def cond_in_size(self) -> int:
        """Size of the conditional input embedding ``e``."""
        return self._cond_in_size

    @property
    def unconditional_param_shapes(self) -> list:
        """Shapes of all unconditional parameters, whether held internally or not."""
        return [list(s) for s in self._uncond_shapes]

    @property
    def conditional_param_shapes(self) -> list:
        """Shapes of all conditional parameters, whether held internally or not."""
        return [list(s) for s in self._cond_shapes]

    @property
    def param_shapes(self) -> list:
        """``unconditional_param_shapes`` followed by ``conditional_param_shapes``."""
        return self.unconditional_param_shapes + self.conditional_param_shapes

    @property
    def num_known_conds(self) -> int:
        """Number of discrete conditions whose embeddings are held internally."""
        return self._num_known_conds

    @property
    @abstractmethod
    def unconditional_params(self) -> list | None:
        """Internally held unconditional parameters, or ``None`` if supplied externally."""

    @property
    @abstractmethod
    def conditional_params(self) -> list | None:
        """Internally held conditional parameters, or ``None`` if there are none."""

    @property
    def internal_params(self) -> list:
        """All internally held parameters: unconditional then conditional."""
        return list(self.unconditional_params or []) + list(self.conditional_params or [])

    @property
    def num_params(self) -> int:
        """Number of scalars in all parameters (:attr:`param_shapes`), held or not."""
        return sum(numel(s) for s in self.param_shapes)

    @property
    def num_internal_params(self) -> int:
        """Number of scalars in the internally held parameters."""
        return sum(p.numel() for p in self.internal_params)

    @property
    def unconditional_param_shapes_ref(self) -> list:
        """Index in :attr:`param_shapes` of every unconditional parameter shape."""
        return list(range(len(self._uncond_shapes)))

    @property
    def conditional_param_shapes_ref(self) -> list:
        """Index in :attr:`param_shapes` of every conditional parameter shape."""
        n_u = len(self._uncond_shapes)
        return list(range(n_u, n_u + len(self._cond_shapes)))

    @property
    def unconditional_params_ref(self) -> list | None:
        """Index in :attr:`internal_params` of every held unconditional parameter
        (``None`` when none is held): ``internal_params[ref[i]] is
        unconditional_params[i]``."""
        held = self.unconditional_params
        return None if held is None else list(range(len(held)))

    @property
    def conditional_params_ref(self) -> list | None:
        """Index in :attr:`internal_params` of every held conditional parameter."""
        held = self.conditional_params
        if held is None:
            return None
        n_u = len(self.unconditional_params or [])
        return list(range(n_u, n_u + len(held)))

    def _meta_names(self) -> tuple[list, list]:
        """(name, layer) of every unconditional and every conditional parameter shape.

        The default names tensors with two or more dimensions ``'weight'``, 1-D tensors
        of conditional parameters ``'embedding'`` and other 1-D tensors ``'bias'``;
        subclasses that know better override it.
        """
        unc = [("weight" if len(s) >= 2 else "bias", -1) for s in self._uncond_shapes]
        cond = [("embedding", -1) for _ in self._cond_shapes]
        return unc, cond

    @property
    def param_shapes_meta(self) -> list[dict]:
        """One dict per entry of :attr:`param_shapes`: ``'name'`` (``'weight'``,
        ``'bias'``, ``'bn_scale'``, ``'bn_shift'`` or ``'embedding'``), ``'index'``
        (position in :attr:`internal_params`, ``-1`` if not held) and ``'layer'`` (layer
        of the hypernetwork the tensor belongs to, ``-1`` if none)."""
        unc, cond = self._meta_names()
        u_ref = self.unconditional_params_ref
        c_ref = self.conditional_params_ref
        out = []
        for k, (name, layer) in enumerate(unc):
            out.append({"name": name, "index": -1 if u_ref is None else u_ref[k],
                        "layer": layer})
        for k, (name, layer) in enumerate(cond):
            out.append({"name": name, "index": -1 if c_ref is None else c_ref[k],
                        "layer": layer})
        return out

    @property
    def hyper_shapes_learned(self) -> list | None:
        """Shapes of the parameters that are not held and must come through ``weights``
        (e.g. from another hypernetwork); ``None`` when every parameter is held."""
        ref = self.hyper_shapes_learned_ref
        if ref is None:
            return None
        shapes = self.param_shapes
        return [shapes[i] for i in ref]

    @property
    def hyper_shapes_learned_ref(self) -> list | None:
        """Index in :attr:`param_shapes` of every shape of :attr:`hyper_shapes_learned`."""
        ref = []
        if self.unconditional_params is None:
            ref += self.unconditional_param_shapes_ref
        if self.conditional_params is None:
            ref += self.conditional_param_shapes_ref
        return ref or None

    @property
    def hyper_shapes_distilled(self) -> None:
        """Shapes of distillation targets: none for the networks of this package."""
        return None

    @property
    def has_bias(self) -> bool:
        """Whether the linear layers have biases."""
        return bool(getattr(self, "_use_bias", True))

    @property
    def has_fc_out(self) -> bool:
        """Whether the output layer is fully connected (true for the MLP hypernetworks)."""
        return True

    @property
    def mask_fc_out(self) -> bool:
        """Whether the fully-connected output can be masked (outputs are independent
        heads): true."""
        return True

    @property
    def has_linear_out(self) -> bool:
        """Whether the output layer is linear (no activation after it): true."""
        return True

    def distillation_targets(self) -> None:
        """Targets to distil after training (e.g. for continual learning): none here,
        batch-norm statistics live in :class:`~bnn_mcmc.bnn.BatchNormLayer` checkpoints."""
        return None

    def get_task_emb(self, task_id: int):
        """Deprecated alias of ``conditional_params[task_id]``."""
        warnings.warn("get_task_emb is deprecated: use conditional_params[task_id]",
                      DeprecationWarning, stacklevel=2)
        params = self.conditional_params
        if params is None or not 0 <= task_id < len(params):
            raise ValueError("no held conditional parameter with this task_id")
        return params[task_id]

    def get_task_embs(self) -> list | None:
        """Deprecated alias of :attr:`conditional_params`."""
        warnings.warn("get_task_embs is deprecated: use conditional_params",
                      DeprecationWarning, stacklevel=2)
        return self.conditional_params

    def _summary(self, kind: str, details: str = "") -> str:
        """One-paragraph description printed by ``verbose=True`` constructors."""
        held = self.num_internal_params
        text = (f"{kind} hypernetwork: {self.num_outputs} outputs in "
                f"{len(self._target_shapes)} tensors")
        if details:
            text += f", {details}"
        text += (f"; {self.num_params} parameters ({held} held internally, "
                 f"{self.num_params - held} external)")
        return text

    def _report(self, verbose: bool, kind: str, details: str = "") -> None:
        if verbose:
            print(self._summary(kind, details))

    @abstractmethod
    def forward(
        self,
        uncond_input: torch.Tensor | None = None,
        cond_input: torch.Tensor | None = None,
        cond_id: int | Sequence[int] | None = None,
        weights: list | dict | None = None,
        distilled_params: None = None,
        condition: int | None = None,
        ret_format: str = "squeezed",
    ):
        """Generate main-network parameters for a batch of inputs.

        Parameters
        ----------
        uncond_input : torch.Tensor, optional
            Unconditional inputs, shape ``(B, uncond_in_size)``.
        cond_input : torch.Tensor, optional
            Conditional inputs, shape ``(B, cond_in_size)``; exclusive with ``cond_id``.
        cond_id : int or list of int, optional
            Index (or ``B`` indices) of internally held condition embeddings.
        weights : list or dict, optional
            Hypernetwork parameters to use instead of the held ones: a list matching
            ``param_shapes`` or ``unconditional_param_shapes``, or a dict with keys
            ``'uncond_weights'`` and/or ``'cond_weights'``.
        distilled_params : None
            Part of the common signature; no network in this package has distillation
            targets, so it must be ``None``.
        condition : int, optional
            Which batch-norm statistics to use (``stats_id`` of the
            :class:`~bnn_mcmc.bnn.BatchNormLayer` of every hidden layer) in networks
            built with ``use_batch_norm=True``; must be ``None`` otherwise.
        ret_format : {'squeezed', 'sequential', 'flattened'}
            Output format, see :mod:`bnn_mcmc.hnets.formats`.
        """

    def convert_out_format(self, hnet_out, src_format: str, trgt_format: str):
        """Convert an output of this hypernetwork between any two formats.

        Parameters
        ----------
        hnet_out : torch.Tensor or list
            Output in format ``src_format``.
        src_format, trgt_format : {'squeezed', 'sequential', 'flattened'}
            Source and target formats.

        Returns
        -------
        torch.Tensor or list
            ``hnet_out`` in format ``trgt_format``.
        """
        check_format(trgt_format, "trgt_format")
        flat = to_flattened(hnet_out, src_format, self._target_shapes)
        return from_flattened(flat, trgt_format, self._target_shapes)

    def add_to_uncond_params(self, dparams: list, params: list | None = None) -> list:
        r"""Return :math:`\theta + \Delta\theta` elementwise.

        Parameters
        ----------
        dparams : list of torch.Tensor
            Perturbations :math:`\Delta\theta`, one per unconditional parameter.
        params : list of torch.Tensor, optional
            Parameters :math:`\theta` to perturb; defaults to :attr:`unconditional_params`.

        Returns
        -------
        list of torch.Tensor
            The sums; the held parameters are not modified.
        """
        if params is None:
            params = self.unconditional_params
            if params is None:
                raise ValueError(
                    "this hypernetwork holds no unconditional parameters; pass params="
                )
        if len(dparams) != len(params):
            raise ValueError(
                f"dparams has {len(dparams)} tensors but there are {len(params)} parameters"
            )
        out = []
        for p, d in zip(params, dparams):
            if p.shape != d.shape:
                raise ValueError(
                    f"dparams entry of shape {list(d.shape)} does not match {list(p.shape)}"
                )
            out.append(p + d)
        return out

    def _format_output(self, flat: torch.Tensor, ret_format: str):
        """Return the ``(B, N)`` output ``flat`` in ``ret_format``."""
        check_format(ret_format)
        return from_flattened(flat, ret_format, self._target_shapes)

    def _split_weights(self, weights) -> tuple[list | None, list | None, dict]:
        """Split ``weights`` into (unconditional list, conditional list, other dict keys)."""
        if weights is None:
            return None, None, {}
        if isinstance(weights, dict):
            extra = {k: v for k, v in weights.items()
                     if k not in ("uncond_weights", "cond_weights")}
            uw, cw = weights.get("uncond_weights"), weights.get("cond_weights")
        elif isinstance(weights, (list, tuple)):
            n_u, n_c = len(self._uncond_shapes), len(self._cond_shapes)
            if len(weights) == n_u + n_c:
                uw, cw = list(weights[:n_u]), list(weights[n_u:]) or None
            elif len(weights) == n_u:
                uw, cw = list(weights), None
            else:
                raise ValueError(
                    f"weights list has {len(weights)} tensors; expected {n_u} (unconditional) "
                    f"or {n_u + n_c} (all parameters)"
                )
            extra = {}
        else:
            raise TypeError("weights must be a list of tensors or a dict")
        for group, shapes, key in ((uw, self._uncond_shapes, "uncond_weights"),
                                   (cw, self._cond_shapes, "cond_weights")):
            if group is None:
                continue
            if len(group) != len(shapes) or any(
                list(t.shape) != list(s) for t, s in zip(group, shapes)
            ):
                raise ValueError(f"weights[{key!r}] must have shapes {shapes}")
        return uw, cw, extra

    @staticmethod
    def _check_unused(distilled_params, condition=None) -> None:
        if distilled_params is not None:
            raise ValueError("distilled_params must be None: this network has no distillation")
        if condition is not None:
            raise ValueError(
                "condition selects batch-norm statistics, but this network has no batch "
                "norm (use_batch_norm=False): pass condition=None"
            )

    def _shared_input(
        self,
        uncond_input: torch.Tensor | None,
        cond_input: torch.Tensor | None,
        cond_id,
        cond_embs: list | None,
    ) -> torch.Tensor:
        """Build the input ``x = [e; z]`` of shape ``(B, cond_in_size + uncond_in_size)``.

        ``cond_embs`` are the available condition embeddings (held or passed through
        ``weights``).  When exactly one is available and neither ``cond_input`` nor
        ``cond_id`` is given, it is used for every sample.
        """
        parts = []
        batch = None
        if self._uncond_in_size > 0:
            if uncond_input is None:
                raise ValueError(
                    f"uncond_input of shape (B, {self._uncond_in_size}) is required"
                )
            if uncond_input.dim() == 1:
                uncond_input = uncond_input.unsqueeze(0)
            if uncond_input.dim() != 2 or uncond_input.shape[1] != self._uncond_in_size:
                raise ValueError(
                    f"uncond_input must have shape (B, {self._uncond_in_size}), "
                    f"got {list(uncond_input.shape)}"
                )
            batch = uncond_input.shape[0]
        elif uncond_input is not None:
            raise ValueError("uncond_input given but uncond_in_size is 0")
        if self._cond_in_size > 0:
            e = self._cond_part(cond_input, cond_id, cond_embs)
            if batch is not None and e.shape[0] != batch:
                if e.shape[0] != 1:
                    raise ValueError(
                        f"batch sizes differ: {e.shape[0]} conditional vs {batch} "
                        "unconditional inputs"
                    )
                e = e.expand(batch, -1)
            parts.append(e)
        elif cond_input is not None or cond_id is not None:
            raise ValueError("cond_input/cond_id given but cond_in_size is 0")
        if self._uncond_in_size > 0:
            parts.append(uncond_input)
        if not parts:
            raise ValueError("this hypernetwork has no input (cond_in_size = uncond_in_size = 0)")
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def _cond_part(self, cond_input, cond_id, cond_embs) -> torch.Tensor:
        if cond_input is not None:
            if cond_id is not None:
                raise ValueError("give either cond_input or cond_id, not both")
            if cond_input.dim() == 1:
                cond_input = cond_input.unsqueeze(0)
            if cond_input.dim() != 2 or cond_input.shape[1] != self._cond_in_size:
                raise ValueError(
                    f"cond_input must have shape (B, {self._cond_in_size}), "
                    f"got {list(cond_input.shape)}"
                )
            return cond_input
        if not cond_embs:
            raise ValueError(
                "no condition embeddings are held: pass cond_input, or "
                "weights={'cond_weights': [...]} together with cond_id"
            )
        if cond_id is None:
            if len(cond_embs) != 1:
                raise ValueError(
                    f"{len(cond_embs)} condition embeddings are held: pass cond_id"
                )
            cond_id = 0
        ids = [cond_id] if isinstance(cond_id, int) else list(cond_id)
        for i in ids:
            if not isinstance(i, int) or not 0 <= i < len(cond_embs):
                raise ValueError(f"cond_id entries must be ints in [0, {len(cond_embs)})")
        return torch.stack([cond_embs[i] for i in ids])
