r"""Evaluation of a potential :math:`U(w) = -\log p(w \mid \mathcal D)` and its gradient.

All kernels go through :class:`Potential`, which

* computes :math:`U` and :math:`\nabla U` with one reverse pass,
* counts evaluations (so tests and benchmarks can check the gradient budget),
* turns numerical failure into an infinite energy: a non-finite value, or an
  exception that signals a numerical problem (a singular matrix in a
  Cholesky factorisation, say), becomes :math:`U = +\infty`, which the kernels
  treat as a divergent, rejected transition.

The first evaluation (at a chain's starting point) is strict instead: a
non-scalar, non-finite or gradient-free potential raises a clear error there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

#: Exceptions raised by torch for numerical (not programming) failures.
NUMERICAL_ERRORS: tuple[type[BaseException], ...] = (
    torch.linalg.LinAlgError,
    ArithmeticError,
)


@dataclass
class PotentialValue:
    """A position with its potential (float64 Python number) and gradient."""

    position: Tensor
    potential: float
    grad: Tensor | None

    @property
    def finite(self) -> bool:
        """Whether the evaluation succeeded with a finite energy."""
        return math.isfinite(self.potential)


class Potential:
    """A counted, failure-tolerant wrapper of a user's potential function.

    Parameters
    ----------
    func
        ``U(w) -> scalar tensor`` for a 1-D position ``w``.
    compile
        Evaluate :math:`U` and :math:`\nabla U` through
        ``torch.compile(torch.func.grad_and_value(func))``: one fused kernel per
        evaluation instead of an eager forward and backward pass (about 3× cheaper
        on small networks on a CPU), paid for by a compilation of several seconds
        at the first evaluation in each process.  Python control flow on tensor
        values still gives correct values (graph breaks and guards) but less speed.

    Attributes
    ----------
    num_grad_evals : int
        Number of evaluations of :math:`U` together with :math:`\\nabla U`.
    num_evals : int
        Number of evaluations of :math:`U` alone (Metropolis–Hastings).
    """

    def __init__(self, func: Callable[[Tensor], Tensor], compile: bool = False):
        if not callable(func):
            raise TypeError(
                f"pot_energy_func must be callable (w -> scalar tensor); got {type(func).__name__}."
            )
        self.func = func
        self.num_grad_evals = 0
        self.num_evals = 0
        self._compiled = None
        if compile:
            fused = torch.func.grad_and_value(lambda w: func(w).reshape(()))
            self._compiled = torch.compile(fused, dynamic=False)

    def value_and_grad(self, position: Tensor) -> PotentialValue:
        """Return :math:`U(w)` and :math:`\\nabla U(w)`; failures give ``U = inf``."""
        self.num_grad_evals += 1
        if self._compiled is not None:
            return self._compiled_value_and_grad(position)
        w = position.detach().requires_grad_(True)
        try:
            if torch.is_grad_enabled():
                u = self.func(w)
            else:
                with torch.enable_grad():
                    u = self.func(w)
            value = float(u.detach())
            if not math.isfinite(value):
                return PotentialValue(position, math.inf, None)
            (grad,) = torch.autograd.grad(u, w)
        except NUMERICAL_ERRORS:
            return PotentialValue(position, math.inf, None)
        # A non-finite gradient with a finite U is not checked here (that would cost a
        # reduction per step): it makes the next momentum, hence the energy, non-finite,
        # which the kernels already treat as a divergence.
        return PotentialValue(position, value, grad)

    def _compiled_value_and_grad(self, position: Tensor) -> PotentialValue:
        try:
            grad, u = self._compiled(position.detach())
            value = float(u)
        except NUMERICAL_ERRORS:
            return PotentialValue(position, math.inf, None)
        if not math.isfinite(value):
            return PotentialValue(position, math.inf, None)
        return PotentialValue(position, value, grad)

    def value(self, position: Tensor) -> float:
        """Return :math:`U(w)` without a gradient; failures give ``inf``."""
        self.num_evals += 1
        try:
            with torch.no_grad():
                u = float(self.func(position))
        except NUMERICAL_ERRORS:
            return math.inf
        return u if math.isfinite(u) else math.inf

    def check_initial(self, position: Tensor, need_grad: bool = True) -> PotentialValue:
        """Evaluate at a chain's starting point and raise on anything unusable.

        Raises
        ------
        TypeError
            If the potential does not return a tensor.
        ValueError
            If it returns a non-scalar or non-finite value, or has no gradient
            path to the position.
        """
        w = position.detach().requires_grad_(need_grad)
        with torch.enable_grad() if need_grad else torch.no_grad():
            u = self.func(w)
        if not isinstance(u, Tensor):
            raise TypeError(
                "pot_energy_func must return a torch scalar tensor; got "
                f"{type(u).__name__}. Wrap the value with torch.as_tensor if needed."
            )
        if u.numel() != 1:
            raise ValueError(
                "pot_energy_func must return a scalar (the potential energy of the whole "
                f"dataset); got a tensor of shape {tuple(u.shape)}. Sum over data points."
            )
        if not bool(torch.isfinite(u)):
            raise ValueError(
                f"pot_energy_func returned {float(u.detach())} at the initial position; start the "
                "chain at a point of finite energy (e.g. a prior draw or a MAP estimate)."
            )
        if not need_grad:
            self.num_evals += 1
            return PotentialValue(position, float(u), None)
        if not u.requires_grad:
            raise ValueError(
                "pot_energy_func has no gradient path to the position: build the energy "
                "from the position tensor it receives with differentiable torch operations "
                "(no .detach(), .item() or numpy)."
            )
        (grad,) = torch.autograd.grad(u.reshape(()), w, allow_unused=True)
        if grad is None:
            raise ValueError(
                "pot_energy_func does not depend on the position it receives; use the "
                "position argument inside the potential."
            )
        if self._compiled is not None:
            grad = self._first_compiled_grad(position, float(u.detach()), grad)
        if not bool(torch.isfinite(grad).all()):
            raise ValueError(
                "the gradient of pot_energy_func is not finite at the initial position; "
                "start the chain elsewhere."
            )
        self.num_grad_evals += 1
        return PotentialValue(position, float(u.detach()), grad)

    def _first_compiled_grad(self, position: Tensor, eager_u: float, eager_grad: Tensor):
        """Compile now (not mid-chain), and check the fused evaluation against eager autograd."""
        try:
            grad, u = self._compiled(position.detach())
        except Exception as err:  # torch.compile raises many error types
            raise ValueError(
                "compile_potential=True: torch.compile could not trace pot_energy_func "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "remove Python control flow on tensor values or use compile_potential=False."
            ) from err
        scale = max(1.0, abs(eager_u))
        if abs(float(u) - eager_u) > 1e-4 * scale or not torch.allclose(
            grad, eager_grad, rtol=1e-3, atol=1e-4 * float(eager_grad.abs().max().clamp(min=1))
        ):
            raise ValueError(
                "compile_potential=True: the compiled potential disagrees with eager autograd "
                "at the initial position; use compile_potential=False."
            )
        return grad
