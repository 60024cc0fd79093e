r"""Compare approximate posteriors (MCMC, implicit, mean-field) in function space.

Every posterior is given by weight draws; all metrics are computed on the *predictions*,
because weight-space posteriors of networks are not identifiable (hidden-unit
permutations).  For draws :math:`w_s`, :math:`s = 1..S`, and test points :math:`(x_i, y_i)`:

* ``test_nll`` -- :math:`-\frac1n \sum_i \log \frac1S \sum_s p(y_i \mid f(x_i; w_s))`;
* ``accuracy`` and ``ece`` (classification) -- accuracy of the predictive mode and the
  expected calibration error :math:`\sum_b \frac{|B_b|}{n} |\mathrm{acc}(B_b) -
  \mathrm{conf}(B_b)|` over equal-width confidence bins (Guo et al., 2017);
* ``rmse`` (regression) -- of the predictive mean;
* ``var_ratio_out_in`` -- mean epistemic variance of :math:`\mathbb E[y \mid f]` at test
  inputs far from the training inputs (in gaps or outside, see
  :func:`~bnn_mcmc.diagnostics.regions.find_regions`) divided by that near them (a
  posterior that "knows what it does not know" has a ratio well above 1);
* against the ``reference`` posterior: ``agreement`` of the predictive modes
  (classification) and the mean total variation ``tv`` between predictive distributions,
  :math:`\frac12\sum_c |p_c - p^{\rm ref}_c|` for classes and
  :math:`\frac12\int |p(y) - p^{\rm ref}(y)|\,dy` on a grid for one real output
  (Izmailov et al., 2021); ``mmd`` -- the unbiased squared maximum mean discrepancy
  between the function draws :math:`(f(x_1; w_s), \dots, f(x_n; w_s))` with an RBF kernel
  of median bandwidth (Gretton et al., 2012);
* ``elpd_loo``, ``elpd_loo_se``, ``p_loo``, ``loo_rank`` -- PSIS-LOO on the training
  data by ArviZ (``az.loo`` / ``az.compare``; rank 0 is best).

These pooled numbers are dominated by the test inputs near the data, where all methods
agree; pass ``regions=`` for the region-by-region comparison with the MCMC noise floor
(:mod:`~bnn_mcmc.diagnostics.region_compare`).

References
----------
Guo, C., Pleiss, G., Sun, Y. and Weinberger, K. Q. (2017). On calibration of modern
neural networks. *ICML*.
Gretton, A. et al. (2012). A kernel two-sample test. *JMLR* 13, 723-773.
Izmailov, P., Vikram, S., Hoffman, M. D. and Wilson, A. G. (2021). What are Bayesian
neural network posteriors really like? *ICML*.
Vehtari, A., Gelman, A. and Gabry, J. (2017). Practical Bayesian model evaluation using
leave-one-out cross-validation and WAIC. *Statistics and Computing* 27, 1413-1432.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..bnn.functional import FunctionalNet, MainNetFunction, as_function
from ..bnn.likelihoods import BernoulliLikelihood, CategoricalLikelihood, Likelihood
from ..bnn.predictive import evaluate_draws, pointwise_log_likelihood
from .draws import draws_by_chain
from .region_compare import Cost, compare_by_region
from .regions import find_regions

CLASSIFICATION = (CategoricalLikelihood, BernoulliLikelihood)


def expected_calibration_error(probs: Tensor, labels: Tensor, num_bins: int = 15) -> float:
    r"""ECE of class probabilities ``(n, C)`` for integer ``labels`` ``(n,)``.

    Confidence :math:`\max_c p_c` is binned into ``num_bins`` equal-width bins of
    :math:`[0, 1]`; the result is the bin-size weighted mean of
    :math:`|\text{accuracy} - \text{mean confidence}|`.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins!r}.")
    conf, pred = probs.max(-1)
    correct = (pred == labels).to(probs.dtype)
    bins = torch.clamp((conf * num_bins).long(), max=num_bins - 1)
    ece = probs.new_zeros(())
    for b in range(num_bins):
        mask = bins == b
        if mask.any():
            ece = ece + mask.sum() * (correct[mask].mean() - conf[mask].mean()).abs()
    return float(ece / labels.numel())


def mmd2_unbiased(a: Tensor, b: Tensor) -> float:
    r"""Unbiased :math:`\widehat{\mathrm{MMD}}^2` between samples ``a`` ``(m, d)`` and ``b``
    ``(n, d)`` with :math:`k(x, y) = \exp(-\lVert x-y\rVert^2 / (2\sigma^2))`,
    :math:`\sigma` the median pairwise distance of the pooled sample."""
    x = torch.cat([a, b]).double()
    d2 = torch.cdist(x, x).square()
    m, n = a.shape[0], b.shape[0]
    iu = torch.triu_indices(m + n, m + n, offset=1)
    sigma2 = d2[iu[0], iu[1]].median().clamp_min(1e-12)
    k = torch.exp(-d2 / (2.0 * sigma2))
    kaa, kbb, kab = k[:m, :m], k[m:, m:], k[:m, m:]
    term_a = (kaa.sum() - kaa.diagonal().sum()) / (m * (m - 1))
    term_b = (kbb.sum() - kbb.diagonal().sum()) / (n * (n - 1))
    return float(term_a + term_b - 2.0 * kab.mean())


def _thin(x: Tensor, max_n: int) -> Tensor:
    if x.shape[0] <= max_n:
        return x
    idx = torch.linspace(0, x.shape[0] - 1, max_n).round().long()
    return x[idx]


def _predictive_density_grid(
    preds: Tensor, likelihood: Likelihood, grid: Tensor, extra: Tensor | None
) -> Tensor:
    """Mixture density :math:`\\frac1S\\sum_s p(y_g \\mid f_s)` at every grid value, ``(G, n)``."""
    out = []
    log_s = math.log(preds.shape[0])
    for y in grid:  # y: (n,) one grid value per test point
        ll = likelihood.log_prob(preds, y.unsqueeze(-1), extra)  # (S, n)
        out.append(torch.exp(torch.logsumexp(ll, 0) - log_s))
    return torch.stack(out)


def _regression_tv(
    preds: Tensor,
    extra: Tensor | None,
    ref_preds: Tensor,
    ref_extra: Tensor | None,
    likelihood: Likelihood,
    generator: torch.Generator,
    num_grid: int,
) -> float:
    y = likelihood.draw(preds, generator, extra)[..., 0]
    y_ref = likelihood.draw(ref_preds, generator, ref_extra)[..., 0]
    lo = torch.minimum(y.min(0).values, y_ref.min(0).values)
    hi = torch.maximum(y.max(0).values, y_ref.max(0).values)
    pad = hi - lo  # the draws' range misses the tails; the padded grid covers them
    t = torch.linspace(0.0, 1.0, num_grid, dtype=preds.dtype)[:, None]
    grid = (lo - pad) + t * (hi - lo + 2 * pad)  # (G, n)
    p = _predictive_density_grid(preds, likelihood, grid, extra)
    q = _predictive_density_grid(ref_preds, likelihood, grid, ref_extra)
    tv = 0.5 * torch.trapezoid((p - q).abs(), grid, dim=0)
    return float(tv.mean())


def _loo_table(
    draws: Mapping[str, Tensor], logliks: Mapping[str, Tensor]
) -> dict[str, dict[str, float]]:
    import arviz as az

    idatas = {
        name: az.from_dict(
            posterior={"w": draws[name].double().cpu().numpy()},
            log_likelihood={"y": ll.double().cpu().numpy()},
        )
        for name, ll in logliks.items()
    }
    table = az.compare(idatas, ic="loo")
    return {
        name: {
            "elpd_loo": float(table.loc[name, "elpd_loo"]),
            "elpd_loo_se": float(table.loc[name, "se"]),
            "p_loo": float(table.loc[name, "p_loo"]),
            "loo_rank": int(table.loc[name, "rank"]),
        }
        for name in logliks
    }


def compare_posteriors(
    posteriors: Mapping[str, object],
    net: nn.Module | FunctionalNet | MainNetFunction,
    test_inputs: Tensor,
    test_targets: Tensor,
    likelihood: Likelihood,
    reference: str | None = "NUTS",
    train_inputs: Tensor | None = None,
    train_targets: Tensor | None = None,
    num_bins: int = 15,
    max_mmd_draws: int = 500,
    num_grid: int = 512,
    generator: torch.Generator | None = None,
    regions: Mapping[str, Tensor] | str | None = None,
    noise_floor: str = "split",
    costs: Mapping[str, Cost] | None = None,
    pareto_k: Mapping[str, float] | None = None,
):
    r"""Table of function-space metrics, one row per posterior.

    With ``regions`` the comparison is made region by region against the reference, with
    the MCMC noise floor beside every distance, and a
    :class:`~bnn_mcmc.diagnostics.region_compare.RegionComparison` is returned instead
    (see :func:`~bnn_mcmc.diagnostics.region_compare.compare_by_region`, which receives
    ``regions``, ``noise_floor``, ``costs``, ``pareto_k``, ``train_inputs``, ``num_bins``,
    ``num_grid`` and ``generator``).  Prefer it: pooled numbers hide a gap in the data.

    Parameters
    ----------
    posteriors : mapping of str to draws
        Name to weight draws: ``(S, dim)`` / ``(chains, draws, dim)`` tensors (e.g.
        ``sampler.samples()``, ``q.sample(1000)``) or ``arviz.InferenceData``
        (see :func:`draws_by_chain`).
    net : nn.Module, FunctionalNet or MainNetFunction
        The network.
    test_inputs, test_targets : Tensor
        Held-out data.
    likelihood : Likelihood
        Observation model (classification metrics for categorical / Bernoulli models,
        RMSE otherwise).
    reference : str or None
        Name of the posterior the others are compared with (``agreement``, ``tv``,
        ``mmd``); ``None`` skips those columns.
    train_inputs : Tensor, optional
        Defines the data range for ``var_ratio_out_in``; with ``train_targets`` also
        enables the ELPD-LOO columns.
    train_targets : Tensor, optional
        Training targets for ELPD-LOO (requires ``train_inputs``).
    num_bins : int
        ECE bins.
    max_mmd_draws : int
        Draws per posterior used for the MMD (evenly thinned).
    num_grid : int
        Grid size of the regression total variation.
    generator : torch.Generator, optional
        Randomness of the predictive draws that set the regression TV grid (default:
        seeded with 0).

    regions : mapping of str to bool Tensor, or 'auto', optional
        Test-input masks (``'auto'``: near / gap / outside of ``train_inputs``).
    noise_floor : str
        ``'split'`` halves of the reference, or the name of a second reference run.
    costs : mapping of str to Cost, optional
        Wall time and gradient evaluations per posterior (region comparison only).
    pareto_k : mapping of str to float, optional
        PSIS :math:`\hat k` per posterior (region comparison only).

    Returns
    -------
    pandas.DataFrame or RegionComparison
        Without ``regions``: indexed by posterior name, in the given order.
        ``agreement`` is only defined for classification and ``tv`` for
        classification or one real output (else ``nan``); ``var_ratio_out_in`` is
        ``nan`` when no test input lies far from (or none near) the training inputs.
    """
    if regions is not None:
        return compare_by_region(
            posteriors,
            net,
            test_inputs,
            test_targets,
            likelihood,
            regions,
            reference="NUTS" if reference is None else reference,
            noise_floor=noise_floor,
            train_inputs=train_inputs,
            costs=costs,
            pareto_k=pareto_k,
            num_bins=num_bins,
            num_grid=num_grid,
            generator=generator,
        )
    import pandas as pd

    if not isinstance(posteriors, Mapping) or not posteriors:
        raise TypeError("posteriors must be a non-empty mapping {name: draws}.")
    if not isinstance(likelihood, Likelihood):
        raise TypeError(
            f"likelihood must be a bnn_mcmc.bnn.Likelihood, got {type(likelihood).__name__}."
        )
    if reference is not None and reference not in posteriors:
        raise ValueError(
            f"reference={reference!r} is not among the posteriors {list(posteriors)}; pass "
            "one of their names or reference=None."
        )
    if train_targets is not None and train_inputs is None:
        raise ValueError("train_targets needs train_inputs as well (for ELPD-LOO).")
    f = as_function(net)
    dim = f.dim + likelihood.num_extra_params
    draws = {
        name: draws_by_chain(d, dim, f"posteriors[{name!r}]") for name, d in posteriors.items()
    }
    gen = torch.Generator().manual_seed(0) if generator is None else generator
    is_clf = isinstance(likelihood, CLASSIFICATION)

    preds, extras, responses = {}, {}, {}
    rows: dict[str, dict[str, float]] = {}
    for name, d in draws.items():
        flat = d.reshape(-1, dim).to(test_inputs.dtype)
        w_net = flat[:, : f.dim]
        extra = flat[:, f.dim :] if likelihood.num_extra_params else None
        out = evaluate_draws(f, w_net, test_inputs)
        with torch.no_grad():
            ll = likelihood.log_prob(out, test_targets, extra)
            resp = likelihood.mean(out, extra)
        preds[name], extras[name], responses[name] = out, extra, resp
        row = {
            "num_draws": flat.shape[0],
            "test_nll": float(-(torch.logsumexp(ll, 0) - math.log(ll.shape[0])).mean()),
        }
        mean = resp.mean(0)
        if is_clf:
            probs = _class_probs(mean, likelihood)
            labels = test_targets.reshape(-1).long()
            row["accuracy"] = float((probs.argmax(-1) == labels).double().mean())
            row["ece"] = expected_calibration_error(probs, labels, num_bins)
        else:
            target = test_targets.reshape(mean.shape).to(mean.dtype)
            row["rmse"] = float((mean - target).square().sum(-1).mean().sqrt())
        if train_inputs is not None:
            inside = find_regions(train_inputs, test_inputs).near
            var = resp.var(0).sum(-1)
            ok = bool(inside.any()) and bool((~inside).any())
            row["var_ratio_out_in"] = (
                float(var[~inside].mean() / var[inside].mean()) if ok else math.nan
            )
        rows[name] = row

    if reference is not None:
        ref_fn = _thin(preds[reference], max_mmd_draws)
        ref_fn = ref_fn.reshape(ref_fn.shape[0], -1)
        for name in draws:
            row = rows[name]
            if is_clf:
                p = _class_probs(responses[name].mean(0), likelihood)
                p_ref = _class_probs(responses[reference].mean(0), likelihood)
                row["agreement"] = float((p.argmax(-1) == p_ref.argmax(-1)).double().mean())
                row["tv"] = float(0.5 * (p - p_ref).abs().sum(-1).mean())
            else:
                row["agreement"] = math.nan
                if name == reference:
                    row["tv"] = 0.0
                elif preds[name].shape[-1] == 1:
                    row["tv"] = _regression_tv(
                        preds[name],
                        extras[name],
                        preds[reference],
                        extras[reference],
                        likelihood,
                        gen,
                        num_grid,
                    )
                else:
                    row["tv"] = math.nan
            if name == reference:
                row["mmd"] = 0.0
            else:
                fn = _thin(preds[name], max_mmd_draws)
                row["mmd"] = mmd2_unbiased(fn.reshape(fn.shape[0], -1), ref_fn)

    if train_targets is not None:
        logliks = {
            name: pointwise_log_likelihood(
                f, d.to(train_inputs.dtype), train_inputs, train_targets, likelihood
            )
            for name, d in draws.items()
        }
        for name, vals in _loo_table(draws, logliks).items():
            rows[name].update(vals)
    return pd.DataFrame.from_dict(rows, orient="index")


def _class_probs(mean: Tensor, likelihood: Likelihood) -> Tensor:
    if isinstance(likelihood, CategoricalLikelihood):
        return mean
    return torch.cat([1 - mean, mean], -1)
