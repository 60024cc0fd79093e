"""Bad input raises a clear error naming the argument."""

from __future__ import annotations

import pytest
import torch

from bnn_mcmc import HMC, NUTS, MetropolisHastings

QUAD = lambda w: 0.5 * (w**2).sum()  # noqa: E731


@pytest.mark.parametrize(
    "position, error, message",
    [
        ([0.0, 1.0], TypeError, "torch.Tensor"),
        (torch.zeros(2, 2), ValueError, "1-D"),
        (torch.zeros(3, dtype=torch.long), TypeError, "floating"),
        (torch.tensor([0.0, float("nan")]), ValueError, "NaN"),
        (torch.zeros(0), ValueError, "non-empty"),
    ],
)
@pytest.mark.parametrize("cls", [HMC, NUTS, MetropolisHastings])
def test_bad_position(cls, position, error, message):
    with pytest.raises(error, match=message):
        cls(position, QUAD)


@pytest.mark.parametrize(
    "potential, error, message",
    [
        (lambda w: w**2, ValueError, "scalar"),
        (lambda w: 1.0, TypeError, "scalar tensor"),
        (lambda w: w.sum() * float("inf"), ValueError, "initial position"),
        (lambda w: torch.tensor(1.0), ValueError, "gradient path"),
        (lambda w: (w.detach() ** 2).sum(), ValueError, "gradient path"),
        ("not callable", TypeError, "callable"),
    ],
)
def test_bad_potential(potential, error, message):
    with pytest.raises(error, match=message):
        HMC(torch.zeros(2), potential)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stepsize": 0.0}, "stepsize"),
        ({"stepsize": -1.0}, "stepsize"),
        ({"num_steps": 0}, "num_steps"),
        ({"inv_mass": torch.ones(3)}, "inv_mass"),
        ({"inv_mass": -torch.ones(2)}, "inv_mass"),
        ({"jitter": 1.5}, "jitter"),
    ],
)
def test_bad_hmc_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HMC(torch.zeros(2), QUAD, **kwargs)


def test_bad_nuts_and_warmup_settings():
    with pytest.raises(ValueError, match="max_tree_depth"):
        NUTS(torch.zeros(2), QUAD, max_tree_depth=0)
    s = NUTS(torch.zeros(2), QUAD)
    with pytest.raises(ValueError, match="adapt_mass"):
        s.warmup(10, adapt_mass="full")
    with pytest.raises(ValueError, match="target_accept"):
        s.warmup(10, target_accept=1.5)
    with pytest.raises(ValueError, match="num_steps"):
        s.warmup(-1)
    with pytest.raises(ValueError, match="n must be"):
        s.simulate_chain(-3)
    with pytest.raises(ValueError, match="seed or generator"):
        NUTS(torch.zeros(2), QUAD, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="proposal_std"):
        MetropolisHastings(torch.zeros(2), QUAD, proposal_std=torch.ones(3))
