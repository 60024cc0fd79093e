"""Built-in toys and CSV/NPZ loading (used by run descriptions)."""

import math

import numpy as np
import pytest
import torch

from bnn_mcmc.datasets import cubic, load_builtin, load_table, regression_gap, two_moons


def test_regression_gap_has_a_gap_and_the_stated_noise():
    d = regression_gap(n=4000, noise=0.1, seed=1)
    x, y = d.x[:, 0].double(), d.y[:, 0].double()
    assert d.x.shape == (4000, 1) and d.y.shape == (4000, 1) and d.x.dtype == torch.float32
    assert not bool(((x > -0.5) & (x < 0.5)).any())
    assert bool((x.abs() <= 1.5).all())
    resid = y - (torch.sin(3 * x) + 0.3 * x)
    # sample std of 4000 normals: relative standard error 1/sqrt(2 n) ~ 1.1 %
    assert abs(float(resid.std()) - 0.1) < 4 * 0.1 / math.sqrt(2 * 4000)
    assert abs(float(resid.mean())) < 4 * 0.1 / math.sqrt(4000)
    assert d.x_grid.shape == (200, 1) and d.task == "regression" and d.n_out == 1


def test_cubic_is_standardised_cubic():
    d = cubic(n=3000, noise=3.0, seed=2, dtype=torch.float64)
    resid = d.y[:, 0] - d.x[:, 0] ** 3 / 27.0
    assert abs(float(resid.std()) - 3.0 / 27.0) < 4 * (3 / 27) / math.sqrt(2 * 3000)
    assert d.y.dtype == torch.float64


def test_two_moons_geometry_and_labels():
    clean = two_moons(n=201, noise=0.0, seed=0, dtype=torch.float64)
    x, y = clean.x, clean.y
    assert y.dtype == torch.int64 and int((y == 0).sum()) == 100 and int((y == 1).sum()) == 101
    up, low = x[y == 0], x[y == 1]
    assert torch.allclose(up.norm(dim=1), torch.ones(100, dtype=torch.float64))
    centre = torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert torch.allclose((low - centre).norm(dim=1), torch.ones(101, dtype=torch.float64))
    assert bool((up[:, 1] >= -1e-12).all()) and bool((low[:, 1] <= 0.5 + 1e-12).all())
    noisy = two_moons(n=201, noise=0.2, seed=0, dtype=torch.float64)
    # same shuffle, noise added on top: the differences are N(0, 0.2^2)
    assert abs(float((noisy.x - x).std()) - 0.2) < 4 * 0.2 / math.sqrt(2 * 402)
    assert clean.n_out == 2 and clean.x_grid is None


def test_seeds_reproduce_and_differ():
    a, b, c = two_moons(seed=3), two_moons(seed=3), two_moons(seed=4)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)


def test_load_builtin_rejects_unknown_and_bad_sizes():
    with pytest.raises(ValueError, match="built-in data sets are"):
        load_builtin("iris")
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        regression_gap(n=1)
    with pytest.raises(ValueError, match="noise must be a non-negative"):
        two_moons(noise=-1.0)


def test_csv_and_npz_columns_by_name(tmp_path):
    rng = np.random.default_rng(0)
    a, b, t = rng.normal(size=10), rng.normal(size=10), rng.integers(0, 3, 10)
    csv = tmp_path / "d.csv"
    lines = ["a,b,label"] + [f"{a[i]:.17g},{b[i]:.17g},{t[i]}" for i in range(10)]
    csv.write_text("\n".join(lines) + "\n")
    d = load_table(csv, ["b", "a"], ["label"], task="classification")
    assert torch.allclose(d.x, torch.tensor(np.stack([b, a], 1), dtype=torch.float32))
    assert torch.equal(d.y, torch.tensor(t)) and d.n_out == int(t.max()) + 1
    npz = tmp_path / "d.npz"
    np.savez(npz, inputs=np.stack([a, b], 1), y=b * 2)
    r = load_table(npz, ["inputs"], ["y"], dtype=torch.float64)
    assert r.x.shape == (10, 2) and torch.allclose(r.y[:, 0], torch.tensor(b * 2))


def test_table_errors_name_the_problem(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("x,y\n1,2\n3,oops\n")
    with pytest.raises(ValueError, match="column 'y' is not numeric"):
        load_table(csv, ["x"], ["y"])
    csv.write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match=r"target column\(s\) \['z'\] not found; available"):
        load_table(csv, ["x"], ["z"])
    csv.write_text("x,y\n1,0.5\n")
    with pytest.raises(ValueError, match="class labels must be integers"):
        load_table(csv, ["x"], ["y"], task="classification")
    with pytest.raises(ValueError, match="must end in .csv or .npz"):
        (tmp_path / "d.txt").write_text("x\n1\n")
        load_table(tmp_path / "d.txt", ["x"], ["x"])
    with pytest.raises(TypeError, match="inputs must be a non-empty list"):
        load_table(csv, "x", ["y"])
