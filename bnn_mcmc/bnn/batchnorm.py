r"""A batch-normalisation layer that works when weights come from a hypernetwork.

The layer computes

.. math:: y = \frac{x - m^{(t)}}{\sqrt{v^{(t)} + \epsilon}}\,\gamma^{(t)} + \beta^{(t)},

where the statistics :math:`(m^{(t)}, v^{(t)})` and the gain/offset
:math:`(\gamma^{(t)}, \beta^{(t)})` may depend on a condition :math:`t`.  When a
hypernetwork replaces all weights at once, running statistics estimated for one set of
weights are wrong for another; the layer therefore offers:

* **tracked statistics** per condition: :meth:`BatchNormLayer.checkpoint_stats` registers
  a new pair of running statistics, selected with ``stats_id`` (e.g. one per task);
* **frozen statistics** :math:`m = 0, v = 1` (pure gain modulation);
* **learnable statistics**: :math:`m, v` are parameters trained by gradient;
* **batch statistics always** (``track_running_stats=False``), also in eval mode;
* **given statistics** passed to :meth:`BatchNormLayer.forward`, which take priority.

Gains and offsets passed to :meth:`BatchNormLayer.forward` override the internal ones.

=====================  ====================  =======================  ===================
source of statistics   train: batch stats?   train: update running?   eval: batch stats?
=====================  ====================  =======================  ===================
given stats            yes                   yes (the given tensors)  no
tracked (stats_id)     yes                   yes                      no
frozen                 no                    no                       no
learnable              no                    no (trained by grad)     no
no tracking            yes                   no                       yes
=====================  ====================  =======================  ===================

Learnable statistics differ from the original toolkit's plan (batch statistics in training
with a differentiable running update, never implemented there): with batch statistics in
training the learnable ones would receive no gradient, so here they are used directly in
both modes.

References
----------
Ioffe, S. and Szegedy, C. (2015). Batch normalization. *ICML*.
von Oswald, J. et al. (2020). Continual learning with hypernetworks. *ICLR*.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BatchNormLayer(nn.Module):
    """Hypernetwork-compatible batch normalisation (see the module docstring).

    Parameters
    ----------
    num_features : int
        Number of features (channels), dimension 1 of the input.
    momentum : float
        Weight of the current batch in running-statistic updates.
    affine : bool
        Keep an internal gain (``scale``, init 1) and offset (``bias``, init 0).
    track_running_stats : bool
        Keep running statistics (one checkpoint is created).
    frozen_stats : bool
        Use :math:`m = 0, v = 1` always; requires ``track_running_stats=False``.
    learnable_stats : bool
        Statistics are parameters; requires ``track_running_stats=False``.
    eps : float
        :math:`\\epsilon` added to the variance.
    """

    def __init__(
        self,
        num_features: int,
        momentum: float = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        frozen_stats: bool = False,
        learnable_stats: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}.")
        if momentum is None or not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be a float in [0, 1], got {momentum!r}.")
        if (frozen_stats or learnable_stats) and track_running_stats:
            raise ValueError("frozen_stats and learnable_stats require track_running_stats=False.")
        if frozen_stats and learnable_stats:
            raise ValueError("choose at most one of frozen_stats and learnable_stats.")
        self.num_features = num_features
        self.momentum = float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.frozen_stats = bool(frozen_stats)
        self.learnable_stats = bool(learnable_stats)
        self.eps = float(eps)
        self.register_buffer("_num_stats", torch.tensor(0, dtype=torch.long))
        self._param_shapes = [[num_features], [num_features]]
        internal = []
        if self.affine:
            self.scale = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
            internal += [self.scale, self.bias]
        if self.learnable_stats:
            self.learned_mean = nn.Parameter(torch.zeros(num_features))
            self.learned_var = nn.Parameter(torch.ones(num_features))
            internal += [self.learned_mean, self.learned_var]
            self._param_shapes += [[num_features], [num_features]]
        self._internal = internal
        if self.track_running_stats or self.frozen_stats:
            self.checkpoint_stats()

    @property
    def weights(self) -> list[nn.Parameter] | None:
        """Internal parameters (gain, offset, learnable statistics), or ``None``."""
        return list(self._internal) or None

    @property
    def param_shapes(self) -> list[list[int]]:
        """Shapes of gain and offset (plus mean and variance with learnable statistics)."""
        return [list(s) for s in self._param_shapes]

    @property
    def num_stats(self) -> int:
        """Number of checkpointed pairs of running statistics."""
        return int(self._num_stats)

    def checkpoint_stats(self, device: torch.device | str | None = None) -> None:
        """Register a new pair of running statistics (mean 0, variance 1).

        With frozen statistics only the one initial pair exists.  ``device`` defaults to
        that of the latest statistics (CPU for the first).
        """
        if not (self.track_running_stats or (self.frozen_stats and self.num_stats == 0)):
            raise ValueError(
                "statistics checkpoints need track_running_stats=True (frozen statistics "
                "have exactly one)."
            )
        if device is None:
            device = self.get_stats()[0].device if self.num_stats else "cpu"
        k = self.num_stats
        self.register_buffer(f"mean_{k}", torch.zeros(self.num_features, device=device))
        self.register_buffer(f"var_{k}", torch.ones(self.num_features, device=device))
        self._num_stats += 1

    def reset_running_stats(self) -> None:
        """Reset every checkpoint of running statistics to mean 0, variance 1."""
        with torch.no_grad():
            for k in range(self.num_stats):
                mean, var = self.get_stats(k)
                mean.zero_()
                var.fill_(1.0)

    def get_stats(self, stats_id: int | None = None) -> tuple[Tensor, Tensor]:
        """Running mean and variance of checkpoint ``stats_id`` (default: the latest)."""
        if stats_id is None:
            stats_id = self.num_stats - 1
        if not 0 <= stats_id < self.num_stats:
            raise ValueError(
                f"stats_id must be in [0, {self.num_stats}) for {self.num_stats} checkpoints, "
                f"got {stats_id}."
            )
        return getattr(self, f"mean_{stats_id}"), getattr(self, f"var_{stats_id}")

    def forward(
        self,
        inputs: Tensor,
        running_mean: Tensor | None = None,
        running_var: Tensor | None = None,
        weight: Tensor | None = None,
        bias: Tensor | None = None,
        stats_id: int | None = None,
    ) -> Tensor:
        """Normalise ``inputs`` of shape ``(N, C, ...)``.

        Parameters
        ----------
        running_mean, running_var : Tensor, optional
            Given statistics (both or neither); they take priority over internal ones.
        weight, bias : Tensor, optional
            Gain and offset overriding the internal ones (e.g. hypernetwork outputs).
            Without them and without ``affine`` the input is only normalised.
        stats_id : int, optional
            Which checkpoint of tracked statistics to use; required when there are several.
        """
        if (running_mean is None) != (running_var is None):
            raise ValueError("pass both running_mean and running_var, or neither.")
        if weight is None and self.affine:
            weight = self.scale
        if bias is None and self.affine:
            bias = self.bias
        if running_mean is not None:
            if stats_id is not None:
                raise ValueError("stats_id selects internal statistics; omit it with given ones.")
            return F.batch_norm(
                inputs,
                running_mean,
                running_var,
                weight,
                bias,
                self.training,
                self.momentum,
                self.eps,
            )
        if self.track_running_stats:
            if stats_id is None and self.num_stats > 1:
                raise ValueError(
                    f"this layer has {self.num_stats} statistics checkpoints; pass stats_id."
                )
            mean, var = self.get_stats(0 if stats_id is None else stats_id)
            return F.batch_norm(
                inputs, mean, var, weight, bias, self.training, self.momentum, self.eps
            )
        if stats_id is not None and not (self.frozen_stats and stats_id == 0):
            raise ValueError("stats_id only applies to tracked running statistics.")
        if self.frozen_stats:
            mean, var = self.get_stats(0)
            return F.batch_norm(inputs, mean, var, weight, bias, False, 0.0, self.eps)
        if self.learnable_stats:  # explicit formula: batch_norm cannot differentiate stats
            shape = (1, -1) + (1,) * (inputs.dim() - 2)
            out = (inputs - self.learned_mean.view(shape)) * torch.rsqrt(
                self.learned_var.view(shape) + self.eps
            )
            if weight is not None:
                out = out * weight.view(shape)
            return out if bias is None else out + bias.view(shape)
        return F.batch_norm(inputs, None, None, weight, bias, True, self.momentum, self.eps)
