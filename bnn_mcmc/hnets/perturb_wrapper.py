r"""Output perturbation of a hypernetwork, giving an implicit distribution full support.

An implicit distribution :math:`w = h(z)`, :math:`z \sim \mathcal N(0, I_n)`, with
:math:`n <` ``num_outputs`` lives on an :math:`n`-dimensional manifold of weight space and
has no density there.  Adding Gaussian noise of standard deviation
:math:`\sigma` = ``sigma_noise`` gives a density on all of weight space:

``perturbation='shared'`` (default)
    input :math:`z \in \mathbb{R}^N` (:math:`N` = ``num_outputs``, :math:`n \le N`),

    .. math:: w = h(z_{1:n}) + \sigma\, z ,

    i.e. the perturbation **reuses** :math:`z`: its first :math:`n` entries are both the
    network input and part of the noise.
``perturbation='independent'``
    input :math:`z \in \mathbb{R}^{n + N}`,

    .. math:: w = h(z_{1:n}) + \sigma\, z_{n+1:n+N} ,

    so network input and perturbation are independent.

In both cases, for :math:`z \sim \mathcal N(0, I)`, :math:`w - h(z_{1:n})` has standard
deviation exactly :math:`\sigma` per coordinate (variance :math:`\sigma^2`): ``sigma_noise``
is the scale, not the variance.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .interface import HyperNetInterface

PERTURBATIONS = ("shared", "independent")


class HPerturbWrapper(nn.Module, HyperNetInterface):
    """Wrap a hypernetwork with input pre-processing and output perturbation.

    Parameters
    ----------
    hnet : HyperNetInterface
        The wrapped network, available as :attr:`internal_hnet`.
    hnet_uncond_in_size : int, optional
        :math:`n`, the number of leading entries of ``z`` fed to ``hnet``; defaults to
        ``hnet.uncond_in_size`` and must equal it.  Must be ``None`` when
        ``input_handler`` is given.
    sigma_noise : float or None
        Perturbation standard deviation :math:`\\sigma \\ge 0`.  Must be ``None`` when
        ``output_handler`` is given.
    input_handler : callable, optional
        ``input_handler(uncond_input=, cond_input=, cond_id=) -> (uncond_input_int,
        cond_input_int, cond_id_int)``, replacing the default slicing ``z[:, :n]``; the
        results are passed to ``hnet``.
    output_handler : callable, optional
        ``output_handler(hnet_out_int, uncond_input=, cond_input=, cond_id=) -> hnet_out``
        on the ``(B, num_outputs)`` flattened output of ``hnet`` (and returning that
        format), replacing the default perturbation; the keyword arguments are the
        original arguments of :meth:`forward`.
    verbose : bool
        Print a summary of the wrapper.
    perturbation : {'shared', 'independent'} or None
        Which ``z`` entries form the perturbation (see module docstring); with an
        ``input_handler``, ``'shared'`` needs ``z`` of size ``num_outputs`` and
        ``'independent'`` uses the last ``num_outputs`` entries of ``z``.  Must be
        ``None`` when ``output_handler`` is given.
    """

    def __init__(
        self,
        hnet: HyperNetInterface,
        hnet_uncond_in_size: int | None = None,
        sigma_noise: float | None = 0.02,
        input_handler: Callable | None = None,
        output_handler: Callable | None = None,
        verbose: bool = True,
        perturbation: str | None = "shared",
    ) -> None:
        super().__init__()
        if not isinstance(hnet, HyperNetInterface) or not isinstance(hnet, nn.Module):
            raise TypeError("hnet must be a bnn_mcmc.hnets hypernetwork (HyperNetInterface)")
        self.internal_hnet = hnet
        self._target_shapes = hnet.target_shapes
        self._cond_in_size = hnet.cond_in_size
        self._num_known_conds = hnet.num_known_conds
        self._uncond_shapes = hnet.unconditional_param_shapes
        self._cond_shapes = hnet.conditional_param_shapes
        self._input_handler = input_handler
        self._output_handler = output_handler
        n_out = self.num_outputs
        if output_handler is not None:
            if not callable(output_handler):
                raise TypeError("output_handler must be callable")
            if sigma_noise is not None or perturbation is not None:
                raise ValueError("output_handler replaces the built-in perturbation: pass "
                                 "sigma_noise=None and perturbation=None")
        else:
            if perturbation not in PERTURBATIONS:
                raise ValueError(f"perturbation must be one of {PERTURBATIONS}, "
                                 f"got {perturbation!r}")
            if sigma_noise is None or not sigma_noise >= 0:
                raise ValueError(f"sigma_noise must be a float >= 0, got {sigma_noise!r}")
        self.sigma_noise = None if sigma_noise is None else float(sigma_noise)
        self.perturbation = perturbation
        if input_handler is not None:
            if not callable(input_handler):
                raise TypeError("input_handler must be callable")
            if hnet_uncond_in_size is not None:
                raise ValueError("hnet_uncond_in_size is only used without input_handler")
            self._n = None
            self._uncond_in_size = None
        else:
            inner = hnet.uncond_in_size
            n = inner if hnet_uncond_in_size is None else hnet_uncond_in_size
            if not isinstance(n, int) or n <= 0:
                raise ValueError(f"hnet_uncond_in_size must be a positive int, got {n!r}")
            if inner is not None and n != inner:
                raise ValueError(f"hnet_uncond_in_size={n} differs from the wrapped network's "
                                 f"uncond_in_size={inner}")
            if perturbation == "shared" and n > n_out:
                raise ValueError(
                    f"perturbation='shared' needs hnet_uncond_in_size ({n}) <= num_outputs "
                    f"({n_out}); use perturbation='independent'")
            self._n = n
            self._uncond_in_size = (n + n_out if perturbation == "independent" else n_out)
        self._report(verbose, "HPerturbWrapper",
                     f"wrapping {type(hnet).__name__}, sigma_noise={self.sigma_noise}")

    @property
    def hnet_uncond_in_size(self) -> int | None:
        """:math:`n`, entries of ``z`` fed to the wrapped network (``None`` with an
        input handler)."""
        return self._n

    @property
    def unconditional_params(self) -> list | None:
        return self.internal_hnet.unconditional_params

    @property
    def conditional_params(self) -> list | None:
        return self.internal_hnet.conditional_params

    def forward(self, uncond_input=None, cond_input=None, cond_id=None, weights=None,
                distilled_params=None, condition=None, ret_format="squeezed"):
        """Generate perturbed target tensors; see :meth:`HyperNetInterface.forward`.

        ``uncond_input`` is ``z`` of shape ``(B, uncond_in_size)``; ``weights``,
        ``distilled_params`` and ``condition`` go to the wrapped network.
        """
        if uncond_input is not None and uncond_input.dim() == 1:
            uncond_input = uncond_input.unsqueeze(0)
        if self._input_handler is not None:
            u_int, c_int, id_int = self._input_handler(
                uncond_input=uncond_input, cond_input=cond_input, cond_id=cond_id)
        else:
            if uncond_input is None or uncond_input.dim() != 2 \
                    or uncond_input.shape[1] != self._uncond_in_size:
                raise ValueError(f"uncond_input must have shape (B, {self._uncond_in_size})")
            u_int, c_int, id_int = uncond_input[:, :self._n], cond_input, cond_id
        out = self.internal_hnet(uncond_input=u_int, cond_input=c_int, cond_id=id_int,
                                 weights=weights, distilled_params=distilled_params,
                                 condition=condition, ret_format="flattened")
        if self._output_handler is not None:
            out = self._output_handler(out, uncond_input=uncond_input, cond_input=cond_input,
                                       cond_id=cond_id)
            if not torch.is_tensor(out) or out.dim() != 2 or out.shape[1] != self.num_outputs:
                raise ValueError(f"output_handler must return a (B, {self.num_outputs}) tensor")
        else:
            out = out + self.sigma_noise * self._noise(uncond_input, out.shape[0])
        return self._format_output(out, ret_format)

    def _noise(self, z: torch.Tensor | None, batch: int) -> torch.Tensor:
        n_out = self.num_outputs
        if z is None or z.dim() != 2 or z.shape[0] != batch:
            raise ValueError(f"the perturbation needs uncond_input of shape ({batch}, ...)")
        if self.perturbation == "shared":
            if z.shape[1] != n_out:
                raise ValueError(f"perturbation='shared' needs uncond_input of shape "
                                 f"(B, {n_out})")
            return z
        if z.shape[1] < n_out:
            raise ValueError(f"perturbation='independent' needs at least {n_out} entries in "
                             f"uncond_input (its last num_outputs entries are the noise)")
        return z[:, -n_out:]
