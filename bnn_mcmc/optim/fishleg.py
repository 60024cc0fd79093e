r"""FishLeg: natural-gradient steps with a learned inverse Fisher (Garcia et al., 2023).

FishLeg learns :math:`Q(\lambda) \approx (F + \gamma I)^{-1}`, the inverse damped Fisher,
directly, from the Legendre dual of the Fisher quadratic form: for any direction
:math:`u`, the auxiliary loss

.. math:: \mathcal A(\lambda; u) = \tfrac12\, u^\top Q(\lambda) (F + \gamma I) Q(\lambda) u
          - u^\top Q(\lambda) u

is minimised by :math:`Q = (F + \gamma I)^{-1}` whenever :math:`\mathbb E[uu^\top]` has full
rank (set the gradient with respect to :math:`Q` to zero).  The Fisher term is estimated
with targets :math:`\tilde y \sim p(y \mid f(x;\theta))` drawn from the model, for which
:math:`\mathbb E_{\tilde y}[\nabla^2_\theta \ell(\theta; x, \tilde y)] = F`:

* ``aux_loss='exact'``: :math:`v^\top F v` through a Hessian-vector product of the
  negative log-likelihood :math:`\ell` at :math:`\tilde y` (:math:`v = Q u`);
* ``aux_loss='finite_difference'``: the paper's form
  :math:`[\ell(\theta + \epsilon v) + \ell(\theta - \epsilon v) - 2\ell(\theta)] / 2\epsilon^2`,
  differentiated as a central difference of gradients.

Either way the gradient of :math:`\mathcal A` with respect to :math:`v` is
:math:`(F + \gamma I) v - u` and is pushed back to :math:`\lambda` by autograd; the
auxiliary parameters are updated with Adam.  Parameters then move along the
preconditioned running average of the gradient,
:math:`m \leftarrow \beta m + (1-\beta)(g + \text{wd}\,\theta)`,
:math:`\theta \leftarrow \theta - \eta\, Q(\lambda) m`.

References
----------
Garcia, J. R., Yan, F., Lengyel, G., Hennequin, G. (2023). Fisher-Legendre (FishLeg)
optimization of deep neural networks. *ICLR 2023*. https://openreview.net/forum?id=c9lAOPvQHS
Amari, S. (1998). Natural gradient works efficiently in learning. *Neural Computation* 10(2).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from ..kernels.kron_metric import KroneckerMetric
from .damping import DampingRule
from .kfac_start import damped_inverse_factors, kronecker_statistics
from .qblocks import DiagonalQ, KroneckerQ, QBlock, make_qblock, shape_qblocks

#: Layer types with a block of their own type (others' direct parameters go by shape).
SUPPORTED = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.LayerNorm)

Batch = tuple[Tensor, Tensor]

#: ``damping='auto'``: :math:`\gamma` starts at this times the mean diagonal entry of the
#: Fisher.
AUTO_DAMPING = 1e-3
#: ``damping='auto'``: steps between two Levenberg-Marquardt checks of the damping.
DAMPING_EVERY = 1


def _matches(name: str, patterns: Sequence[str]) -> bool:
    """``name`` equals a pattern, or fully matches a ``'re:<regex>'`` pattern."""
    for pat in patterns:
        if pat.startswith("re:"):
            if re.fullmatch(pat[3:], name):
                return True
        elif pat == name:
            return True
    return False


def _cycle(loader: Iterable) -> Iterable:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("aux_dataloader: yields no batches; pass a non-empty loader.")


class FishLeg(torch.optim.Optimizer):
    r"""The FishLeg optimiser, with a Kronecker/diagonal block :math:`Q(\lambda)` per layer.

    Parameters
    ----------
    model : nn.Module
        The network.  ``Linear`` and ``Conv2d`` layers get Kronecker blocks,
        ``BatchNorm2d`` and ``LayerNorm`` diagonal blocks; every other trainable
        parameter (and every layer not selected) takes a plain SGD step with momentum
        ``beta`` and learning rate ``fish_lr``.
    draw : callable or None
        ``draw(model, x) -> (x, y_tilde)`` with ``y_tilde ~ p(y | f(x))``.  ``None`` when
        ``likelihood`` is given (it is then built from the likelihood).
    nll : callable or None
        ``nll(model, (x, y)) -> scalar`` negative log-likelihood (summed over the batch;
        use the full data set, or rescale by N/B, if :math:`Q` is to approximate the
        full-data inverse Fisher, e.g. for :meth:`as_metric`).  ``None`` with ``likelihood``.
    aux_dataloader : iterable of (x, y)
        Batches for the auxiliary updates (cycled).
    likelihood : bnn_mcmc.bnn.likelihoods.Likelihood, optional
        Alternative to ``draw``/``nll``: :math:`\ell = ` ``likelihood.nll(model(x), y, extra)``
        and :math:`\tilde y` from ``likelihood.draw`` with ``generator``.  If it has
        parameters of its own (``num_extra_params > 0``, e.g. a learned noise log-scale),
        the optimiser owns them as :attr:`extra` (initialised at 0) with a diagonal
        :math:`Q` block; include ``opt.extra`` in your training loss.
    fish_lr : float
        Learning rate :math:`\eta`.
    damping : float or 'auto'
        'auto' (default): :math:`\gamma` = ``AUTO_DAMPING`` (1e-3) times the mean of the
        Hutchinson estimate of :math:`\operatorname{diag} F` at construction, so the
        setting does not depend on whether ``nll`` is a sum or a mean.  A float: fixed.
        Damping :math:`\gamma > 0` of the Fisher.  For a metric, set it to the prior
        precision: then :math:`Q \approx (F + \gamma I)^{-1}` is the Gauss-Newton
        posterior covariance.
    weight_decay : float
        L2 coefficient added to the gradient.
    beta : float
        Coefficient of the running average of the gradient, in ``[0, 1)``.  Default 0.5:
        with 0.9 the average lags the natural gradient (contraction at best
        :math:`\sqrt{0.9}` per step), and the linear regression took 116 steps instead of
        27 to Adam's final loss, for a lower final loss (0.0068 against 0.0086).
    update_aux_every : int
        One auxiliary update every ``update_aux_every`` steps (default 10: after the
        K-FAC warm start Q needs little correction, and one update per step cost 40 %
        of a step for the same final loss on the benchmark problems); if negative,
        ``-update_aux_every`` auxiliary updates at every step; 0 never (Q fixed).
    aux_lr, aux_betas, aux_eps
        Adam settings for the auxiliary parameters.
    full : bool
        Use the outer and inner diagonal rescalings in the Kronecker blocks.
    normalization : bool
        Normalise the direction :math:`u` to unit norm in the auxiliary loss, so that
        curvature is learned even when gradients are tiny.
    module_names, skip_names : sequence of str
        Modules given blocks: those named in ``module_names`` (all supported modules if
        empty) and not in ``skip_names``; a name starting with ``'re:'`` is a regular
        expression matched against the full module name.
    initialization : {'uniform', 'fan_in'}
        Initial :math:`Q`: ``scale * I`` everywhere, or ``scale / n * I`` for a Kronecker
        block with ``n`` inputs per output (bias included).
    scale : float
        Initial scale of :math:`Q` (``1 / damping`` is a natural choice without warm-up,
        1 with it).
    warmup : int
        0: start from the scaled identity (SGD-like first steps).  Positive: run
        :meth:`warmup_aux` on ``warmup`` batches of ``warmup_data`` at construction.
    warmup_data : iterable of (x, y), optional
        Required when ``warmup > 0``.
    warmup_loss : callable, optional
        ``loss(model, (x, y))`` for the warm-up gradients (default: the nll).
    aux_loss : {'exact', 'finite_difference'}
        How the Fisher term of the auxiliary loss is evaluated (module docstring).
    generator : torch.Generator, optional
        Random source for :math:`\tilde y` when ``likelihood`` is given (required then).
    warm_start : {'kfac', 'fisher', 'identity'}
        'kfac' (default): Kronecker blocks whose layer is seen in a ``linear`` /
        ``conv2d`` call start at the K-FAC inverse :math:`(G + \tfrac{\sqrt\gamma}{\pi}
        I)^{-1} \otimes (\bar A + \pi\sqrt\gamma I)^{-1}`
        (:mod:`bnn_mcmc.optim.kfac_start`), the others as with 'fisher'.
        'fisher': :math:`Q_0 = \text{scale}\,(\widehat{\operatorname{diag} F}
        + \gamma)^{-1}` from ``warm_start_probes`` Hutchinson probes (exact curvature
        products at model-drawn targets).  Both are divided by the top eigenvalue of
        :math:`Q_0 (F + \gamma I)` (power iteration) when it exceeds 1, so the first
        steps cannot overshoot along correlated directions.  'identity': the paper's
        SGD-like start :math:`Q_0 = \text{scale}\, I`.  ``warmup > 0`` then replaces it by
        the squared-gradient start.
    warm_start_probes : int
        Hutchinson probes (one auxiliary batch each) for the warm start / auto damping.
    bias_correction : bool
        Divide the running average of the gradient by :math:`1 - \beta^t` (as Adam does),
        so the first steps are not shrunk by the zero-initialised average.
    adapt_damping : bool
        Check the step against its quadratic model every ``DAMPING_EVERY`` (1) steps on an
        auxiliary batch and adapt an extra Levenberg-Marquardt damping of the step
        (:mod:`bnn_mcmc.optim.damping`).  It costs one more gradient and curvature product
        per step, is exact (and inactive) on linear and logistic regression, and keeps
        nonlinear networks stable with the small automatic damping.

    Notes
    -----
    Defaults (``fish_lr=0.3``, ``beta=0.5``, ``aux_lr=1e-3``, one auxiliary update every
    10 steps, automatic and Levenberg-Marquardt-checked damping, K-FAC warm start, bias
    correction) were
    chosen on an ill-conditioned linear regression, a correlated-feature logistic
    regression and an MLP on scikit-learn's digits against Adam; the measurements are in
    the README's FishLeg section.  The paper leaves these open.  The learned factors act
    relative to the warm start (:meth:`KroneckerQ.factors`), so ``aux_lr`` is a relative
    step size.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from bnn_mcmc import FishLeg, GaussianLikelihood
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(32, 3, generator=g)
    >>> y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    >>> net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    >>> lik = GaussianLikelihood(tau_pred=1.0)
    >>> opt = FishLeg(net, None, None, [(x, y)], likelihood=lik, generator=g)
    >>> start = float(lik.nll(net(x), y).detach())
    >>> for _ in range(50):
    ...     opt.zero_grad(); lik.nll(net(x), y).backward(); opt.step()
    >>> float(lik.nll(net(x), y).detach()) < 0.7 * start
    True
    """

    def __init__(
        self,
        model: nn.Module,
        draw: Callable[[nn.Module, Tensor], Batch] | None,
        nll: Callable[[nn.Module, Batch], Tensor] | None,
        aux_dataloader: Iterable[Batch],
        likelihood=None,
        fish_lr: float = 0.3,
        damping: float | str = "auto",
        weight_decay: float = 1e-5,
        beta: float = 0.5,
        update_aux_every: int = 10,
        aux_lr: float = 1e-3,
        aux_betas: tuple[float, float] = (0.9, 0.999),
        aux_eps: float = 1e-8,
        full: bool = True,
        normalization: bool = False,
        module_names: Sequence[str] = (),
        skip_names: Sequence[str] = (),
        initialization: str = "uniform",
        scale: float = 1.0,
        warmup: int = 0,
        warmup_data: Iterable[Batch] | None = None,
        warmup_loss: Callable[[nn.Module, Batch], Tensor] | None = None,
        aux_loss: str = "exact",
        generator: torch.Generator | None = None,
        warm_start: str = "kfac",
        warm_start_probes: int = 8,
        bias_correction: bool = True,
        adapt_damping: bool = True,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        if damping != "auto":
            if not (isinstance(damping, (int, float)) and 0 < damping < math.inf):
                raise ValueError(
                    f"damping must be 'auto' or a positive finite number, got {damping!r}."
                )
        if warm_start not in ("kfac", "fisher", "identity"):
            raise ValueError(
                f"warm_start must be 'kfac', 'fisher' or 'identity', got {warm_start!r}."
            )
        for name, val in (("fish_lr", fish_lr), ("aux_lr", aux_lr), ("scale", scale)):
            if not (isinstance(val, (int, float)) and 0 < val < math.inf):
                raise ValueError(f"{name} must be a positive finite number, got {val!r}.")
        if not 0 <= beta < 1:
            raise ValueError(f"beta must lie in [0, 1), got {beta}.")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {weight_decay}.")
        if isinstance(update_aux_every, bool) or not isinstance(update_aux_every, int):
            raise TypeError(f"update_aux_every must be an int, got {update_aux_every!r}.")
        if initialization not in ("uniform", "fan_in"):
            raise ValueError(
                f"initialization must be 'uniform' or 'fan_in', got {initialization!r}."
            )
        if aux_loss not in ("exact", "finite_difference"):
            raise ValueError(f"aux_loss must be 'exact' or 'finite_difference', got {aux_loss!r}.")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be a non-negative int, got {warmup!r}.")
        if (warmup > 0) != (warmup_data is not None):
            raise ValueError(
                "warmup_data: pass it exactly when warmup > 0 (the number of warm-up batches)."
            )
        if warmup == 0 and warmup_loss is not None:
            raise ValueError("warmup_loss: only used when warmup > 0.")
        self.model, self.likelihood = model, likelihood
        self.damping = 1.0 if damping == "auto" else float(damping)
        self.full, self.normalization = bool(full), normalization
        self.bias_correction = bool(bias_correction)
        self.update_aux_every, self.aux_loss = update_aux_every, aux_loss
        self.initialization, self.scale = initialization, float(scale)
        self.generator = generator
        self._init_likelihood(draw, nll, likelihood, generator, model)

        self.blocks: dict[str, QBlock] = {}
        self._block_modules: dict[str, nn.Module | None] = {}
        for pats, arg in ((module_names, "module_names"), (skip_names, "skip_names")):
            if isinstance(pats, str):
                raise TypeError(
                    f"{arg} must be a sequence of names, not a single string; "
                    f"wrap it in a list: [{pats!r}]."
                )
        names = [n for n, _ in model.named_modules()]
        for pat in (*module_names, *skip_names):
            if not pat.startswith("re:") and pat not in names:
                raise ValueError(
                    f"module_names/skip_names: no module named {pat!r} in the "
                    f"model; known modules: {names[1:]}."
                )
        for name, module in model.named_modules():
            if module_names and not _matches(name, module_names):
                continue
            if _matches(name, skip_names):
                continue
            block = make_qblock(module, full, self._block_scale(module, self.scale))
            if block is not None:
                self.blocks[name] = block
                self._block_modules[name] = module
            elif not isinstance(module, SUPPORTED):
                # parameters held directly (e.g. bnn_mcmc.bnn.MLP's ParameterList): by shape
                for pname, b in shape_qblocks(module, full, self.scale):
                    key = f"{name}.{pname}" if name else pname
                    self.blocks[key] = b
                    self._block_modules[key] = None
        if not self.blocks:
            raise ValueError(
                "FishLeg found no trainable parameters to precondition (check "
                "module_names / skip_names)."
            )
        if self.extra is not None:
            self.blocks["likelihood"] = DiagonalQ([self.extra], self.scale)
        covered = {id(p) for b in self.blocks.values() for p in b.params}
        fish = [p for b in self.blocks.values() for p in b.params]
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in covered]
        groups = [{"params": fish, "fishleg": True}]
        if rest:
            groups.append({"params": rest, "fishleg": False})
        super().__init__(groups, {"lr": float(fish_lr), "beta": beta, "weight_decay": weight_decay})
        self.aux_params = [q for b in self.blocks.values() for q in b.parameters()]
        self.aux_optimizer = torch.optim.Adam(
            self.aux_params, lr=aux_lr, betas=aux_betas, eps=aux_eps
        )
        self._aux_batches = _cycle(aux_dataloader)
        self._num_steps = 0
        self.damping_rule = DampingRule()
        self.num_rejected = 0
        self.num_diverged = 0
        self.reference_loss: float | None = None
        if damping == "auto" or warm_start != "identity":
            diag = self.fisher_diagonal(warm_start_probes)
            if damping == "auto":
                flat = torch.cat([d.reshape(-1) for db in diag for d in db])
                self.damping = max(float(AUTO_DAMPING * flat.mean()), 1e-12)
            if warm_start != "identity":
                self._warm_start(diag, warm_start == "kfac", warm_start_probes)
        if warmup > 0:
            self.warmup_aux(warmup_data, warmup_loss, self.scale, num_batches=warmup)
        self.extra_damping = 0.0
        self.damping_every = DAMPING_EVERY if adapt_damping else 0

    # -- set-up helpers ---------------------------------------------------------------
    def _init_likelihood(self, draw, nll, likelihood, generator, model) -> None:
        self.extra = None
        if likelihood is None:
            if draw is None or nll is None:
                raise ValueError("draw, nll: pass both callables, or pass likelihood= instead.")
            if generator is not None:
                raise ValueError(
                    "generator: only used with likelihood= (your draw owns its randomness)."
                )
            self._draw = lambda x: draw(self.model, x)[1]
            self._nll = lambda batch: nll(self.model, batch)
            return
        if draw is not None or nll is not None:
            raise ValueError(
                "draw, nll: pass None when likelihood= is given (they are built from it)."
            )
        if not (hasattr(likelihood, "nll") and hasattr(likelihood, "draw")):
            raise TypeError(
                f"likelihood: expected a likelihood object with nll and draw (e.g. "
                f"bnn_mcmc.bnn.GaussianLikelihood), got {type(likelihood).__name__}."
            )
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                "generator: a torch.Generator is required with likelihood= (to "
                "draw targets from the model)."
            )
        ref = next(model.parameters())
        if likelihood.num_extra_params > 0:
            self.extra = nn.Parameter(
                torch.zeros(likelihood.num_extra_params, dtype=ref.dtype, device=ref.device)
            )
        self._draw = lambda x: likelihood.draw(self.model(x), self.generator, self.extra)
        self._nll = lambda batch: likelihood.nll(self.model(batch[0]), batch[1], self.extra)

    def _warm_start(self, diag: list[tuple[Tensor, ...]], kfac: bool, num_batches: int) -> None:
        """Q0 from K-FAC factors (Kronecker blocks whose layer calls were seen) or the
        Fisher diagonal (the rest), then divided by the top eigenvalue of Q0 (F + gamma I)
        when it exceeds 1, so the first steps cannot overshoot along correlated directions."""
        stats: list = [None] * len(self.blocks)
        if kfac:
            layers = [
                (b.params[0], b.params[1] if len(b.params) > 1 else None)
                for b in self.blocks.values()
            ]
            batches = [next(self._aux_batches) for _ in range(num_batches)]
            stats = kronecker_statistics(layers, self._nll, self._draw, batches)
        self.warm_start_kinds = []
        for b, db, st in zip(self.blocks.values(), diag, stats, strict=True):
            kind = "diagonal"
            if isinstance(b, KroneckerQ) and st is not None:
                try:
                    trace = float(sum(d.sum() for d in db))
                    L, R = damped_inverse_factors(st, trace, self.damping)
                    b.set_kronecker(L * self.scale**0.5, R)
                    kind = "kfac"
                except (ValueError, RuntimeError):  # degenerate statistics (e.g. dead units)
                    pass
            if kind == "diagonal":
                b.set_diagonal([self.scale / (d + self.damping) for d in db])
            self.warm_start_kinds.append(kind)
        top = self.top_eigenvalue()
        if top > 1.0:
            for b in self.blocks.values():
                b.rescale(1.0 / top)

    def _block_scale(self, module: nn.Module | None, scale: float) -> float:
        if self.initialization == "fan_in" and isinstance(module, (nn.Linear, nn.Conv2d)):
            return scale / (module.weight[0].numel() + (module.bias is not None))
        return scale

    def _block_grads(self) -> list[tuple[Tensor, ...]]:
        out = []
        for name, b in self.blocks.items():
            if any(p.grad is None for p in b.params):
                raise RuntimeError(
                    f"block {name!r}: a parameter has no gradient; call "
                    "loss.backward() before update_aux() / step()."
                )
            out.append(tuple(p.grad for p in b.params))
        return out

    # -- the auxiliary problem ------------------------------------------------------------
    def _curvature_product(
        self, params: list[Tensor], v: list[Tensor], batch: Batch
    ) -> tuple[list[Tensor], Tensor]:
        """Return (an unbiased estimate of :math:`F v`, :math:`v^\\top F v`)."""
        if self.aux_loss == "exact":
            loss = self._nll(batch)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((g * w).sum() for g, w in zip(grads, v, strict=True))
            fv = list(torch.autograd.grad(dot, params))
        else:
            norm = torch.sqrt(sum((w**2).sum() for w in v))
            eps = float(torch.finfo(v[0].dtype).eps) ** (1 / 3) / max(float(norm), 1e-30)
            fv = [torch.zeros_like(p) for p in params]
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    for p, w in zip(params, v, strict=True):
                        p.add_(w, alpha=sign * eps)
                grads = torch.autograd.grad(self._nll(batch), params)
                with torch.no_grad():
                    for p, w in zip(params, v, strict=True):
                        p.sub_(w, alpha=sign * eps)
                for f, g in zip(fv, grads, strict=True):
                    f.add_(g, alpha=sign / (2 * eps))
        vfv = sum((f * w).sum() for f, w in zip(fv, v, strict=True))
        return fv, vfv.detach()

    @torch.enable_grad()
    def fisher_diagonal(self, num_probes: int = 8) -> list[tuple[Tensor, ...]]:
        r"""Hutchinson estimate of the diagonal of the Fisher, per block.

        :math:`\operatorname{diag} F \approx \frac1K \sum_k z_k \odot F z_k` with
        Rademacher :math:`z_k`, each :math:`F z_k` an exact curvature product at targets
        drawn from the model on the next auxiliary batch (clamped at 0).
        """
        params = [p for b in self.blocks.values() for p in b.params]
        acc = [torch.zeros_like(p) for p in params]
        gen = torch.Generator(device=params[0].device).manual_seed(0)
        for _ in range(num_probes):
            x, _ = next(self._aux_batches)
            with torch.no_grad():
                y_tilde = self._draw(x)
            z = [
                torch.randint(0, 2, p.shape, generator=gen, device=p.device).to(p.dtype) * 2 - 1
                for p in params
            ]
            fz, _ = self._curvature_product(params, z, (x, y_tilde))
            for a, zz, f in zip(acc, z, fz, strict=True):
                a.add_(zz * f.detach() / num_probes)
        out, k = [], 0
        for b in self.blocks.values():
            n = len(b.params)
            out.append(tuple(a.clamp_min(0) for a in acc[k : k + n]))
            k += n
        return out

    @torch.enable_grad()
    def top_eigenvalue(self, num_iters: int = 20) -> float:
        r"""Largest eigenvalue of :math:`Q (F + \gamma I)` by power iteration (one
        auxiliary batch and one draw of model targets for all iterations)."""
        params = [p for b in self.blocks.values() for p in b.params]
        x, _ = next(self._aux_batches)
        with torch.no_grad():
            y_tilde = self._draw(x)
        gen = torch.Generator(device=params[0].device).manual_seed(1)
        v = [torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) for p in params]
        lam = 0.0
        for _ in range(num_iters):
            norm = torch.sqrt(sum((w**2).sum() for w in v))
            v = [w / norm for w in v]
            fv, _ = self._curvature_product(params, v, (x, y_tilde))
            fv = [f.detach() + self.damping * w for f, w in zip(fv, v, strict=True)]
            k, new = 0, []
            with torch.no_grad():
                for b in self.blocks.values():
                    n = len(b.params)
                    new.extend(b.Qv(fv[k : k + n]))
                    k += n
            lam = float(sum((a * w).sum() for a, w in zip(new, v, strict=True)))
            v = [t.detach() for t in new]
        return lam

    @torch.enable_grad()
    def update_aux(self, direction: Tensor | None = None) -> float:
        r"""One Adam step on the auxiliary loss :math:`\mathcal A(\lambda; u)`.

        Parameters
        ----------
        direction : Tensor, optional
            :math:`u` as a flat vector over the whole position (model parameters in
            ``named_parameters()`` order, then :attr:`extra`); entries outside the Q
            blocks are unused.  Default: the current gradients (``.grad``).

        Returns
        -------
        float
            The auxiliary loss before the step (a stochastic estimate).
        """
        if direction is None:
            u = self._block_grads()
        else:
            u = self._split_flat(direction, "direction")
        u = [tuple(x.detach() for x in ub) for ub in u]
        if self.normalization:
            norm = torch.sqrt(sum((x**2).sum() for ub in u for x in ub)).clamp_min(1e-30)
            u = [tuple(x / norm for x in ub) for ub in u]
        x, _ = next(self._aux_batches)
        with torch.no_grad():
            y_tilde = self._draw(x)
        self.aux_optimizer.zero_grad()
        qu = [t for b, ub in zip(self.blocks.values(), u, strict=True) for t in b.Qv(ub)]
        flat_u = [t for ub in u for t in ub]
        params = [p for b in self.blocks.values() for p in b.params]
        v = [t.detach() for t in qu]
        fv, vfv = self._curvature_product(params, v, (x, y_tilde))
        grad_v = [f + self.damping * w - g for f, w, g in zip(fv, v, flat_u, strict=True)]
        torch.autograd.backward(qu, grad_v)
        self.aux_optimizer.step()
        vv = sum((w**2).sum() for w in v)
        uv = sum((g * w).sum() for g, w in zip(flat_u, v, strict=True))
        return float(0.5 * vfv + 0.5 * self.damping * vv - uv)

    def warmup_aux(
        self,
        dataloader: Iterable[Batch] | None = None,
        loss: Callable[[nn.Module, Batch], Tensor] | None = None,
        scale: float = 1.0,
        num_batches: int = 1,
    ) -> None:
        r"""Initialise :math:`Q`.

        Without ``dataloader``: :math:`Q = \text{scale}\cdot I` (per ``initialization``),
        so the first steps are SGD steps.  With it: the diagonal of :math:`Q` is set to
        :math:`\text{scale} / (\overline{g^2} + \gamma)`, :math:`\overline{g^2}` the mean
        squared gradient of ``loss`` (default: the nll) over ``num_batches`` batches,
        an Adam-like start (exact with ``full``, a rank-one fit per Kronecker block
        otherwise).
        """
        if dataloader is None:
            if loss is not None:
                raise ValueError("loss: only used with a dataloader.")
            for name, b in self.blocks.items():
                module = self._block_modules.get(name)
                b.reset(self._block_scale(module, scale))
            return
        if num_batches < 1:
            raise ValueError(f"num_batches must be positive, got {num_batches}.")
        params = [p for b in self.blocks.values() for p in b.params]
        sq = [torch.zeros_like(p) for p in params]
        it = iter(dataloader)
        for _ in range(num_batches):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(dataloader)
                batch = next(it)
            with torch.enable_grad():
                value = loss(self.model, batch) if loss is not None else self._nll(batch)
                grads = torch.autograd.grad(value, params, allow_unused=True)
            for s, g in zip(sq, grads, strict=True):
                if g is not None:
                    s.add_(g.detach() ** 2 / num_batches)
        k = 0
        for b in self.blocks.values():
            n = len(b.params)
            b.set_diagonal([scale / (s + self.damping) for s in sq[k : k + n]])
            k += n

    # -- the parameter step -----------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One FishLeg step from the gradients in ``.grad`` (after auxiliary updates
        as scheduled by ``update_aux_every``).  ``closure`` re-evaluates the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        every = self.update_aux_every
        n_aux = -every if every < 0 else int(every > 0 and self._num_steps % every == 0)
        for _ in range(n_aux):
            self.update_aux()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                g = p.grad.add(p, alpha=group["weight_decay"])
                state["momentum"].mul_(group["beta"]).add_(g, alpha=1 - group["beta"])
        lr = self.param_groups[0]["lr"]
        beta = self.param_groups[0]["beta"]
        corr = 1.0 / (1 - beta ** (self._num_steps + 1)) if self.bias_correction else 1.0
        params, deltas = [], []
        for b in self.blocks.values():
            if all(p.grad is None for p in b.params):
                continue
            m = [self.state[p].get("momentum", torch.zeros_like(p)) for p in b.params]
            params.extend(b.params)
            qm = b.Qv(m)
            if self.extra_damping > 0:  # Jacobi form of (Q^-1 + delta I)^-1 m
                qm = [d / (1 + self.extra_damping * q) for d, q in zip(qm, b.diagQ(), strict=True)]
            deltas.extend(d.mul(-lr * corr) for d in qm)
        every = self.damping_every
        if every > 0 and self._num_steps % every == 0 and params:
            self._checked_step(params, deltas)
        else:
            for p, d in zip(params, deltas, strict=True):
                p.add_(d)
        for group in self.param_groups[1:]:
            for p in group["params"]:
                if p.grad is not None:
                    p.sub_(self.state[p]["momentum"], alpha=group["lr"] * corr)
        self._num_steps += 1
        return loss

    @torch.no_grad()
    def _checked_step(self, params: list[Tensor], deltas: list[Tensor]) -> None:
        """Apply the step and adapt the damping from its reduction ratio
        (:mod:`bnn_mcmc.optim.damping`); undo it if it was rejected."""
        batch = next(self._aux_batches)
        with torch.enable_grad():
            loss0 = self._nll(batch)
            grads = torch.autograd.grad(loss0, params, allow_unused=True)
            y_tilde = self._draw(batch[0])
            fd, dfd = self._curvature_product(params, deltas, (batch[0], y_tilde))
        slope = sum(
            float((g * d).sum()) for g, d in zip(grads, deltas, strict=True) if g is not None
        )
        predicted = slope + 0.5 * float(dfd)
        before = float(loss0)
        if self.reference_loss is None:
            self.reference_loss = before
        for p, d in zip(params, deltas, strict=True):
            p.add_(d)
        after = float(self._nll(batch))
        diverged = not after <= max(self.reference_loss, before)
        self.extra_damping, undo = self.damping_rule.update(
            self.extra_damping, self.damping, after - before, predicted, diverged
        )
        if undo:
            for p, d in zip(params, deltas, strict=True):
                p.sub_(d)
        if diverged:  # the running average carries the bad direction: forget it
            for group in self.param_groups:
                for p in group["params"]:
                    if "momentum" in self.state[p]:
                        self.state[p]["momentum"].zero_()
            self.num_diverged += 1
        self.num_rejected += int(undo)

    # -- the flat view and the metric --------------------------------------------------
    def _offsets(self) -> tuple[dict[int, int], int]:
        offsets, k = {}, 0
        for p in self.model.parameters():
            offsets[id(p)] = k
            k += p.numel()
        if self.extra is not None:
            offsets[id(self.extra)] = k
            k += self.extra.numel()
        return offsets, k

    def _split_flat(self, flat: Tensor, name: str) -> list[tuple[Tensor, ...]]:
        offsets, dim = self._offsets()
        if not isinstance(flat, Tensor) or flat.shape != (dim,):
            raise ValueError(
                f"{name}: expected a flat tensor of shape ({dim},) (all model "
                "parameters, then the likelihood's)."
            )
        return [
            tuple(flat[offsets[id(p)] : offsets[id(p)] + p.numel()].view_as(p) for p in b.params)
            for b in self.blocks.values()
        ]

    def as_metric(self, uncovered_inv_mass: float | None = None) -> KroneckerMetric:
        r"""The current :math:`Q(\lambda)` as a fixed inverse mass matrix for HMC/NUTS.

        The flat position is the model's parameters in ``named_parameters()`` order
        (as :func:`torch.nn.utils.parameters_to_vector`), then :attr:`extra` (as in
        :func:`bnn_mcmc.bnn.nn_pot_energy`).  Coordinates without a block get
        ``uncovered_inv_mass`` (default :math:`1/\gamma`, the damped inverse Fisher of a
        direction without curvature).
        """
        offsets, dim = self._offsets()
        base = 1.0 / self.damping if uncovered_inv_mass is None else float(uncovered_inv_mass)
        factors = []
        for b in self.blocks.values():
            index = [
                offsets[id(p)] + torch.arange(p.numel(), device=p.device).view(p.shape)
                for p in b.params
            ]
            factors.append(b.factor(index))
        ref = next(self.model.parameters())
        return KroneckerMetric(dim, factors, base, dtype=ref.dtype, device=ref.device)
