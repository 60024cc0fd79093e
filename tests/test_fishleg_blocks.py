"""Q blocks and the Kronecker metric against dense matrices built independently."""

import pytest
import torch
from torch import nn

from bnn_mcmc.kernels.kron_metric import DiagonalFactor, KroneckerFactor, KroneckerMetric
from bnn_mcmc.optim.qblocks import DiagonalQ, KroneckerQ, make_qblock

pytestmark = pytest.mark.usefixtures("float64_default")


def _randomise(block, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(
                torch.randn(p.shape, generator=g) * 0.5
                + (1.0 if p.dim() != 2 or p.shape[0] != p.shape[1] else 0.0)
            )
            if p.dim() == 2 and p.shape[0] == p.shape[1]:
                p.add_(torch.eye(p.shape[0]))


def _dense_kron(block):
    """Q built from the paper's formula with torch.kron (row-major vec of [W | b])."""
    L, R, A, D = block.factors()
    S = torch.kron(L, R)
    if block.full:
        S = A.reshape(-1, 1) * S * D.reshape(1, -1)
    return (S @ S.mT).detach()


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize(
    "layer", [nn.Linear(3, 4), nn.Linear(3, 2, bias=False), nn.Conv2d(2, 3, kernel_size=2)]
)
def test_kronecker_qv_and_diag_match_dense(layer, full):
    layer = layer.double()
    block = make_qblock(layer, full=full, scale=1.0)
    assert isinstance(block, KroneckerQ)
    _randomise(block, 0)
    Q = _dense_kron(block)
    m = layer.weight.shape[0]
    v = [torch.randn_like(p) for p in block.params]
    mat = torch.cat([v[0].reshape(m, -1)] + ([v[1].reshape(m, 1)] if len(v) > 1 else []), 1)
    expected = (Q @ mat.reshape(-1)).reshape(mat.shape)
    out = block.Qv(v)
    got = torch.cat([out[0].reshape(m, -1)] + ([out[1].reshape(m, 1)] if len(v) > 1 else []), 1)
    torch.testing.assert_close(got, expected)
    d = block.diagQ()
    gotd = torch.cat([d[0].reshape(m, -1)] + ([d[1].reshape(m, 1)] if len(v) > 1 else []), 1)
    torch.testing.assert_close(gotd.reshape(-1), torch.diagonal(Q))
    if not full:  # the paper's Kronecker form LL^T (x) RR^T
        L, R, _, _ = block.factors()
        torch.testing.assert_close(Q, torch.kron(L @ L.mT, R @ R.mT).detach())


@pytest.mark.parametrize("layer", [nn.BatchNorm2d(3), nn.LayerNorm((2, 3))])
def test_diagonal_blocks(layer):
    block = make_qblock(layer.double(), full=True, scale=2.0)
    assert isinstance(block, DiagonalQ)
    _randomise(block, 1)
    v = [torch.randn_like(p) for p in block.params]
    for q, d, x, dd in zip(block.Qv(v), block.diagQ(), v, block.scales(), strict=True):
        torch.testing.assert_close(q, dd.detach() ** 2 * x)
        torch.testing.assert_close(d, dd.detach() ** 2)


def test_set_diagonal_exact_with_full_and_rank_one_without():
    lin = nn.Linear(3, 2).double()
    target = [torch.rand(2, 3) + 0.5, torch.rand(2) + 0.5]
    full = KroneckerQ(lin.weight, lin.bias, full=True, scale=1.0)
    full.set_diagonal(target)
    for a, b in zip(full.diagQ(), target, strict=True):
        torch.testing.assert_close(a.detach(), b)
    a, b = torch.rand(2) + 0.5, torch.rand(4) + 0.5  # a rank-one diagonal is fitted exactly
    outer = torch.outer(a, b)
    plain = KroneckerQ(lin.weight, lin.bias, full=False, scale=1.0)
    plain.set_diagonal([outer[:, :3], outer[:, 3]])
    torch.testing.assert_close(plain.diagQ()[0].detach(), outer[:, :3])


def _metric():
    g = torch.Generator().manual_seed(3)
    L = torch.eye(2) + 0.3 * torch.randn(2, 2, generator=g)
    R = torch.eye(3) + 0.3 * torch.randn(3, 3, generator=g)
    A, D = torch.rand(2, 3, generator=g) + 0.5, torch.rand(2, 3, generator=g) + 0.5
    idx = torch.tensor([[0, 2, 4], [6, 8, 9]])  # interleaved layout
    f1 = KroneckerFactor(idx, L, R, A, D)
    f2 = DiagonalFactor(torch.tensor([1, 3]), torch.tensor([0.5, 2.0]))
    return KroneckerMetric(11, [f1, f2], base_inv_mass=0.7)


def test_metric_matches_dense():
    metric = _metric()
    dense = metric.to_dense()
    assert torch.allclose(dense, dense.mT)
    torch.testing.assert_close(metric.inv_mass, torch.diagonal(dense))
    p = torch.randn(5, 11, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(metric.velocity(p), p @ dense)
    torch.testing.assert_close(metric.kinetic_energy(p), 0.5 * ((p @ dense) * p).sum(-1))


def test_momentum_covariance_is_mass_matrix():
    metric = _metric()
    mass = torch.linalg.inv(metric.to_dense())
    n = 40000
    p = metric.sample_momentum(torch.Generator().manual_seed(5), (n,))
    cov = p.mT @ p / n
    # MC standard error of a covariance entry: sqrt((M_ii M_jj + M_ij^2) / n)
    se = torch.sqrt((torch.outer(mass.diagonal(), mass.diagonal()) + mass**2) / n)
    assert bool(((cov - mass).abs() < 5 * se).all())
    # and it fails for a wrong target (the inverse mass instead of the mass)
    assert not bool(((cov - metric.to_dense()).abs() < 5 * se).all())


def test_metric_rejects_bad_input():
    f = DiagonalFactor(torch.tensor([0, 1]), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="disjoint"):
        KroneckerMetric(3, [f, DiagonalFactor(torch.tensor([1]), torch.tensor([1.0]))])
    with pytest.raises(ValueError, match="outside"):
        KroneckerMetric(1, [f])
    with pytest.raises(ValueError, match="positive"):
        DiagonalFactor(torch.tensor([0]), torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="invertible"):
        KroneckerFactor(torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 2), torch.ones(1, 1))
    with pytest.raises(TypeError, match="dtype"):
        _metric().velocity(torch.zeros(11, dtype=torch.float32))


@pytest.mark.parametrize("full", [False, True])
def test_our_mlp_gets_kronecker_blocks_equal_to_the_dense_product(full):
    """bnn_mcmc.bnn.MLP keeps its weights in a ParameterList: FishLeg pairs each (m, n)
    weight with its (m,) bias by shape; the metric's dense block at the layer's flat
    positions equals S S^T with S = diag(A) (L kron R) diag(D) built with torch.kron."""
    from bnn_mcmc.bnn import MLP, GaussianLikelihood
    from bnn_mcmc.optim import FishLeg

    net = MLP(3, 2, hidden_layers=(4,), generator=torch.Generator().manual_seed(0)).double()
    x, y = torch.randn(16, 3), torch.randn(16, 2)
    opt = FishLeg(
        net,
        None,
        None,
        [(x, y)],
        likelihood=GaussianLikelihood(),
        generator=torch.Generator().manual_seed(0),
        full=full,
    )
    assert list(opt.blocks) == ["weights.0", "weights.2"]
    assert all(isinstance(b, KroneckerQ) for b in opt.blocks.values())
    assert [b.shape for b in opt.blocks.values()] == [(4, 4), (2, 5)]
    for i, b in enumerate(opt.blocks.values()):
        _randomise(b, 10 + i)
    dense = opt.as_metric().to_dense()
    start = 0
    for b in opt.blocks.values():
        m, n = b.shape
        # flat layout [W (row-major) | b] per layer; the block orders entries as [W | b] rows
        w_idx = torch.arange(start, start + m * (n - 1)).view(m, n - 1)
        b_idx = torch.arange(start + m * (n - 1), start + m * n).view(m, 1)
        idx = torch.cat([w_idx, b_idx], 1).reshape(-1)
        torch.testing.assert_close(dense[idx][:, idx], _dense_kron(b))
        start += m * n
    assert start == dense.shape[0]


def test_find_map_fishleg_on_our_mlp():
    from bnn_mcmc.bnn import MLP, GaussianLikelihood, GaussianPrior
    from bnn_mcmc.optim import find_map

    net = MLP(2, 1, hidden_layers=(8,), generator=torch.Generator().manual_seed(0)).double()
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(1))
    y = torch.sin(x[:, :1]) + x[:, 1:] ** 2
    lik, prior = GaussianLikelihood(10.0), GaussianPrior(1.0)
    w = find_map(
        net,
        lik,
        prior,
        (x, y),
        optimizer="fishleg",
        steps=150,
        generator=torch.Generator().manual_seed(2),
    )
    u0 = float(lik.nll(net(x), y).detach())
    assert w.shape == (1, net.num_params) and float(lik.nll(net(x, w[0]), y)) < 0.3 * u0


class _NoSequential(nn.Module):
    """Conv2d and Linear layers as attributes (no Sequential), then a dense layer held as
    raw parameters and applied with F.linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, kernel_size=3, padding=1, stride=2)
        self.fc = nn.Linear(3 * 3 * 3, 5)
        self.w = nn.Parameter(0.3 * torch.randn(2, 5))
        self.b = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        h = torch.tanh(self.conv(x)).flatten(1)
        return nn.functional.linear(torch.tanh(self.fc(h)), self.w, self.b)


def test_any_module_of_linear_and_conv_layers_gets_kfac_started_kronecker_blocks():
    """Blocks by module type (conv, fc) and by parameter shape (w, b); all three start at
    K-FAC factors, found by their linear/conv2d calls; training lowers the loss."""
    from bnn_mcmc.bnn import GaussianLikelihood
    from bnn_mcmc.optim import FishLeg

    torch.manual_seed(0)
    net = _NoSequential().double()
    x = torch.randn(32, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    y = torch.stack([x.mean((1, 2, 3)), x[:, 0, 0, 0].sin()], 1)
    lik = GaussianLikelihood(10.0)
    opt = FishLeg(
        net, None, None, [(x, y)], likelihood=lik, generator=torch.Generator().manual_seed(2)
    )
    assert list(opt.blocks) == ["w", "conv", "fc"]
    assert [b.shape for b in opt.blocks.values()] == [(2, 6), (3, 10), (5, 28)]
    assert opt.warm_start_kinds == ["kfac"] * 3
    start = float(lik.nll(net(x), y).detach())
    for _ in range(30):
        opt.zero_grad()
        lik.nll(net(x), y).backward()
        opt.step()
    assert float(lik.nll(net(x), y).detach()) < 0.5 * start


def test_kfac_warm_start_is_close_to_the_inverse_fisher():
    """One linear-Gaussian output: the Fisher is exactly Kronecker (tau [X 1]^T [X 1] (x) 1),
    so with a negligible damping the K-FAC start must be within 10 % (relative Frobenius)
    of F^-1 with correlated inputs, and far closer than the Fisher-diagonal start."""
    from bnn_mcmc.bnn import GaussianLikelihood
    from bnn_mcmc.optim import FishLeg

    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 4, generator=g) @ torch.tensor(
        [[1.0, 0.9, 0.8, 0.0], [0.0, 0.4, 0.3, 0.2], [0.0, 0.0, 0.2, 0.1], [0.0, 0.0, 0.0, 1.0]]
    )
    y = X.sum(1, keepdim=True)
    tau, damping = 1.0, 1e-6
    Xt = torch.cat([X, torch.ones(200, 1)], 1)
    q_star = torch.linalg.inv(tau * Xt.T @ Xt + damping * torch.eye(5))
    err = {}
    for start in ("kfac", "fisher"):
        opt = FishLeg(
            nn.Linear(4, 1).double(),
            None,
            None,
            [(X, y)],
            likelihood=GaussianLikelihood(tau),
            damping=damping,
            warm_start=start,
            warm_start_probes=200,
            generator=torch.Generator().manual_seed(1),
        )
        err[start] = float(
            torch.linalg.norm(opt.as_metric().to_dense() - q_star) / torch.linalg.norm(q_star)
        )
    assert err["kfac"] < 0.1 and err["kfac"] < 0.2 * err["fisher"], err
