"""Hyperfan initialisation: generated main-network weights have the target variance.

For each method we re-initialise the hypernetwork ``R`` times (independent generators),
generate weights for a batch of zero-mean inputs, and record per target tensor the mean
square of the generated entries (their empirical variance, the generated weights having
mean zero).  Averaged over replicates it estimates the expected variance; the tolerance
is 4 Monte Carlo standard errors of that average (replicate standard deviation / sqrt(R)),
and the standard error itself is required to be small so that the test has power.
"""

import math
import warnings

import pytest
import torch

from bnn_mcmc.hnets import HMLP, ChunkedHMLP, harmonic_mean, target_variances
from bnn_mcmc.hnets.hyperfan import chunk_variances, infer_meta

# [40,20]+bias, square [30,30]+bias, square [25,25] without bias, [10,25]+bias
SHAPES = [[40, 20], [40], [30, 30], [30], [25, 25], [10, 25], [10]]
R = 40


def _ratios(make, init, n_in, var_in=1.0, cond=None):
    """Replicate-wise ratios (mean square of generated tensor k) / target_k."""
    ratios = []
    for r in range(R):
        net = make(r)
        targets = init(net)
        g = torch.Generator().manual_seed(10_000 + r)
        z = math.sqrt(var_in) * torch.randn(64, n_in, generator=g)
        kw = {} if cond is None else {"cond_input": cond(g)}
        with torch.no_grad():
            out = net(z, ret_format="sequential", **kw)
        ms = [torch.stack([s[k] for s in out]).square().mean().item()
              for k in range(len(SHAPES))]
        ratios.append([m / t if t > 0 else m for m, t in zip(ms, targets)])
    return torch.tensor(ratios)


def _check(ratios, expect_zero=()):
    mean = ratios.mean(0)
    se = ratios.std(0) / math.sqrt(R)
    for k in range(ratios.shape[1]):
        if k in expect_zero:
            assert ratios[:, k].abs().max() == 0.0
            continue
        assert se[k] < 0.1, f"tensor {k}: standard error {se[k]:.3f} too large"
        assert abs(mean[k] - 1.0) < 4 * se[k] + 1e-12, (
            f"tensor {k}: variance ratio {mean[k]:.3f} +- {se[k]:.3f}")


def test_target_variances_formulas():
    meta = infer_meta(SHAPES)
    assert [m["name"] for m in meta] == ["weight", "bias", "weight", "bias", "weight",
                                         "weight", "bias"]
    v_in = target_variances(SHAPES, meta, "in", False)
    v_out = target_variances(SHAPES, meta, "out", False)
    v_h = target_variances(SHAPES, meta, "harmonic", False)
    assert v_in[0] == pytest.approx(2 / (2 * 20)) and v_out[0] == pytest.approx(2 / 40)
    assert v_in[1] == pytest.approx(1.0) and v_out[1] == pytest.approx(2 * (1 - 20 / 40))
    # square layer without bias: in, out and harmonic coincide
    assert v_in[4] == pytest.approx(2 / 25) == v_out[4] == v_h[4]
    # square layer with bias: harmonic mean of 1/30 and 2/30; bias-out variance is 0
    assert v_h[2] == pytest.approx(2 * (1 / 30) * (2 / 30) / (1 / 30 + 2 / 30))
    assert v_out[3] == 0.0 and v_h[3] == 0.0
    for a, b, h in zip(v_in, v_out, v_h):
        assert h == pytest.approx(harmonic_mean(a, b))
        assert min(a, b) <= h + 1e-15 <= max(a, b) + 2e-15
    xav = target_variances(SHAPES, meta, "in", True)
    assert xav[4] == pytest.approx(1 / 25)


@pytest.mark.parametrize("method", ["in", "out", "harmonic"])
def test_hmlp_hyperfan_variance(method):
    def make(r):
        return HMLP(SHAPES, uncond_in_size=6, cond_in_size=0, layers=(64, 64), generator=r)

    def init(net):
        net.apply_hyperfan_init(method=method)
        return target_variances(SHAPES, infer_meta(SHAPES), method, False)

    # bias-out variance c max(0, 1 - fan_in / fan_out) is 0 for the square [30, 30] layer
    # and the [10, 25] layer
    zero = (3, 6) if method in ("out", "harmonic") else ()
    _check(_ratios(make, init, 6), expect_zero=zero)


def test_hmlp_hyperfan_mixed_inputs_xavier_linear():
    """Conditional and unconditional inputs of different variances; Xavier targets and a
    linear (identity) hypernetwork."""
    def make(r):
        return HMLP(SHAPES, uncond_in_size=6, cond_in_size=4, layers=(64,),
                    activation_fn=None, no_cond_weights=True, generator=r)

    def init(net):
        net.apply_hyperfan_init(method="harmonic", use_xavier=True, uncond_var=0.25,
                                cond_var=4.0)
        return target_variances(SHAPES, infer_meta(SHAPES), "harmonic", True)

    _check(_ratios(make, init, 6, var_in=0.25, cond=lambda g: 2.0 * torch.randn(64, 4,
                                                                                generator=g)),
           expect_zero=(3, 6))


def test_hyperfan_overrides_and_errors():
    net = HMLP([[4, 3], [4]], uncond_in_size=2, cond_in_size=0, layers=(8,), generator=0)
    net.apply_hyperfan_init(w_var={"bias": 0.0}, b_val={"bias": 0.7})
    out = net(torch.randn(5, 2), ret_format="sequential")
    torch.testing.assert_close(out[0][1], torch.full((4,), 0.7))
    with pytest.raises(ValueError, match="method"):
        net.apply_hyperfan_init(method="fan")
    sn = HMLP([[4, 3]], uncond_in_size=2, cond_in_size=0, layers=(8,),
              use_spectral_norm=True, generator=0)
    with pytest.raises(ValueError, match="spectral"):
        sn.apply_hyperfan_init()


def test_hyperfan_uses_mnet_meta():
    import bnn_mcmc.bnn.mlp as mlp_mod
    mlp = mlp_mod.MLP(n_in=3, n_out=2, hidden_layers=(5,), use_bias=False, no_weights=True)
    meta = infer_meta(mlp.param_shapes, mlp)
    assert [m["name"] for m in meta] == ["weight", "weight"]
    # without bias the fan-in target has no factor 1/2
    assert target_variances(mlp.param_shapes, meta, "in", False)[0] == pytest.approx(2 / 3)
    net = HMLP(mlp.param_shapes, uncond_in_size=2, cond_in_size=0, layers=(8,), generator=0)
    net.apply_hyperfan_init(mnet=mlp)
    with pytest.raises(ValueError, match="param_shapes"):
        HMLP([[2, 2]], uncond_in_size=2, cond_in_size=0, generator=0).apply_hyperfan_init(
            mnet=mlp)


def test_chunk_variance_weighted_average():
    # chunk 3 covers 2 entries of var .2, 10 of var 1 and 4 of var .1
    cv = chunk_variances([[10, 5], [10], [3, 10], [3]], [0.2, 1.0, 0.1, 1.0], 16)
    assert cv[3] == pytest.approx((2 * 0.2 + 10 * 1.0 + 4 * 0.1) / 16)
    assert cv[-1] == pytest.approx((10 * 0.1 + 3 * 1.0) / 13)  # surplus not counted


@pytest.mark.parametrize("method", ["in", "out", "harmonic"])
def test_chunked_hyperfan_variance(method):
    # tensor sizes are multiples of the chunk size; fan_in < fan_out for every biased layer
    # so that all bias target variances are positive for every method
    shapes = [[20, 10], [20], [40, 20], [40]]

    def make(r):
        return ChunkedHMLP(shapes, chunk_size=10, chunk_emb_size=8, uncond_in_size=4,
                           cond_in_size=0, layers=(64, 64), generator=r)

    def init(net):
        net.apply_chunked_hyperfan_init(method=method, uncond_var=0.01)
        return target_variances(shapes, infer_meta(shapes), method, False)

    ratios = []
    for r in range(R):
        net = make(r)
        targets = init(net)
        z = 0.1 * torch.randn(64, 4, generator=torch.Generator().manual_seed(r))
        with torch.no_grad():
            out = net(z, ret_format="sequential")
        ratios.append([torch.stack([s[k] for s in out]).square().mean().item() / t
                       for k, t in enumerate(targets)])
    _check(torch.tensor(ratios))


@pytest.mark.parametrize("layers", [(64,), (64, 64)])
def test_hmlp_hyperfan_tanh_reaches_the_target(layers):
    """A tanh hypernetwork with unit-variance noise: the gain (5/3)^2 alone gave about half
    the target variance; the propagated second moment gives the target."""

    def make(r):
        return HMLP(SHAPES, uncond_in_size=6, cond_in_size=0, layers=layers,
                    activation_fn=torch.nn.Tanh(), generator=r)

    def init(net):
        net.apply_hyperfan_init(method="in")
        return target_variances(SHAPES, infer_meta(SHAPES), "in", False)

    # the propagation treats pre-activations as Gaussian, which a fan-in of 6 uniform
    # weights only approximates: a few per cent of bias are allowed (the gain alone: -50 %)
    ratios = _ratios(make, init, 6)
    mean, se = ratios.mean(0), ratios.std(0) / math.sqrt(R)
    assert bool((se < 0.1).all())
    assert bool(((mean - 1.0).abs() < 0.06 + 4 * se).all()), mean


def test_chunked_hyperfan_default_input_variance_needs_no_clipping():
    """uncond_var=1 with targets ~2/fan_in: the embeddings used to be clipped (weights many
    times too large); the output-layer factor alpha meets every target without clipping."""
    shapes = [[20, 10], [20], [40, 20], [40]]

    def make(r):
        return ChunkedHMLP(shapes, chunk_size=10, chunk_emb_size=2, uncond_in_size=8,
                           cond_in_size=0, layers=(64,), generator=r)

    ratios = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for r in range(R):
            net = make(r)
            net.apply_chunked_hyperfan_init(uncond_var=1.0)
            targets = target_variances(shapes, infer_meta(shapes), "in", False)
            z = torch.randn(64, 8, generator=torch.Generator().manual_seed(r))
            with torch.no_grad():
                out = net(z, ret_format="sequential")
            ratios.append([torch.stack([s[k] for s in out]).square().mean().item() / t
                           for k, t in enumerate(targets)])
    _check(torch.tensor(ratios))
