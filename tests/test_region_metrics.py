"""Region comparison on predictives whose distances and calibration are known exactly."""

import math
import warnings

import pytest
import torch

from bnn_mcmc.bnn import MLP, BernoulliLikelihood, GaussianLikelihood
from bnn_mcmc.diagnostics import (
    Cost,
    compare_by_region,
    compare_posteriors,
    expected_calibration_error,
    pareto_k,
    summarize_repeats,
)
from bnn_mcmc.diagnostics.predictive_metrics import effective_rank

NORMAL = torch.distributions.Normal(0.0, 1.0)


def _linear():
    """f(x) = a x + b with flat weights (a, b)."""
    return MLP(1, 1, hidden_layers=(), no_weights=True)


def _const(bias: torch.Tensor) -> torch.Tensor:
    """Draws of the constant function f = bias."""
    return torch.stack([torch.zeros_like(bias), bias], -1).double()


@pytest.mark.parametrize("delta", [0.5, 2.0])
def test_distances_of_two_gaussians(delta, float64_default):
    # predictives N(0, 1) (method) and N(delta, 1) (reference):
    # TV = 2 Phi(delta / 2) - 1, W1 = delta, KL = delta^2 / 2
    x = torch.linspace(-1, 1, 7)[:, None]
    s = 50
    post = {"ref": _const(torch.full((s,), delta)), "q": _const(torch.zeros(s))}
    res = compare_by_region(
        post,
        _linear(),
        x,
        torch.zeros(7, 1),
        GaussianLikelihood(1.0),
        regions={"left": x[:, 0] < 0},
        reference="ref",
    )
    row = res.row("q", "left")
    tv = 2 * float(NORMAL.cdf(torch.tensor(delta / 2))) - 1
    assert row.num_points == 3
    assert row.tv == pytest.approx(tv, abs=2e-3)
    assert row.w1 == pytest.approx(delta, rel=2e-3)
    assert row.kl == pytest.approx(delta**2 / 2, rel=5e-3)
    # identical reference draws: both halves agree exactly
    assert res.row("q", "all").tv_floor == pytest.approx(0.0, abs=1e-9)
    assert res.row("ref", "all").tv == 0.0 and res.row("ref", "all").sd_ratio == 1.0
    assert res.floor == "split draws"


def test_coverage_of_a_calibrated_predictive_is_nominal(float64_default):
    # targets drawn from the predictive itself: coverage(a) ~ Binomial(n, a) / n
    g = torch.Generator().manual_seed(1)
    s, n = 200, 800
    bias = 0.7 * torch.randn(s, generator=g)
    pick = torch.randint(0, s, (n,), generator=g)
    y = (bias[pick] + torch.randn(n, generator=g))[:, None]
    x = torch.zeros(n, 1)
    wide = y * 2.0  # the same predictive against targets twice as spread: over-confident
    for targets, calibrated in ((y, True), (wide, False)):
        res = compare_by_region(
            {"ref": _const(bias)},
            _linear(),
            x,
            targets.double(),
            GaussianLikelihood(1.0),
            regions={},
            reference="ref",
        )
        row = res.row("ref", "all")
        for level, cov in zip(
            (0.5, 0.9, 0.95), (row.coverage_50, row.coverage_90, row.coverage_95)
        ):
            mcse = math.sqrt(level * (1 - level) / n)
            if calibrated:
                assert abs(cov - level) < 3.5 * mcse
            else:
                assert cov < level - 5 * mcse
        if calibrated:
            assert row.calibration_error < 0.03
            assert row.reliability.kind == "pit" and sum(row.reliability.counts) == n
        else:
            assert row.calibration_error > 0.1


def _hat_draws(s: int, c_scale: float, g: torch.Generator) -> torch.Tensor:
    """f(x) = c hat(x) + b, hat nonzero only in (-1, 1): spread only in the gap."""
    c = c_scale * torch.randn(s, 1, generator=g)
    b = 0.05 * torch.randn(s, 1, generator=g)
    w2 = c * torch.tensor([1.0, -2.0, 1.0])
    return torch.cat([torch.ones(s, 3), torch.tensor([1.0, 0.0, -1.0]).expand(s, 3), w2, b], 1)


def test_gap_region_shows_the_missing_spread(float64_default):
    x = torch.cat([torch.linspace(-2, -1, 20), torch.linspace(1, 2, 20)])[:, None]
    x_test = torch.linspace(-2, 2, 41)[:, None]
    net = MLP(1, 1, hidden_layers=(3,), no_weights=True)
    g = torch.Generator().manual_seed(0)
    ref = torch.stack([_hat_draws(300, 1.0, g), _hat_draws(300, 1.0, g)])  # two chains
    post = {"NUTS": ref.double(), "flat": _hat_draws(300, 0.0, g).double()}
    res = compare_posteriors(
        post,
        net,
        x_test,
        torch.zeros(41, 1),
        GaussianLikelihood(25.0),
        regions="auto",
        train_inputs=x,
        costs={"flat": Cost(1.5, 300)},
    )
    assert {r.region for r in res.rows} == {"near", "gap", "all"}
    gap, near = res.row("flat", "gap"), res.row("flat", "near")
    assert gap.num_points == 17  # |x| < 0.85: two median spacings from the data
    assert gap.sd_ratio < 0.3 and 0.7 < near.sd_ratio < 1.4
    # in the gap the distance is far above the MCMC noise floor (split chains); near the
    # data it is not
    assert res.floor == "split chains"
    assert gap.tv > 5 * gap.tv_floor and gap.w1 > 5 * gap.w1_floor and gap.kl > 5 * gap.kl_floor
    assert near.tv < 3 * near.tv_floor + 0.02
    assert gap.wall_time_s == 1.5 and gap.grad_evals == 300
    assert math.isnan(res.row("NUTS", "gap").wall_time_s)
    assert res.row("NUTS", "all").effective_rank > 1.05  # c (dominant) and b spread
    assert res.row("flat", "all").effective_rank == pytest.approx(1.0)  # only b
    frame = res.to_dataframe()
    assert frame.loc[("flat", "gap"), "tv"] == gap.tv
    assert "tv_floor" in str(res)

    again = compare_posteriors(
        post,
        net,
        x_test,
        torch.zeros(41, 1),
        GaussianLikelihood(25.0),
        regions="auto",
        train_inputs=x,
        generator=torch.Generator().manual_seed(5),
    )
    summary = summarize_repeats([res, again])
    row = next(r for r in summary.rows if r.posterior == "flat" and r.region == "gap")
    assert row.num_repeats == 2
    assert row.mean["tv"] == pytest.approx((gap.tv + again.row("flat", "gap").tv) / 2)
    assert row.sd["sd_ratio"] == pytest.approx(0.0, abs=1e-12)  # no grid involved
    assert "±" in summary.to_text(["tv"])
    assert summary.to_dataframe().loc[("flat", "gap"), "tv_sd"] == row.sd["tv"]


def test_classification_region_ece(float64_default):
    g = torch.Generator().manual_seed(2)
    n = 200
    x = torch.randn(n, 1, generator=g)
    labels = (torch.rand(n, generator=g) < torch.sigmoid(2 * x[:, 0])).double()[:, None]
    a = 2 + 0.3 * torch.randn(100, generator=g)
    draws = torch.stack([a, 0.1 * torch.randn(100, generator=g)], -1).double()
    res = compare_by_region(
        {"NUTS": draws, "q": draws[:, [0, 1]] * torch.tensor([0.5, 1.0])},
        _linear(),
        x,
        labels,
        BernoulliLikelihood(),
        regions={"pos": x[:, 0] > 0},
    )
    row = res.row("NUTS", "all")
    probs = torch.sigmoid(x[:, 0][None] * draws[:, :1] + draws[:, 1:]).mean(0)
    expected = expected_calibration_error(torch.stack([1 - probs, probs], -1), labels[:, 0].long())
    assert row.calibration_error == pytest.approx(expected, abs=1e-12)
    assert math.isnan(row.coverage_90)
    assert row.reliability.kind == "confidence" and sum(row.reliability.counts) == n
    q = res.row("q", "pos")
    assert q.tv == q.w1 and q.tv > 0.05 and q.kl > 0


def test_effective_rank_counts_directions():
    g = torch.Generator().manual_seed(4)
    iso = torch.randn(4000, 8, generator=g, dtype=torch.float64)
    assert 7.5 < effective_rank(iso) <= 8.0
    assert effective_rank(iso[:, :3] @ torch.randn(3, 8, generator=g).double()) < 3.0


def test_bad_regions_are_rejected():
    x = torch.zeros(5, 1)
    post = {"NUTS": _const(torch.zeros(4))}
    for regions, match in [
        ({"r": torch.zeros(5, dtype=torch.bool)}, "selects no test input"),
        ({"r": torch.ones(4, dtype=torch.bool)}, r"shape \(5,\)"),
        ("auto", "needs train_inputs"),
    ]:
        with pytest.raises(ValueError, match=match):
            compare_by_region(
                post, _linear(), x.double(), x.double(), GaussianLikelihood(), regions=regions
            )
    with pytest.raises(ValueError, match="noise_floor"):
        compare_by_region(
            post,
            _linear(),
            x.double(),
            x.double(),
            GaussianLikelihood(),
            regions={},
            noise_floor="other",
        )


def test_pareto_k_matches_arviz_psislw():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az
    g = torch.Generator().manual_seed(3)
    for scale in (0.5, 1.5, 3.0):
        # proposal N(0, 1), target N(0, scale^2): heavy weights when the target is wider
        z = torch.randn(2000, generator=g, dtype=torch.float64)
        lw = -0.5 * (z / scale) ** 2 - math.log(scale) + 0.5 * z**2
        _, k_az = az.psislw(lw.numpy().copy())
        assert pareto_k(lw) == pytest.approx(float(k_az), abs=1e-8)
    assert pareto_k(torch.zeros(100)) != pareto_k(lw)
