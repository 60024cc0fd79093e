"""Shapes, formats, batching, external weights and integration of bnn_mcmc.hnets."""

import itertools

import pytest
import torch

from bnn_mcmc.hnets import HMLP, ChunkedHMLP, HPerturbWrapper, StructuredHMLP
from bnn_mcmc.hnets.formats import FORMATS

SHAPES = [[10, 5], [10], [3, 10], [3]]
N_OUT = 50 + 10 + 30 + 3


def _concat_assembly(chunks):
    return [t for chunk in chunks for t in chunk]


def make_nets():
    """(name, network, kwargs of a forward call for a batch of B=3)."""
    g = 0
    z3 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    hmlp = HMLP(SHAPES, uncond_in_size=4, cond_in_size=2, layers=(16,), num_cond_embs=2,
                generator=g)
    chunked = ChunkedHMLP(SHAPES, chunk_size=16, chunk_emb_size=3, uncond_in_size=4,
                          cond_in_size=0, layers=(16,), generator=g)
    structured = StructuredHMLP(SHAPES, [[[10, 5], [10]], [[3, 10], [3]]], [1, 1], 2,
                                {"layers": [8]}, _concat_assembly, uncond_in_size=4,
                                cond_in_size=0, generator=g)
    inner = HMLP(SHAPES, uncond_in_size=4, cond_in_size=0, layers=(16,), generator=g)
    wrapper = HPerturbWrapper(inner, sigma_noise=0.1)
    z_w = torch.randn(3, N_OUT, generator=torch.Generator().manual_seed(2))
    return [
        ("HMLP", hmlp, {"uncond_input": z3, "cond_id": [0, 1, 1]}),
        ("ChunkedHMLP", chunked, {"uncond_input": z3}),
        ("StructuredHMLP", structured, {"uncond_input": z3}),
        ("HPerturbWrapper", wrapper, {"uncond_input": z_w}),
    ]


def _first(kwargs):
    out = {}
    for k, v in kwargs.items():
        out[k] = v[:1] if torch.is_tensor(v) else (v[:1] if isinstance(v, list) else v)
    return out


@pytest.mark.parametrize("name,net,kwargs", make_nets(), ids=lambda x: x if isinstance(x, str)
                         else "")
def test_formats_and_conversions(name, net, kwargs):
    assert net.num_outputs == N_OUT
    for kw, b in ((kwargs, 3), (_first(kwargs), 1)):
        outs = {f: net(**kw, ret_format=f) for f in FORMATS}
        flat = outs["flattened"]
        assert flat.shape == (b, N_OUT)
        assert len(outs["sequential"]) == b
        for sample in outs["sequential"]:
            assert [list(t.shape) for t in sample] == SHAPES
        if b == 1:
            assert [list(t.shape) for t in outs["squeezed"]] == SHAPES
        else:
            assert len(outs["squeezed"]) == b
        # the list formats hold the same numbers as the flattened rows
        for i, sample in enumerate(outs["sequential"]):
            torch.testing.assert_close(torch.cat([t.reshape(-1) for t in sample]), flat[i])
        for src, trg in itertools.product(FORMATS, FORMATS):
            conv = net.convert_out_format(outs[src], src, trg)
            back = net.convert_out_format(conv, trg, "flattened")
            torch.testing.assert_close(back, flat)
            if trg == "flattened":
                torch.testing.assert_close(conv, flat)


def test_batch_of_embeddings_gives_batch_of_weight_lists():
    net = HMLP(SHAPES, uncond_in_size=0, cond_in_size=5, layers=(16,), no_cond_weights=True,
               generator=3)
    e = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    out = net(cond_input=e, ret_format="sequential")
    assert len(out) == 6
    flat = net(cond_input=e, ret_format="flattened")
    for i in range(6):  # each sample equals its own single-input pass
        single = net(cond_input=e[i:i + 1], ret_format="squeezed")
        for a, b in zip(out[i], single):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(flat[i], net(cond_input=e[i], ret_format="flattened")[0])
    # distinct inputs give distinct weights
    assert not torch.allclose(flat[0], flat[1])


def test_cond_ids_select_held_embeddings():
    net = HMLP(SHAPES, cond_in_size=3, num_cond_embs=3, layers=(8,), generator=4)
    out = net(cond_id=[2, 0, 2], ret_format="flattened")
    torch.testing.assert_close(out[0], out[2])
    torch.testing.assert_close(out[0], net(cond_input=net.get_cond_in_emb(2).unsqueeze(0),
                                           ret_format="flattened")[0])
    with pytest.raises(ValueError, match="cond_id"):
        net(ret_format="flattened")
    with pytest.raises(ValueError, match="cond_id"):
        net(cond_id=3)


@pytest.mark.parametrize("name,net,kwargs", make_nets()[:3], ids=["HMLP", "Chunked", "Struct"])
def test_external_weights_match_and_get_gradients(name, net, kwargs):
    held = net(**kwargs, ret_format="flattened")
    params = [p.detach().clone().requires_grad_() for p in net.unconditional_params]
    ext = net(**kwargs, weights=params, ret_format="flattened")
    torch.testing.assert_close(ext, held)
    ext.square().sum().backward()
    assert all(p.grad is not None for p in params)
    dp = [torch.full_like(p, 0.5) for p in params]
    shifted = net.add_to_uncond_params(dp)
    for s, p in zip(shifted, net.unconditional_params):
        torch.testing.assert_close(s, p + 0.5)
    assert not torch.allclose(net(**kwargs, weights=shifted, ret_format="flattened"), held)
    with pytest.raises(ValueError):
        net.add_to_uncond_params(dp[:-1])


def test_no_uncond_weights_requires_weights():
    net = HMLP(SHAPES, uncond_in_size=4, cond_in_size=0, layers=(8,), no_uncond_weights=True,
               generator=5)
    assert net.unconditional_params is None
    assert list(net.parameters()) == []
    z = torch.randn(2, 4)
    with pytest.raises(ValueError, match="weights"):
        net(z)
    ws = [torch.randn(s) for s in net.unconditional_param_shapes]
    assert net(z, weights={"uncond_weights": ws}, ret_format="flattened").shape == (2, N_OUT)


def test_chunked_conditional_chunk_embeddings():
    net = ChunkedHMLP(SHAPES, chunk_size=20, chunk_emb_size=4, cond_chunk_embs=True,
                      cond_in_size=0, num_cond_embs=3, layers=(8,), generator=6)
    assert net.num_chunks == 5
    assert net.conditional_param_shapes == [[5, 4]] * 3
    out = net(cond_id=[0, 1, 2, 0], ret_format="flattened")
    assert out.shape == (4, N_OUT)
    torch.testing.assert_close(out[0], out[3])
    embs = torch.stack([net.get_chunk_emb(cond_id=i) for i in (2, 1)])
    torch.testing.assert_close(net(weights={"chunk_embs": embs}, ret_format="flattened"),
                               out[[2, 1]])


def test_structured_templates_and_assembly():
    # two chunk types; the [20, 5] target is assembled from two [10, 5] chunks
    def asm(chunks):
        ret = [*chunks[0], *chunks[1], *chunks[2]]
        for t, tensor in enumerate(chunks[3]):
            ret.append(torch.cat([tensor, chunks[4][t]], dim=0))  # one sample at a time
        return ret

    shapes = [[3], [3], [10, 5], [10], [20, 5], [20]]
    net = StructuredHMLP(shapes, [[[3]], [[10, 5], [10]]], [2, 3], 8, {"layers": [10, 10]},
                         asm, cond_chunk_embs=True, cond_in_size=0, num_cond_embs=2,
                         generator=7)
    assert net.chunk_emb_shapes == [[2, 8], [3, 8]]
    assert net.num_chunks == 5
    out = net(cond_id=[0, 1, 1], ret_format="sequential")
    assert [list(t.shape) for t in out[0]] == shapes
    # chunk k of the second type (its embedding) generates rows 10k..10k+9 of the output
    h = net.internal_hnets[1]
    ce = net.get_chunk_embs(cond_id=0)[1]
    direct = h(cond_input=ce, ret_format="sequential")
    torch.testing.assert_close(out[0][4][:10], direct[1][0])
    torch.testing.assert_close(out[0][4][10:], direct[2][0])
    with pytest.raises(ValueError, match="hmlp_kwargs"):
        StructuredHMLP(shapes, [[[3]]], [1], 2, {"cond_in_size": 2}, None)
    with pytest.raises(ValueError, match="assembly_fct"):
        StructuredHMLP(shapes, [[[3]]], [2], 2, {}, None)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="target_shapes"):
        HMLP([[3, 0]])
    with pytest.raises(ValueError, match="ret_format"):
        HMLP(SHAPES, layers=(4,), generator=0)(ret_format="list")
    net = HMLP(SHAPES, uncond_in_size=4, cond_in_size=0, layers=(4,), generator=0)
    with pytest.raises(ValueError, match="uncond_input"):
        net(torch.randn(2, 5))
    with pytest.raises(ValueError, match="condition"):
        net(torch.randn(2, 4), condition=1)
    with pytest.raises(ValueError, match="weights"):
        net(torch.randn(2, 4), weights=[torch.zeros(1)])


def test_feeds_main_network_batch():
    import bnn_mcmc.bnn.mlp as mlp_mod
    mlp = mlp_mod.MLP(n_in=2, n_out=1, hidden_layers=(8,), no_weights=True)
    hnet = HMLP(mlp.param_shapes, uncond_in_size=3, cond_in_size=0, layers=(16,), generator=8)
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(1))
    flat = hnet(z, ret_format="flattened")
    y = mlp(x, weights=flat)
    assert y.shape == (5, 7, 1)
    for b, ws in enumerate(hnet(z, ret_format="sequential")):
        torch.testing.assert_close(y[b], mlp(x, weights=ws))
    y.sum().backward()
    assert all(p.grad is not None for p in hnet.unconditional_params)
