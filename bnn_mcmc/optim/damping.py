r"""Levenberg-Marquardt adaptation of an extra damping of the FishLeg step.

Every ``DAMPING_EVERY`` steps (default: every step) the step :math:`\Delta = -\eta Q m`
is checked against the quadratic model it comes from: on one batch with the data's own
targets,

.. math:: \rho = \frac{\ell(\theta + \Delta) - \ell(\theta)}
               {\nabla\ell(\theta)^\top \Delta + \tfrac12 \Delta^\top F \Delta},

the reduction ratio of Levenberg-Marquardt (Moré, 1978), as K-FAC uses it for its damping
(Martens & Grosse, 2015, §6.5), with :math:`F \Delta` a curvature product at model-drawn
targets.  The damping it adapts is an extra :math:`\delta \ge 0` applied to the step
only, in Jacobi form: :math:`\Delta_i = -\eta\,(Q m)_i / (1 + \delta\, Q_{ii})`, an
approximation of :math:`-\eta\,(Q^{-1} + \delta I)^{-1} m` that shrinks the step most
where :math:`Q` is large (directions of little curvature, where the Fisher model of a
nonlinear network is trusted least).  :math:`Q` itself keeps learning
:math:`(F + \gamma I)^{-1}` with the fixed :math:`\gamma`, so the adaptation acts at
once instead of after the auxiliary problem has caught up.

A poor model (:math:`\rho < 1/4`) multiplies :math:`\delta` by 3 (starting from
:math:`\gamma`), a good one (:math:`\rho > 3/4`) by 0.7 (to 0 below :math:`10^{-3}
\gamma`); a step that raises the loss or makes it non-finite is undone and multiplies
:math:`\delta` by 10; a step that is not a descent direction of the quadratic model on
the check batch is kept but counts as a poor model (x3).  (Undoing such steps, as a first
version did, stalled one linear-regression seed of five at 0.29; ignoring them let the
digits MLP diverge on two seeds of three.)  A divergence guard covers that case: a step
after which the check batch's loss exceeds both its value before the step and the first
step's check loss is undone whatever the model predicted, multiplies :math:`\delta` by 10,
and the optimiser zeroes its running average of the gradient (which carries the bad
direction).  Without it one digits seed of three left the basin at step 3 (loss 1.9 to
1381) and stalled at 2.47; with it all three reach 0.001-0.01.  :math:`\delta` is capped
at ``ceiling`` (1e8) times :math:`\gamma`.  On linear and logistic regression the model is
exact (the Fisher is the Hessian), so :math:`\delta` moves only through minibatch noise.
The factors were measured on the problems of ``benchmarks/bench_fishleg.py``; the
references leave them open.

References
----------
Moré, J. J. (1978). The Levenberg-Marquardt algorithm: implementation and theory.
*Numerical Analysis*, LNM 630.
Martens, J., Grosse, R. (2015). Optimizing neural networks with Kronecker-factored
approximate curvature. *ICML 2015*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DampingRule:
    """Multiplicative Levenberg-Marquardt rule for :math:`\\gamma` (module docstring)."""

    low: float = 0.25
    high: float = 0.75
    up: float = 3.0
    down: float = 0.7
    reject: float = 10.0
    ceiling: float = 1e8

    def update(
        self,
        delta: float,
        base: float,
        actual: float,
        predicted: float,
        diverged: bool = False,
    ) -> tuple[float, bool]:
        r"""Return (the new extra damping :math:`\delta`, whether to undo the step) from
        the actual and the predicted change of the loss; ``base`` (the auxiliary
        damping :math:`\gamma`) is the first non-zero :math:`\delta`, and
        :math:`\delta` never exceeds ``ceiling`` times it.  ``diverged`` (the check
        batch's loss rose above its value at the first step) undoes the step whatever
        the model predicted."""
        new, undo = self._rule(delta, base, actual, predicted, diverged)
        return min(new, self.ceiling * base), undo

    def _rule(
        self, delta: float, base: float, actual: float, predicted: float, diverged: bool
    ) -> tuple[float, bool]:
        if diverged or not math.isfinite(actual):
            return max(delta, base) * self.reject, True
        if not predicted < 0:  # not a descent direction on this batch: distrust, keep it
            return max(delta, base) * self.up, False
        rho = actual / predicted
        if rho < 0:
            return max(delta, base) * self.reject, True
        if rho < self.low:
            return max(delta, base) * self.up, False
        if rho > self.high:
            return delta * self.down if delta > base * 1e-3 else 0.0, False
        return delta, False
