"""Spectral norm, batch norm and dropout change the hypernetwork's behaviour as they should;
the global torch RNG is never used."""

import math

import pytest
import torch

from bnn_mcmc.hnets import HMLP, ChunkedHMLP

SHAPES = [[12, 6], [12]]


def _net(**kw):
    return HMLP(SHAPES, uncond_in_size=5, cond_in_size=0, layers=(32, 32), generator=0, **kw)


def _scale_up(net, factor):
    with torch.no_grad():
        for i in range(len(net.body.linears)):
            net.body.weight_tensor(i).mul_(factor)


def test_spectral_norm_normalises_every_layer():
    net = _net(use_spectral_norm=True)
    _scale_up(net, 10.0)
    z = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    net.train()
    for _ in range(30):  # power iterations run in training mode
        net(z, ret_format="flattened")
    for lin in net.body.linears:
        assert torch.linalg.matrix_norm(lin.weight.detach(), ord=2).item() == pytest.approx(
            1.0, abs=1e-3)
    plain = _net()
    assert torch.linalg.matrix_norm(plain.body.linears[0].weight.detach(), ord=2) > 1.1
    # ReLU network with 1-Lipschitz layers is 1-Lipschitz (up to power-iteration error)
    net.eval()
    with torch.no_grad():
        a, b = z, z + 0.1 * torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
        ratio = ((net(a, ret_format="flattened") - net(b, ret_format="flattened")).norm(dim=1)
                 / (a - b).norm(dim=1))
    assert ratio.max() <= 1.0 + 1e-3


def test_spectral_norm_applies_to_external_weights():
    """W / sigma_max(W) is invariant to the scale of external weight matrices."""
    net = _net(use_spectral_norm=True, no_uncond_weights=True)
    net.eval()
    g = torch.Generator().manual_seed(2)
    ws = [torch.randn(s, generator=g) for s in net.unconditional_param_shapes]
    scaled = [5.0 * w if w.dim() == 2 else w for w in ws]
    z = torch.randn(4, 5, generator=g)
    out = net(z, weights=ws, ret_format="flattened")
    torch.testing.assert_close(net(z, weights=scaled, ret_format="flattened"), out,
                               rtol=1e-4, atol=1e-5)
    no_sn = _net(no_uncond_weights=True)
    assert not torch.allclose(no_sn(z, weights=scaled, ret_format="flattened"),
                              no_sn(z, weights=ws, ret_format="flattened"), atol=1e-3)


def test_batch_norm_standardises_hidden_layers():
    net = _net(use_batch_norm=True)
    seen = []
    handle = net.body.norms[1].register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    z = 3.0 + 2.0 * torch.randn(256, 5, generator=torch.Generator().manual_seed(3))
    net.train()
    out = net(z, ret_format="flattened")
    a = seen[-1]
    assert a.mean(0).abs().max() < 1e-5
    assert (a.var(0, unbiased=False) - 1).abs().max() < 1e-3
    # in training mode a sample's output depends on the rest of the batch
    out_small = net(z[:8], ret_format="flattened")
    assert not torch.allclose(out_small, out[:8], atol=1e-4)
    assert net.body.norms[0].get_stats(0)[0].abs().max() > 0.0  # running stats updated
    # in eval mode the running statistics are used: no batch dependence
    net.eval()
    torch.testing.assert_close(net(z[:8], ret_format="flattened"),
                               net(z, ret_format="flattened")[:8])
    handle.remove()
    assert "body.norms.0.mean_0" in net.state_dict()


def test_dropout_train_vs_eval():
    p = 0.4
    net = _net(dropout_rate=p)
    drop = net.body.dropouts[0]
    seen = []
    drop.register_forward_hook(lambda m, i, o: seen.append((i[0].detach(), o.detach())))
    z = torch.randn(512, 5, generator=torch.Generator().manual_seed(4))
    net.train()
    o1, o2 = net(z, ret_format="flattened"), net(z, ret_format="flattened")
    assert not torch.allclose(o1, o2)
    x, y = seen[-1]
    active = x > 0
    dropped = (y[active] == 0).float()
    n = dropped.numel()
    assert abs(dropped.mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
    torch.testing.assert_close(y[active][y[active] != 0], x[active][y[active] != 0] / (1 - p))
    net.eval()
    torch.testing.assert_close(net(z, ret_format="flattened"), net(z, ret_format="flattened"))
    # reproducible from the generator seed
    a, b = _net(dropout_rate=p), _net(dropout_rate=p)
    torch.testing.assert_close(a(z, ret_format="flattened"), b(z, ret_format="flattened"))


def test_options_reach_chunked_internal_net():
    net = ChunkedHMLP(SHAPES, chunk_size=8, uncond_in_size=5, cond_in_size=0, layers=(16,),
                      dropout_rate=0.5, use_batch_norm=True, use_spectral_norm=True,
                      generator=0)
    body = net.internal_hnet.body
    assert body.norms is not None and body.dropouts is not None and body.use_spectral_norm
    with pytest.raises(ValueError, match="batch_norm"):
        ChunkedHMLP(SHAPES, chunk_size=8, uncond_in_size=5, cond_in_size=0, layers=(16,),
                    use_batch_norm=True, generator=0).apply_chunked_hyperfan_init()


def test_global_rng_untouched():
    state = torch.get_rng_state()
    net = _net(use_spectral_norm=True, dropout_rate=0.3, use_batch_norm=True)
    net.train()
    net(torch.ones(4, 5), ret_format="flattened")
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_regulariser_arguments():
    with pytest.raises(ValueError, match="dropout_rate"):
        _net(dropout_rate=1.5)
    with pytest.raises(TypeError, match="activation_fn"):
        _net(activation_fn="relu")
