"""BatchNormLayer: behaviour per statistics source in train and eval mode."""

import pytest
import torch
from torch import nn

from bnn_mcmc.bnn import BatchNormLayer


@pytest.fixture
def x():
    return torch.randn(32, 4, generator=torch.Generator().manual_seed(0)) * 2 + 1


def test_tracked_stats_match_torch_batchnorm(x):
    ours, ref = BatchNormLayer(4), nn.BatchNorm1d(4)
    for mode in ("train", "eval", "train"):
        ours.train(mode == "train")
        ref.train(mode == "train")
        torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.get_stats(0)[0], ref.running_mean)
    torch.testing.assert_close(ours.get_stats(0)[1], ref.running_var)


def test_stats_per_condition(x):
    bn = BatchNormLayer(4)
    bn.checkpoint_stats()
    assert bn.num_stats == 2
    bn.train()
    bn(x, stats_id=1)
    m0, _ = bn.get_stats(0)
    m1, _ = bn.get_stats(1)
    assert (m0 == 0).all() and not (m1 == 0).all()
    bn.eval()
    eps = bn.eps
    torch.testing.assert_close(bn(x, stats_id=0), x / (1 + eps) ** 0.5)
    with pytest.raises(ValueError, match="stats_id"):
        bn(x)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        bn(x, stats_id=2)


def test_frozen_learnable_and_batch_only(x):
    eps = 1e-5
    frozen = BatchNormLayer(4, track_running_stats=False, frozen_stats=True).train()
    torch.testing.assert_close(frozen(x), x / (1 + eps) ** 0.5)  # no whitening, no update
    assert (frozen.get_stats()[0] == 0).all()
    batch = BatchNormLayer(4, track_running_stats=False).eval()  # batch stats even in eval
    z = batch(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    learn = BatchNormLayer(4, track_running_stats=False, learnable_stats=True)
    assert learn.param_shapes == [[4]] * 4 and len(learn.weights) == 4
    with torch.no_grad():
        learn.learned_mean.fill_(1.0)
        learn.learned_var.fill_(4.0)
    out = learn.train()(x)
    torch.testing.assert_close(out, (x - 1) / (4 + eps) ** 0.5)
    out.sum().backward()
    assert learn.learned_mean.grad is not None


def test_given_gain_offset_and_stats_override(x):
    bn = BatchNormLayer(4, affine=False).eval()
    assert bn.weights is None
    gain = torch.full((4,), 2.0, requires_grad=True)  # e.g. a hypernetwork's output
    offset = torch.full((4,), -1.0)
    mean, var = torch.ones(4), torch.full((4,), 9.0)
    out = bn(x, running_mean=mean, running_var=var, weight=gain, bias=offset)
    torch.testing.assert_close(out, (x - 1) / (9 + bn.eps) ** 0.5 * 2 - 1)
    out.sum().backward()
    assert gain.grad is not None
    torch.testing.assert_close(bn(x), x / (1 + bn.eps) ** 0.5)  # whitening only


def test_errors(x):
    with pytest.raises(ValueError, match="track_running_stats=False"):
        BatchNormLayer(4, frozen_stats=True)
    with pytest.raises(ValueError, match="momentum"):
        BatchNormLayer(4, momentum=None)
    bn = BatchNormLayer(4)
    with pytest.raises(ValueError, match="both"):
        bn(x, running_mean=torch.zeros(4))
    with pytest.raises(ValueError, match="checkpoints need"):
        BatchNormLayer(4, track_running_stats=False).checkpoint_stats()
