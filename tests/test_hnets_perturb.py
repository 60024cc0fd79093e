"""HPerturbWrapper: the perturbation scale is sigma_noise, handlers are applied, sizes checked."""

import math

import pytest
import torch

from bnn_mcmc.hnets import HMLP, HPerturbWrapper

SHAPES = [[6, 4], [6]]
N_OUT = 30


def _inner(n=3):
    return HMLP(SHAPES, uncond_in_size=n, cond_in_size=0, layers=(8,), generator=0)


@pytest.mark.parametrize("sigma", [0.02, 0.5])
def test_shared_perturbation_scale_is_sigma(sigma):
    inner = _inner()
    wrap = HPerturbWrapper(inner, sigma_noise=sigma)
    assert wrap.uncond_in_size == N_OUT and wrap.internal_hnet is inner
    n = 20_000
    z = torch.randn(n, N_OUT, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = wrap(z, ret_format="flattened")
        d = w - inner(z[:, :3], ret_format="flattened")
    # exact: the perturbation is sigma * z, z reused including its first n entries
    torch.testing.assert_close(d, sigma * z, rtol=1e-5, atol=1e-6)
    # measured: per-coordinate standard deviation sigma (not sigma**2); the sample sd of
    # n normal draws has standard error sd / sqrt(2 n); all N_OUT coordinates pooled
    sd = d.std(0)
    se = sigma / math.sqrt(2 * n)
    assert abs(sd.mean().item() - sigma) < 4 * se / math.sqrt(N_OUT)
    assert (sd - sigma).abs().max().item() < 5 * se


def test_independent_perturbation():
    inner = _inner()
    wrap = HPerturbWrapper(inner, sigma_noise=0.3, perturbation="independent")
    assert wrap.uncond_in_size == 3 + N_OUT
    z = torch.randn(4000, 3 + N_OUT, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        d = wrap(z, ret_format="flattened") - inner(z[:, :3], ret_format="flattened")
    torch.testing.assert_close(d, 0.3 * z[:, 3:], rtol=1e-5, atol=1e-6)
    # the network input z[:, :3] does not enter the perturbation: correlation ~ 0
    corr = torch.corrcoef(torch.cat([d[:, :3], z[:, :3]], 1).T)[:3, 3:]
    assert corr.abs().max() < 4 / math.sqrt(4000)


def test_handlers_are_applied():
    dim_z = 3
    inner = _inner(dim_z)
    calls = {}

    def input_handler(uncond_input=None, cond_input=None, cond_id=None):
        calls["in"] = uncond_input.shape
        return uncond_input[:, :dim_z], cond_input, cond_id

    def output_handler(hnet_out_int, uncond_input=None, cond_input=None, cond_id=None):
        calls["out"] = hnet_out_int.shape
        return hnet_out_int + uncond_input[:, dim_z:]

    wrap = HPerturbWrapper(inner, sigma_noise=None, perturbation=None,
                           input_handler=input_handler, output_handler=output_handler)
    z = torch.randn(5, dim_z + N_OUT)
    out = wrap(z, ret_format="sequential")
    assert calls == {"in": (5, dim_z + N_OUT), "out": (5, N_OUT)}
    expect = inner(z[:, :dim_z], ret_format="flattened") + z[:, dim_z:]
    torch.testing.assert_close(wrap.convert_out_format(out, "sequential", "flattened"), expect)
    # an input handler with the built-in perturbation
    wrap2 = HPerturbWrapper(inner, sigma_noise=0.1, input_handler=lambda uncond_input=None,
                            cond_input=None, cond_id=None: (2 * uncond_input[:, :dim_z],
                                                           cond_input, cond_id))
    z2 = torch.randn(4, N_OUT)
    torch.testing.assert_close(wrap2(z2, ret_format="flattened"),
                               inner(2 * z2[:, :dim_z], ret_format="flattened") + 0.1 * z2)


def test_size_checks():
    inner = _inner(3)
    with pytest.raises(ValueError, match="differs"):
        HPerturbWrapper(inner, hnet_uncond_in_size=4)
    big = HMLP([[2]], uncond_in_size=5, cond_in_size=0, layers=(4,), generator=0)
    with pytest.raises(ValueError, match="independent"):
        HPerturbWrapper(big)
    assert HPerturbWrapper(big, perturbation="independent").uncond_in_size == 7
    with pytest.raises(ValueError, match="sigma_noise"):
        HPerturbWrapper(inner, output_handler=lambda o, **k: o)
    with pytest.raises(ValueError, match="sigma_noise"):
        HPerturbWrapper(inner, sigma_noise=-1.0)
    with pytest.raises(ValueError, match="perturbation"):
        HPerturbWrapper(inner, perturbation="additive")
    with pytest.raises(ValueError, match="hnet_uncond_in_size"):
        HPerturbWrapper(inner, hnet_uncond_in_size=3,
                        input_handler=lambda **k: (None, None, None))
    with pytest.raises(TypeError):
        HPerturbWrapper(torch.nn.Linear(2, 2))
    wrap = HPerturbWrapper(inner)
    with pytest.raises(ValueError, match="uncond_input"):
        wrap(torch.randn(2, N_OUT + 1))
    bad = HPerturbWrapper(inner, sigma_noise=None, perturbation=None,
                          output_handler=lambda o, **k: o[:, :2])
    with pytest.raises(ValueError, match="output_handler"):
        bad(torch.randn(2, N_OUT))


def test_wrapper_params_and_gradients():
    inner = _inner()
    wrap = HPerturbWrapper(inner, sigma_noise=0.1)
    assert wrap.unconditional_param_shapes == inner.unconditional_param_shapes
    assert {id(p) for p in wrap.parameters()} == {id(p) for p in inner.parameters()}
    wrap(torch.randn(3, N_OUT), ret_format="flattened").sum().backward()
    assert all(p.grad is not None for p in inner.unconditional_params)
