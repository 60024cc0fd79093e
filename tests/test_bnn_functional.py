"""FunctionalNet and MLP: networks as functions of a flat weight vector."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from bnn_mcmc.bnn import MLP, FunctionalNet


def _seq():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _bn_net():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 1))
    net.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(5):
            net(torch.randn(16, 3) * 3 + 1)
    return net


CASES = [
    (_seq, lambda: torch.randn(6, 3)),
    (lambda: (torch.manual_seed(2), SmallCNN())[1], lambda: torch.randn(4, 1, 6, 6)),
    (_bn_net, lambda: torch.randn(6, 3)),
]


@pytest.mark.parametrize("make_net, make_x", CASES)
def test_functional_equals_module_and_batched_equals_loop(make_net, make_x):
    net = make_net()
    net.eval()
    x = make_x()
    fnet = FunctionalNet(net, chunk_size=2)
    w = fnet.flatten()
    torch.testing.assert_close(w, parameters_to_vector(net.parameters()))
    torch.testing.assert_close(fnet(w, x), net(x))
    ws = w + 0.1 * torch.randn(5, fnet.dim, generator=torch.Generator().manual_seed(0))
    loop = []
    for wi in ws:
        other = copy.deepcopy(net)
        vector_to_parameters(wi, other.parameters())
        loop.append(other(x))
    torch.testing.assert_close(fnet(ws, x), torch.stack(loop))


def test_unflatten_roundtrip_and_names():
    net = _seq()
    fnet = FunctionalNet(net)
    w = torch.arange(fnet.dim, dtype=torch.float32)
    parts = fnet.unflatten(w)
    assert list(parts) == [n for n, _ in net.named_parameters()]
    assert parts["0.weight"].shape == (8, 3)
    torch.testing.assert_close(fnet.flatten(parts), w)
    assert fnet.offsets == [0, 24, 32, 48]
    batched = fnet.unflatten(torch.zeros(4, fnet.dim))
    assert batched["2.bias"].shape == (4, 2)


def test_module_is_untouched_and_eval_mode_is_restored():
    net = _bn_net()
    before = copy.deepcopy(net.state_dict())
    net.train()
    fnet = FunctionalNet(net)
    out = fnet(torch.zeros(fnet.dim), torch.randn(4, 3))
    assert out.shape == (4, 1)
    assert net.training and net[1].training
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_train_mode_uses_batch_stats_without_writing_buffers():
    net = _bn_net()
    fnet = FunctionalNet(net, train=True)
    x = torch.randn(8, 3)
    w = fnet.flatten()
    stats = net[1].running_mean.clone()
    ref = copy.deepcopy(net).train()(x)
    torch.testing.assert_close(fnet(w, x), ref)
    torch.testing.assert_close(fnet(torch.stack([w, w]), x), torch.stack([ref, ref]))
    torch.testing.assert_close(net[1].running_mean, stats)


def test_float64_weights_with_float32_module():
    net = _bn_net().eval()
    fnet = FunctionalNet(net)
    x = torch.randn(4, 3, dtype=torch.float64)
    out = fnet(fnet.flatten().double(), x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), net(x.float()), rtol=1e-5, atol=1e-5)


def test_functional_errors():
    fnet = FunctionalNet(_seq())
    with pytest.raises(ValueError, match=f"length {fnet.dim}.*got shape \\(3,\\)"):
        fnet(torch.zeros(3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="device"):
        fnet(torch.zeros(fnet.dim), torch.zeros(2, 3, device="meta"))
    with pytest.raises(TypeError, match="dtype"):
        fnet(torch.zeros(fnet.dim, dtype=torch.float64), torch.zeros(2, 3))
    with pytest.raises(TypeError, match="nn.Module"):
        FunctionalNet(lambda x: x)
    with pytest.raises(ValueError, match="shape"):
        fnet.flatten([torch.zeros(2)] * 4)


# ------------------------------------------------------------------------------- MLP
def test_mlp_layout_matches_named_parameters():
    mlp = MLP(3, 2, hidden_layers=(5, 4), activation_fn=torch.tanh)
    assert mlp.param_shapes == [[5, 3], [5], [4, 5], [4], [2, 4], [2]]
    assert mlp.num_params == sum(p.numel() for p in mlp.parameters())
    meta = mlp.param_shapes_meta
    assert [m["name"] for m in meta] == ["weight", "bias"] * 3
    assert [m["layer"] for m in meta] == [0, 0, 1, 1, 2, 2]
    assert [m["index"] for m in meta] == list(range(6))
    flat = MLP.flatten_params(mlp.internal_params)
    torch.testing.assert_close(flat, parameters_to_vector(mlp.parameters()))
    back = MLP.flatten_params(flat, mlp.param_shapes, unflatten=True)
    for a, b in zip(back, mlp.internal_params, strict=True):
        torch.testing.assert_close(a, b)
    fnet = FunctionalNet(mlp)
    x = torch.randn(7, 3)
    torch.testing.assert_close(fnet(flat.detach(), x), mlp(x))


def test_mlp_weight_formats_agree_and_batch_equals_loop():
    mlp = MLP(2, 3, hidden_layers=(6,), activation_fn=torch.nn.Tanh())
    x = torch.randn(9, 2)
    gen = torch.Generator().manual_seed(0)
    ws = torch.randn(4, mlp.num_params, generator=gen)
    loop = torch.stack([mlp(x, weights=w) for w in ws])
    torch.testing.assert_close(mlp(x, weights=ws), loop)
    as_list = MLP.flatten_params(ws[1], mlp.param_shapes, unflatten=True)
    torch.testing.assert_close(mlp(x, weights=as_list), loop[1])
    batched_list = MLP.flatten_params(ws, mlp.param_shapes, unflatten=True)
    torch.testing.assert_close(mlp(x, weights=batched_list), loop)
    xs = torch.randn(4, 9, 2)
    torch.testing.assert_close(
        mlp(xs, weights=ws), torch.stack([mlp(xi, weights=w) for xi, w in zip(xs, ws)])
    )


def test_mlp_takes_hypernetwork_output_and_backpropagates():
    mlp = MLP(2, 1, hidden_layers=(4,), no_weights=True)
    assert mlp.internal_params is None and list(mlp.parameters()) == []
    assert mlp.hyper_shapes_learned == mlp.param_shapes
    assert all(m["index"] == -1 for m in mlp.param_shapes_meta)
    hnet = nn.Linear(3, mlp.num_params)
    emb = torch.randn(5, 3)
    out = mlp(torch.randn(8, 2), weights=hnet(emb))  # flattened hnet output (B, P)
    assert out.shape == (5, 8, 1)
    out.sum().backward()
    assert hnet.weight.grad is not None and hnet.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no_weights"):
        mlp(torch.randn(8, 2))


def test_mlp_init_is_reproducible_and_custom_init():
    a, b = MLP(2, 2), MLP(2, 2)
    torch.testing.assert_close(
        parameters_to_vector(a.parameters()), parameters_to_vector(b.parameters())
    )
    a.custom_init(generator=torch.Generator().manual_seed(3))
    assert all((bias == 0).all() for bias in a.layer_bias_vectors)
    w = a.layer_weight_tensors[0]
    assert w.abs().max() <= (6 / (2 + 10)) ** 0.5
    a.custom_init(normal_init=True, normal_std=0.02, generator=torch.Generator().manual_seed(3))
    assert a.layer_weight_tensors[1].std() < 0.04


def test_mlp_without_hidden_layers_or_bias():
    mlp = MLP(3, 1, hidden_layers=(), use_bias=False)
    assert mlp.param_shapes == [[1, 3]]
    x = torch.randn(4, 3)
    w = torch.tensor([1.0, -2.0, 0.5])
    torch.testing.assert_close(mlp(x, weights=w), x @ w[:, None])
    torch.testing.assert_close(mlp(x, weights=w.expand(2, 3))[1], x @ w[:, None])


def test_mlp_errors():
    mlp = MLP(2, 1, hidden_layers=(3,))
    with pytest.raises(ValueError, match=f"\\({mlp.num_params},\\).*got \\(5,\\)"):
        mlp(torch.zeros(4, 2), weights=torch.zeros(5))
    with pytest.raises(ValueError, match="2 features"):
        mlp(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="device"):
        mlp(torch.zeros(4, 2, device="meta"))
    with pytest.raises(TypeError, match="dtype"):
        mlp(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="positive ints"):
        MLP(2, 1, hidden_layers=(0,))
    with pytest.raises(ValueError, match="param_shapes is required"):
        MLP.flatten_params(torch.zeros(3), unflatten=True)
