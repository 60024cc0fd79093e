"""The examples of the original toolkit's hypernetwork docs, transcribed as test code
(adapted only by the import), and the seed's constructor signatures and interface."""

import pytest
import torch

from bnn_mcmc.hnets import HMLP, ChunkedHMLP, HPerturbWrapper, StructuredHMLP


def test_verbose_and_seed_positional_order(capsys):
    shapes = [[10, 5], [10]]
    # seed order: (target_shapes, uncond_in_size, cond_in_size, layers, verbose, activation_fn)
    net = HMLP(shapes, 0, 8, (100, 100), True)
    assert isinstance(net.body.activation_fn, torch.nn.ReLU)
    assert "HMLP" in capsys.readouterr().out
    HMLP(shapes, 0, 8, (4,), False)
    assert capsys.readouterr().out == ""
    ChunkedHMLP(shapes, 16, 8, False, 0, 8, (4,), True)
    assert "ChunkedHMLP" in capsys.readouterr().out
    HPerturbWrapper(HMLP(shapes, 3, 0, (4,), False), None, 0.02, None, None, True)
    assert "HPerturbWrapper" in capsys.readouterr().out


def test_interface_forward_example():
    # target_shapes [[10, 5], [10]], a batch of condition embeddings as the only input
    hnet = HMLP([[10, 5], [10]], uncond_in_size=0, cond_in_size=4, layers=(8,),
                no_cond_weights=True, verbose=False)
    assert hnet.num_outputs == 60
    e = torch.randn(3, 4)
    assert hnet(cond_input=e, ret_format="flattened").shape == (3, 60)
    seq = hnet(cond_input=e, ret_format="sequential")
    assert [[list(t.shape) for t in s] for s in seq] == [[[10, 5], [10]]] * 3
    sq = hnet(cond_input=e[:1], ret_format="squeezed")
    assert [list(t.shape) for t in sq] == [[10, 5], [10]]


def test_unconditional_params_ref_example():
    hnet = HMLP([[10, 5], [10]], 0, 8, (8,), False, num_cond_embs=2)
    for i in range(len(hnet.unconditional_params)):
        assert hnet.internal_params[hnet.unconditional_params_ref[i]] is \
            hnet.unconditional_params[i]
    assert hnet.num_params == sum(p.numel() for p in hnet.internal_params)
    assert len(hnet.param_shapes_meta) == len(hnet.param_shapes)
    assert [m["name"] for m in hnet.param_shapes_meta][:2] == ["weight", "bias"]
    assert hnet.param_shapes_meta[-1]["name"] == "embedding"
    assert hnet.hyper_shapes_learned is None and hnet.hyper_shapes_learned_ref is None
    assert hnet.has_fc_out and hnet.has_linear_out and hnet.distillation_targets() is None
    ext = HMLP([[10, 5], [10]], 3, 0, (8,), False, no_uncond_weights=True)
    assert ext.hyper_shapes_learned == ext.unconditional_param_shapes
    assert ext.hyper_shapes_learned_ref == ext.unconditional_param_shapes_ref


def test_structured_example_1_four_hypernets():
    def assembly_fct(list_of_chunks):
        assert len(list_of_chunks) == 4
        ret = []
        for chunk in list_of_chunks:
            ret.extend(chunk)
        return ret

    hnet = StructuredHMLP([[3], [3], [10, 5], [10], [20, 5], [20]],
                          [[[3]], [[10, 5], [10]], [[20, 5], [20]]], [2, 1, 1], 8,
                          {'layers': [10, 10]}, assembly_fct, cond_chunk_embs=True,
                          uncond_in_size=0, cond_in_size=0, verbose=True,
                          no_uncond_weights=False, no_cond_weights=False, num_cond_embs=1)
    out = hnet(cond_id=0)
    assert [list(t.shape) for t in out] == [[3], [3], [10, 5], [10], [20, 5], [20]]


def test_structured_example_2_per_sample_assembly():
    # per-sample assembly: concatenation along dim 0 of one sample's tensors
    def assembly_fct(list_of_chunks):
        assert len(list_of_chunks) == 5
        ret = [*list_of_chunks[0], *list_of_chunks[1], *list_of_chunks[2]]
        for t, tensor in enumerate(list_of_chunks[3]):
            ret.append(torch.cat([tensor, list_of_chunks[4][t]], dim=0))
        return ret

    hnet = StructuredHMLP([[3], [3], [10, 5], [10], [20, 5], [20]],
                          [[[3]], [[10, 5], [10]]], [2, 3], 8,
                          {'layers': [10, 10]}, assembly_fct, cond_chunk_embs=True,
                          uncond_in_size=0, cond_in_size=0, verbose=True,
                          no_uncond_weights=False, no_cond_weights=False, num_cond_embs=1)
    out = hnet(cond_id=[0, 0, 0], ret_format="sequential")
    assert [list(t.shape) for t in out[1]] == [[3], [3], [10, 5], [10], [20, 5], [20]]


def test_structured_example_3_templates():
    s = [4, 3]

    def assembly_fct(list_of_chunks):
        assert len(list_of_chunks) == 3
        return [list_of_chunks[0][0], list_of_chunks[1][0],
                list_of_chunks[2][0]]

    # (the seed's example lacks a comma after assembly_fct)
    hnet = StructuredHMLP([s, s, s], [[s]], [3], 2,
                          {'layers': [], 'use_bias': False}, assembly_fct,
                          cond_chunk_embs=True, uncond_in_size=0, cond_in_size=0,
                          verbose=True, no_uncond_weights=False, no_cond_weights=False,
                          num_cond_embs=1)
    out = hnet(cond_id=0)
    assert [list(t.shape) for t in out] == [s, s, s]


def test_perturb_wrapper_handler_examples():
    inner = HMLP([[10, 5], [10]], 5, 0, (8,), False)

    def input_handler(uncond_input=None, cond_input=None, cond_id=None):
        assert uncond_input is not None
        n = 5
        return uncond_input[:, :n], cond_input, cond_id

    wrap = HPerturbWrapper(inner, input_handler=input_handler, hnet_uncond_in_size=None)
    assert wrap(uncond_input=torch.randn(2, 60), ret_format="flattened").shape == (2, 60)


def test_condition_selects_batchnorm_statistics():
    net = HMLP([[4, 3]], 3, 2, (8,), False, num_cond_embs=2, use_batch_norm=True)
    assert net.body.num_bn_stats == 2
    z = torch.randn(16, 3)
    net.train()
    net(z, cond_id=0, condition=1)
    m0, _ = net.body.norms[0].get_stats(0)
    m1, _ = net.body.norms[0].get_stats(1)
    assert m0.abs().max() == 0 and m1.abs().max() > 0  # only condition 1's stats moved
    with pytest.raises(ValueError, match="condition"):
        net(z, cond_id=0)
    net.eval()
    assert net(z[:1], cond_id=1, condition=1, ret_format="flattened").shape == (1, 12)


def test_implicit_sample_runs_in_eval_mode():
    from bnn_mcmc.variational import SSGE, ImplicitPosterior
    hnet = HMLP([[4, 3]], 3, 0, (8,), False, use_batch_norm=True, dropout_rate=0.5)
    q = ImplicitPosterior(hnet, SSGE())
    q.train()
    assert q.sample(1, generator=0).shape == (1, 12)  # batch norm needs eval for B=1
    torch.testing.assert_close(q.sample(4, generator=1), q.sample(4, generator=1))
    assert hnet.training


def test_hcontainer_example_1_shared_and_condition_specific_tensors():
    from bnn_mcmc.hnets import HContainer

    # First-layer weights.
    fl_hnet = HMLP([[10, 5], [5]], num_cond_embs=5, verbose=False)

    def assembly_fct(list_of_hnet_tensors, uncond_tensors, cond_tensors):
        assert len(list_of_hnet_tensors) == 1
        return list_of_hnet_tensors[0] + uncond_tensors + cond_tensors

    hnet = HContainer([[10, 5], [5], [5], [5], [5, 5]], assembly_fct,
                      hnets=[fl_hnet], uncond_param_shapes=[[5], [5]],
                      cond_param_shapes=[[5, 5]],
                      uncond_param_names=['bn_scale', 'bn_shift'],
                      cond_param_names=['weight'], num_cond_embs=5, verbose=False)
    out = hnet(cond_id=2)
    assert [list(t.shape) for t in out] == [[10, 5], [5], [5], [5], [5, 5]]
    assert torch.equal(out[4], hnet.own_conditional_tensors(2)[0])
    assert torch.equal(out[2], hnet.uncond_tensors[0])
    batch = hnet(cond_id=[0, 3], ret_format="flattened")
    assert batch.shape == (2, 50 + 5 * 3 + 25)
    assert torch.equal(batch[1, -25:], hnet.own_conditional_tensors(3)[0].flatten())
    names = [m["name"] for m in hnet.param_shapes_meta]
    n_int = len(fl_hnet.unconditional_param_shapes)  # the internal network's come first
    assert names[n_int:n_int + 2] == ["bn_scale", "bn_shift"] and names[-1] == "weight"
    assert hnet.num_known_conds == 5
    assert len(hnet.conditional_params) == 5 + 5  # 5 input embeddings, 5 output weights


def test_hcontainer_example_2_two_hypernets(capsys):
    from bnn_mcmc.hnets import HContainer

    fl_hnet = HMLP([[10, 5], [5]], num_cond_embs=5, verbose=False)
    ll_hnet = HMLP([[5, 5]], num_cond_embs=5, verbose=False)

    def assembly_fct(list_of_hnet_tensors, uncond_tensors, cond_tensors):
        assert len(list_of_hnet_tensors) == 2
        return list_of_hnet_tensors[0] + uncond_tensors + \
            list_of_hnet_tensors[1]

    hnet = HContainer([[10, 5], [5], [5], [5], [5, 5]], assembly_fct,
                      hnets=[fl_hnet, ll_hnet],
                      uncond_param_shapes=[[5], [5]],
                      uncond_param_names=['bn_scale', 'bn_shift'],
                      num_cond_embs=5)
    assert "HContainer" in capsys.readouterr().out
    out = hnet(cond_id=1, ret_format="flattened")
    ref = ll_hnet(cond_id=1, ret_format="flattened")
    assert torch.equal(out[:, -25:], ref)
    assert len(hnet.internal_hnets) == 2
    # weights through 'weights' reproduce the held ones
    again = hnet(cond_id=1, weights=hnet.internal_params, ret_format="flattened")
    assert torch.equal(again, out)


def test_hnet_helpers():
    from bnn_mcmc.hnets import (
        HContainer,
        get_conditional_parameters,
        init_chunk_embeddings,
        init_conditional_embeddings,
    )

    hnet = HMLP([[10, 5], [5]], num_cond_embs=3, verbose=False)
    assert get_conditional_parameters(hnet, 1) == [hnet.get_cond_in_emb(1)]
    init_conditional_embeddings(hnet, init_fct=lambda e, k: e.fill_(float(k)))
    assert float(hnet.get_cond_in_emb(2).detach().sum()) == 2.0 * 8
    init_conditional_embeddings(hnet, normal_mean=5.0, normal_std=0.0)
    assert float(hnet.get_cond_in_emb(0).detach().mean()) == 5.0
    chunked = ChunkedHMLP([[10, 5], [10]], 16, 4, True, 0, 8, (4,), False, num_cond_embs=2)
    assert len(get_conditional_parameters(chunked, 1)) == 2  # input and chunk embeddings
    init_chunk_embeddings(chunked, init_fct=lambda c, cid, cond_id=None: c.fill_(cond_id))
    assert float(chunked.get_chunk_emb(cond_id=1).detach().mean()) == 1.0
    init_chunk_embeddings(hnet)  # no chunks: unchanged, no error
    box = HContainer([[5]], lambda h, u, c: c, cond_param_shapes=[[5]], num_cond_embs=2,
                     verbose=False)
    assert get_conditional_parameters(box, 1) == box.own_conditional_tensors(1)
