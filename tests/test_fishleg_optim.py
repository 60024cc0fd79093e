"""FishLeg: Q learns the inverse damped Fisher; it beats SGD and Adam when ill-conditioned."""

import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch
from torch import nn

from bnn_mcmc.bnn.likelihoods import GaussianLikelihood, LearnedNoiseGaussianLikelihood
from bnn_mcmc.bnn.priors import GaussianPrior
from bnn_mcmc.optim import FishLeg, find_map

pytestmark = pytest.mark.usefixtures("float64_default")


def _regression(n=100, d=4, spread=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    X = (torch.randn(n, d, generator=g) * torch.logspace(-spread, spread, d)) @ V
    y = X @ torch.randn(d, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    return X, y


@pytest.mark.parametrize("aux_loss", ["exact", "finite_difference"])
def test_q_converges_to_inverse_damped_fisher(aux_loss):
    """Linear-Gaussian model: F = tau [X 1]^T [X 1] exactly, so Q* = (F + gamma I)^-1.

    With out_features = 1 the Kronecker block is a full (d+1)x(d+1) PD matrix, so Q*
    is representable; random directions u make E[u u^T] = I full rank.  Tolerance: 10%
    relative Frobenius error after 2500 Adam steps (the start is 5x off).
    """
    X, y = _regression(spread=0.5)
    damping, tau = 10.0, 1.0
    net = nn.Linear(4, 1)
    opt = FishLeg(
        net,
        None,
        None,
        [(X, y)],
        likelihood=GaussianLikelihood(tau),
        generator=torch.Generator().manual_seed(1),
        damping=damping,
        full=False,
        aux_lr=1e-2,
        scale=1 / damping,
        update_aux_every=0,
        aux_loss=aux_loss,
        warm_start="identity",
    )
    Xt = torch.cat([X, torch.ones(len(X), 1)], 1)
    q_star = torch.linalg.inv(tau * Xt.T @ Xt + damping * torch.eye(5))
    gu = torch.Generator().manual_seed(2)

    def err():
        return float(
            torch.linalg.norm(opt.as_metric().to_dense() - q_star) / torch.linalg.norm(q_star)
        )

    start = err()
    for _ in range(2500):
        opt.update_aux(torch.randn(5, generator=gu))
    assert start > 1.0
    assert err() < 0.1


class Problem(NamedTuple):
    """Inputs, targets, a fresh network, ``nll(model, (x, y))`` (mean over the batch) and
    ``draw(model, x) -> (x, y_tilde)`` from the model."""

    X: torch.Tensor
    y: torch.Tensor
    net: nn.Module
    nll: Callable
    draw: Callable


class Run(NamedTuple):
    """Full-data loss after each step, and the optimiser's cumulative wall time."""

    losses: list[float]
    times: list[float]


def ill_conditioned_regression(seed: int) -> Problem:
    """The issue's problem: 20 features with scales log-spaced 1e-2..10, 512 points."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(512, 20, generator=g) * torch.logspace(-2, 1, 20)
    y = X @ torch.randn(20, 1, generator=g) + 0.1 * torch.randn(512, 1, generator=g)
    torch.manual_seed(seed)

    def nll(m, b):
        return 0.5 * ((m(b[0]) - b[1]) ** 2).mean()

    def draw(m, x):
        f = m(x)
        return x, f + torch.randn(f.shape, generator=g)

    return Problem(X, y, nn.Linear(20, 1), nll, draw)


def correlated_logistic(seed: int) -> Problem:
    """20 standard-normal features with AR(1) correlation 0.95 (condition number of the
    covariance about 1500), 512 points, labels from a logistic model with N(0, 1)
    weights."""
    g = torch.Generator().manual_seed(seed)
    lag = torch.arange(20.0)
    chol = torch.linalg.cholesky(0.95 ** (lag[:, None] - lag[None, :]).abs())
    X = torch.randn(512, 20, generator=g) @ chol.T
    y = torch.bernoulli(torch.sigmoid(X @ torch.randn(20, 1, generator=g)), generator=g)
    torch.manual_seed(seed)

    def nll(m, b):
        return nn.functional.binary_cross_entropy_with_logits(m(b[0]), b[1])

    def draw(m, x):
        with torch.no_grad():
            return x, torch.bernoulli(torch.sigmoid(m(x)), generator=g)

    return Problem(X, y, nn.Linear(20, 1), nll, draw)


def train(
    problem: Callable[[int], Problem], make_opt, seed: int, steps: int = 300, batch: int = 128
) -> Run:
    """Minibatches of ``batch`` for ``steps`` steps, ``make_opt(net, nll, draw, aux)`` with
    four auxiliary batches; the full-data loss after every step (not timed)."""
    X, y, net, nll, draw = problem(seed)

    def batches(gen):
        while True:
            perm = torch.randperm(len(X), generator=gen)
            for i in range(0, len(X) - batch + 1, batch):
                yield X[perm[i : i + batch]], y[perm[i : i + batch]]

    aux = [b for _, b in zip(range(4), batches(torch.Generator().manual_seed(seed + 7)))]
    data = batches(torch.Generator().manual_seed(seed + 100))
    losses, times, clock = [], [], time.perf_counter()
    opt = make_opt(net, nll, draw, aux)
    elapsed = time.perf_counter() - clock
    for _ in range(steps):
        clock = time.perf_counter()
        opt.zero_grad()
        nll(net, next(data)).backward()
        opt.step()
        elapsed += time.perf_counter() - clock
        times.append(elapsed)
        with torch.no_grad():
            losses.append(float(nll(net, (X, y))))
    return Run(losses, times)


def _fishleg(net, nll, draw, aux):
    return FishLeg(net, draw, nll, aux)


def _medians(problem, seeds):
    """Median final loss of default FishLeg, and of Adam at the better of 1e-3 / 1e-2."""
    fish = statistics.median(train(problem, _fishleg, s).losses[-1] for s in seeds)
    adam = min(
        statistics.median(
            train(problem, lambda n, *_, lr=lr: torch.optim.Adam(n.parameters(), lr=lr), s).losses[
                -1
            ]
            for s in seeds
        )
        for lr in (1e-3, 1e-2)
    )
    return fish, adam


def test_default_fishleg_beats_adam_at_its_better_lr_on_ill_conditioned_regression():
    """No tuning: FishLeg(model, draw, nll, aux_loader) with its defaults against Adam at
    the better of lr 1e-3 / 1e-2, five seeds, 300 steps of 128.  The median FishLeg final
    loss must be below half of Adam's median (measured, defaults beta=0.5 and one auxiliary
    update every 10 steps: 0.0086 against 0.026; the noise floor is 0.005)."""
    fish, adam = _medians(ill_conditioned_regression, range(5))
    assert fish < 0.5 * adam, (fish, adam)


def test_default_fishleg_beats_adam_at_its_better_lr_on_correlated_logistic_regression():
    """As above on the AR(1)-correlated logistic regression.  Measured medians: FishLeg
    0.2795, Adam (lr 1e-2) 0.309, the full-batch optimum (L-BFGS, per seed) 0.2712;
    FishLeg must close at least half of Adam's gap to it (closes 63 %; the bound is 0.2902)."""
    seeds = range(5)
    fish, adam = _medians(correlated_logistic, seeds)
    best = []
    for s in seeds:
        X, y, net, nll, _ = correlated_logistic(s)
        opt = torch.optim.LBFGS(net.parameters(), max_iter=200, line_search_fn="strong_wolfe")

        def closure(net=net, opt=opt, nll=nll, X=X, y=y):
            opt.zero_grad()
            loss = nll(net, (X, y))
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            best.append(float(nll(net, (X, y))))
    floor = statistics.median(best)
    assert fish - floor < 0.5 * (adam - floor), (fish, adam, floor)


def test_layer_selection_and_plain_step_for_the_rest():
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.LayerNorm(3), nn.Linear(3, 1))
    X, y = torch.randn(8, 2), torch.randn(8, 1)
    kw = {"likelihood": GaussianLikelihood(), "generator": torch.Generator().manual_seed(0)}
    opt = FishLeg(net, None, None, [(X, y)], module_names=["re:[03]"], skip_names=["3"], **kw)
    assert list(opt.blocks) == ["0"]
    assert len(opt.param_groups) == 2 and len(opt.param_groups[1]["params"]) == 4
    before = [p.detach().clone() for p in net.parameters()]
    opt.zero_grad()
    GaussianLikelihood().nll(net(X), y).backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    with pytest.raises(ValueError, match="no module named"):
        FishLeg(net, None, None, [(X, y)], module_names=["fc9"], **kw)
    with pytest.raises(ValueError, match="draw, nll"):
        FishLeg(net, None, None, [(X, y)])
    with pytest.raises(TypeError, match="generator"):
        FishLeg(net, None, None, [(X, y)], likelihood=GaussianLikelihood())
    with pytest.raises(ValueError, match="warmup_data"):
        FishLeg(net, None, None, [(X, y)], warmup=2, **kw)
    with pytest.raises(TypeError, match="likelihood"):
        FishLeg(net, None, None, [(X, y)], likelihood="gaussian", generator=kw["generator"])
    with pytest.raises(ValueError, match="no trainable"):
        FishLeg(net, None, None, [(X, y)], skip_names=["re:.*"], **kw)
    net.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="backward"):
        FishLeg(net, None, None, [(X, y)], **kw).update_aux()


def test_user_draw_and_nll_callables():
    X, y = _regression(n=30, d=2)
    g = torch.Generator().manual_seed(0)
    lik = GaussianLikelihood(1.0)
    net = nn.Linear(2, 1)
    opt = FishLeg(
        net,
        lambda m, x: (x, lik.draw(m(x), g)),
        lambda m, b: lik.nll(m(b[0]), b[1]),
        [(X, y)],
        update_aux_every=1,
        warmup=1,
        warmup_data=[(X, y)],
    )
    start = float(lik.nll(net(X), y).detach())
    for _ in range(50):
        opt.zero_grad()
        lik.nll(net(X), y).backward()
        opt.step()
    assert float(lik.nll(net(X), y).detach()) < start


def test_find_map_learned_noise():
    """MAP of a linear model with learned noise: log sigma near log 0.1 and the chains
    agree with each other (a convex problem)."""
    X, y = _regression(n=200, d=2, spread=0.3)
    lik = LearnedNoiseGaussianLikelihood(0.0, 3.0)
    net = nn.Linear(2, 1)
    for optimizer in ("fishleg", "adam"):
        w = find_map(
            net,
            lik,
            GaussianPrior(10.0),
            (X, y),
            optimizer=optimizer,
            steps=400,
            num_chains=2,
            init="random",
            generator=torch.Generator().manual_seed(0),
            lr=0.05 if optimizer == "adam" else None,
        )
        assert w.shape == (2, 4)
        assert abs(float(w[0, -1]) - torch.log(torch.tensor(0.1))) < 0.2, optimizer
        torch.testing.assert_close(w[0], w[1], atol=0.05, rtol=0)
    w = find_map(
        net,
        lik,
        GaussianPrior(10.0),
        (X, y),
        optimizer="adam",
        steps=2,
        init="prior",
        generator=torch.Generator().manual_seed(0),
    )
    assert w.shape == (1, 4) and torch.isfinite(w).all()


def test_damping_rule_divergence_guard_and_ceiling():
    """A step flagged as diverged is undone even when the model predicted a rise, and the
    extra damping never passes ceiling * base."""
    from bnn_mcmc.optim.damping import DampingRule

    rule = DampingRule()
    assert rule.update(0.0, 1.0, 5.0, 10.0) == (3.0, False)  # non-descent: kept
    assert rule.update(0.0, 1.0, 5.0, 10.0, diverged=True) == (10.0, True)
    assert rule.update(1e9, 1.0, float("nan"), -1.0) == (rule.ceiling, True)
    assert rule.update(2.0, 1.0, -0.9, -1.0) == (1.4, False)  # good model: relax
