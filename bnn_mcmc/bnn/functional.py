r"""Any ``nn.Module`` as a function :math:`f(w, x)` of one flat weight vector.

MCMC moves a flat position :math:`w \in \mathbb R^P`; users have modules.  A
:class:`FunctionalNet` records the names, shapes and offsets of a module's parameters in
``module.named_parameters()`` order -- the order of
:func:`torch.nn.utils.parameters_to_vector` -- and evaluates the module with those
parameters replaced by views into ``w`` through :func:`torch.func.functional_call`, so
the module itself is never modified.  A batch of weight vectors ``(B, P)`` is evaluated
with :func:`torch.func.vmap`, in chunks of ``chunk_size`` draws to bound memory.

Buffers (e.g. batch-norm running statistics) are passed explicitly: by default the
module's own buffers, cast to the weights' dtype and device.  The module is evaluated in
eval mode unless ``train=True``; in train mode buffers are copied for every weight vector,
so running statistics are used as batch statistics would be but never written back.

References
----------
PyTorch documentation, ``torch.func`` (functorch): *Model ensembling* and
*Per-sample gradients* tutorials.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap


class FunctionalNet:
    """A module viewed as a function of a flat parameter vector.

    Parameters
    ----------
    module : nn.Module
        The network.  Its parameters define the layout of the flat vector; their current
        values are not used by :meth:`__call__`.
    chunk_size : int, optional
        Number of weight vectors evaluated at once by ``vmap`` for batched weights
        (``None``: all at once).
    train : bool
        Evaluate the module in training mode (e.g. batch statistics in batch norm,
        active dropout -- which then needs randomness and fails under ``vmap``).

    Attributes
    ----------
    names : list of str
        Parameter names in ``named_parameters()`` order.
    shapes : list of torch.Size
        Their shapes.
    offsets : list of int
        Start of each parameter in the flat vector (``offsets[-1]`` end is ``dim``).
    dim : int
        Length ``P`` of the flat vector.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    >>> fnet = FunctionalNet(net)
    >>> w = fnet.flatten()
    >>> torch.allclose(fnet(w, torch.ones(3, 2)), net(torch.ones(3, 2)))
    True
    """

    def __init__(self, module: nn.Module, chunk_size: int | None = None, train: bool = False):
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}.")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}.")
        self.module = module
        self.chunk_size = chunk_size
        self.train = bool(train)
        self.names: list[str] = []
        self.shapes: list[torch.Size] = []
        self.offsets: list[int] = []
        offset = 0
        for name, p in module.named_parameters():
            self.names.append(name)
            self.shapes.append(p.shape)
            self.offsets.append(offset)
            offset += p.numel()
        self.dim = offset
        self._numels = [s.numel() for s in self.shapes]

    def __repr__(self) -> str:
        return f"FunctionalNet({type(self.module).__name__}, dim={self.dim})"

    def _check_flat(self, vec: Tensor, what: str = "weights") -> None:
        if not isinstance(vec, Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(vec).__name__}.")
        if vec.dim() == 0 or vec.shape[-1] != self.dim:
            raise ValueError(
                f"{what} must be a flat vector of length {self.dim} (the number of parameters "
                f"of {type(self.module).__name__}) or a batch (..., {self.dim}); got shape "
                f"{tuple(vec.shape)}."
            )

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        """Split ``vec`` of shape ``(..., dim)`` into ``{name: view of shape (..., *shape)}``."""
        self._check_flat(vec, "vec")
        lead = vec.shape[:-1]
        chunks = torch.split(vec, self._numels, dim=-1)
        return {
            name: c.reshape(*lead, *shape)
            for name, shape, c in zip(self.names, self.shapes, chunks, strict=True)
        }

    def flatten(self, params: Mapping[str, Tensor] | Iterable[Tensor] | None = None) -> Tensor:
        """Concatenate parameters into one flat vector.

        Parameters
        ----------
        params : mapping or iterable of Tensor, optional
            A ``{name: tensor}`` mapping (e.g. :meth:`unflatten`'s output or a state dict
            restricted to parameters), or tensors in ``named_parameters()`` order.  ``None``
            takes the module's current parameters (detached copy).

        Returns
        -------
        Tensor
            Shape ``(dim,)``.
        """
        if params is None:
            tensors = [p.detach() for p in self.module.parameters()]
        elif isinstance(params, Mapping):
            missing = [n for n in self.names if n not in params]
            if missing:
                raise ValueError(f"params lacks the parameters {missing}.")
            tensors = [params[n] for n in self.names]
        else:
            tensors = list(params)
        if len(tensors) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} parameter tensors, got {len(tensors)}.")
        for name, shape, t in zip(self.names, self.shapes, tensors, strict=True):
            if t.shape != shape:
                raise ValueError(
                    f"parameter {name!r} must have shape {tuple(shape)}, got {tuple(t.shape)}."
                )
        return torch.cat([t.reshape(-1) for t in tensors]).clone()

    def buffers(self, like: Tensor) -> dict[str, Tensor]:
        """The module's buffers, floating ones cast to ``like``'s dtype and device."""
        return {
            name: b.to(dtype=like.dtype, device=like.device)
            if b.is_floating_point()
            else b.to(device=like.device)
            for name, b in self.module.named_buffers()
        }

    def _single(self, w: Tensor, x: Tensor, buffers: dict[str, Tensor]) -> Tensor:
        return functional_call(self.module, (self.unflatten(w), buffers), (x,), strict=True)

    def __call__(self, w: Tensor, x: Tensor) -> Tensor:
        """Evaluate the module at weights ``w`` on inputs ``x``.

        Parameters
        ----------
        w : Tensor
            Shape ``(dim,)`` or ``(B, dim)``.
        x : Tensor
            Module input, shared by all weight vectors.

        Returns
        -------
        Tensor
            The module output, with a leading ``B`` dimension for batched weights.
        """
        self._check_flat(w, "w")
        if w.dim() > 2:
            raise ValueError(f"w must have shape (dim,) or (B, dim); got {tuple(w.shape)}.")
        if isinstance(x, Tensor):
            if x.device != w.device:
                raise ValueError(
                    f"inputs are on device {x.device} but the weights on {w.device}; "
                    f"move them with inputs.to({str(w.device)!r})."
                )
            if x.is_floating_point() and x.dtype != w.dtype:
                raise TypeError(
                    f"inputs have dtype {x.dtype} but the weights {w.dtype}; cast one of them, "
                    "e.g. inputs.to(w.dtype)."
                )
        buffers = self.buffers(w)
        modes = [(m, m.training) for m in self.module.modules()]
        self.module.train(self.train)
        try:
            if w.dim() == 1:
                if self.train:  # private copies: running-stat updates are not written back
                    buffers = {k: v.clone() for k, v in buffers.items()}
                return self._single(w, x, buffers)
            if self.train and buffers:
                # Per-draw copies, so in-place running-stat updates stay inside vmap.
                batched = {k: v.expand(w.shape[0], *v.shape).clone() for k, v in buffers.items()}
                fn = vmap(
                    lambda wi, bi: self._single(wi, x, bi),
                    in_dims=(0, 0),
                    chunk_size=self.chunk_size,
                )
                return fn(w, batched)
            fn = vmap(lambda wi: self._single(wi, x, buffers), chunk_size=self.chunk_size)
            return fn(w)
        finally:
            for m, mode in modes:
                m.training = mode


class MainNetFunction:
    """A main network with ``forward(x, weights=...)`` (such as :class:`~bnn_mcmc.bnn.MLP`)
    seen as :math:`f(w, x)`.

    Such networks evaluate flat weights ``(P,)`` and batches ``(B, P)`` natively, so no
    ``functional_call`` is involved (this is the fast path used by the potentials).  A batch
    is evaluated ``chunk_size`` weight vectors at a time (``None``: all at once).
    """

    def __init__(self, net: nn.Module, chunk_size: int | None = None) -> None:
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}.")
        self.net = net
        self.chunk_size = chunk_size
        self.dim = int(net.num_params)

    def __repr__(self) -> str:
        return f"MainNetFunction({type(self.net).__name__}, dim={self.dim})"

    def __call__(self, w: Tensor, x: Tensor) -> Tensor:
        if not isinstance(w, Tensor) or w.dim() == 0 or w.shape[-1] != self.dim:
            shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(
                f"w must be a flat vector of length {self.dim} (the number of weights of "
                f"{type(self.net).__name__}) or a batch (B, {self.dim}); got {shape}."
            )
        if w.dim() == 1 or self.chunk_size is None or w.shape[0] <= self.chunk_size:
            return self.net(x, weights=w)
        return torch.cat([self.net(x, weights=c) for c in w.split(self.chunk_size)])


def as_function(
    net: nn.Module | FunctionalNet | MainNetFunction, chunk_size: int | None = None
) -> FunctionalNet | MainNetFunction:
    """View ``net`` as :math:`f(w, x)` with a ``dim`` attribute.

    Main networks with ``param_shapes`` / ``num_params`` and ``forward(x, weights)`` (our
    :class:`~bnn_mcmc.bnn.MLP`) are called directly; any other ``nn.Module`` is wrapped in
    a :class:`FunctionalNet`; an existing wrapper is returned unchanged (it keeps its own
    ``chunk_size``, so ``chunk_size`` must then be ``None``).
    """
    if isinstance(net, (FunctionalNet, MainNetFunction)):
        if chunk_size is not None:
            raise ValueError(
                f"net is already a {type(net).__name__}; set chunk_size on it instead of "
                "passing chunk_size= here."
            )
        return net
    if not isinstance(net, nn.Module):
        raise TypeError(
            f"net must be a torch.nn.Module or a FunctionalNet, got {type(net).__name__}."
        )
    if hasattr(net, "param_shapes") and hasattr(net, "num_params"):
        return MainNetFunction(net, chunk_size=chunk_size)
    return FunctionalNet(net, chunk_size=chunk_size)
