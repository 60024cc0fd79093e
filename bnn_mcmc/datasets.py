"""Built-in toy data sets and loading of tabular data (CSV / NPZ) by column name.

The toys are the usual test beds for Bayesian neural networks:

* :func:`regression_gap` — 1-D regression with a gap in the inputs, where a good
  posterior widens its predictive band (Foong et al., 2019, "In-between uncertainty
  in Bayesian neural networks");
* :func:`cubic` — :math:`y = x^3 + \\varepsilon`, :math:`\\varepsilon \\sim N(0, 3^2)`,
  :math:`x \\sim U(-4, 4)` (Hernández-Lobato & Adams, 2015), returned standardised;
* :func:`two_moons` — two interleaving half circles for binary classification, the
  geometry of scikit-learn's ``make_moons`` generated here with numpy alone.

Every generator takes a ``seed`` and uses its own ``numpy.random.Generator``; the
global random state is never touched.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

#: Names accepted by :func:`load_builtin`.
BUILTIN = ("regression_gap", "cubic", "two_moons")


@dataclass
class Dataset:
    """Inputs and targets of a supervised problem.

    Attributes
    ----------
    name : str
        Short name (used in titles and file names).
    x : Tensor
        Inputs, ``(n, d)`` floating point.
    y : Tensor
        Targets: ``(n, k)`` floating point for regression, ``(n,)`` int64 labels for
        classification.
    task : str
        ``'regression'`` or ``'classification'``.
    x_grid : Tensor or None
        Inputs on which to draw the predictive (a line for 1-D inputs, ``None`` otherwise).
    """

    name: str
    x: Tensor
    y: Tensor
    task: str
    x_grid: Tensor | None = None

    @property
    def n_in(self) -> int:
        """Number of input features."""
        return int(self.x.shape[1])

    @property
    def n_out(self) -> int:
        """Network outputs needed: target columns, or the number of classes."""
        if self.task == "classification":
            return int(self.y.max().item()) + 1
        return int(self.y.shape[1])


def _check_count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return value


def _check_noise(noise: float) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"noise must be a non-negative number, got {noise!r}.")
    return float(noise)


def _line(x: np.ndarray, margin: float, num: int = 200) -> Tensor:
    lo, hi = float(x.min()), float(x.max())
    pad = margin * (hi - lo)
    return torch.linspace(lo - pad, hi + pad, num, dtype=torch.float64).unsqueeze(1)


def _as_dataset(name, x, y, task, dtype, grid=None) -> Dataset:
    xt = torch.as_tensor(x, dtype=dtype)
    yt = torch.as_tensor(y, dtype=torch.int64 if task == "classification" else dtype)
    return Dataset(name, xt, yt, task, None if grid is None else grid.to(dtype))


def regression_gap(
    n: int = 40, noise: float = 0.1, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Dataset:
    r"""1-D regression with a gap: :math:`y = \sin(3x) + 0.3x + \varepsilon`.

    Half of the ``n`` inputs are uniform on :math:`[-1.5, -0.5]`, the other half on
    :math:`[0.5, 1.5]`; nothing is observed in :math:`(-0.5, 0.5)`, where the predictive
    uncertainty should grow.  :math:`\varepsilon \sim N(0, \text{noise}^2)`.

    Parameters
    ----------
    n : int
        Number of points (at least 2).
    noise : float
        Standard deviation of the observation noise.
    seed : int
        Seed of the ``numpy.random.Generator``.
    dtype : torch.dtype
        Floating dtype of the returned tensors.

    Returns
    -------
    Dataset
        ``x`` of shape ``(n, 1)``, ``y`` of shape ``(n, 1)``, a grid on :math:`[-2, 2]`.
    """
    n = _check_count("n", n, 2)
    noise = _check_noise(noise)
    rng = np.random.default_rng(seed)
    left = rng.uniform(-1.5, -0.5, n // 2)
    right = rng.uniform(0.5, 1.5, n - n // 2)
    x = np.sort(np.concatenate([left, right]))
    y = np.sin(3.0 * x) + 0.3 * x + noise * rng.standard_normal(n)
    grid = torch.linspace(-2.0, 2.0, 200, dtype=torch.float64).unsqueeze(1)
    return _as_dataset("regression_gap", x[:, None], y[:, None], "regression", dtype, grid)


def cubic(
    n: int = 20, noise: float = 3.0, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Dataset:
    r"""The cubic toy :math:`y = x^3 + \varepsilon`, :math:`x \sim U(-4, 4)`.

    Targets are divided by 27 (the standard deviation of :math:`x^3` on the grid's
    range, rounded) so that a unit-scale prior on the weights is sensible; the noise
    standard deviation on that scale is ``noise / 27``.

    Parameters
    ----------
    n : int
        Number of points.
    noise : float
        Standard deviation of :math:`\varepsilon` before scaling (3 in the original).
    seed : int
        Seed of the ``numpy.random.Generator``.
    dtype : torch.dtype
        Floating dtype of the returned tensors.

    Returns
    -------
    Dataset
        ``x`` ``(n, 1)``, ``y`` ``(n, 1)``, a grid on :math:`[-6, 6]`.
    """
    n = _check_count("n", n, 2)
    noise = _check_noise(noise)
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-4.0, 4.0, n))
    y = (x**3 + noise * rng.standard_normal(n)) / 27.0
    grid = torch.linspace(-6.0, 6.0, 200, dtype=torch.float64).unsqueeze(1)
    return _as_dataset("cubic", x[:, None], y[:, None], "regression", dtype, grid)


def two_moons(
    n: int = 200, noise: float = 0.2, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Dataset:
    r"""Two interleaving half circles, labels 0 (upper moon) and 1 (lower moon).

    The upper moon is :math:`(\cos t, \sin t)` and the lower one
    :math:`(1 - \cos t, \tfrac12 - \sin t)` for ``n // 2`` (resp. the rest) evenly
    spaced :math:`t \in [0, \pi]`; isotropic Gaussian noise of standard deviation
    ``noise`` is added and the points are shuffled.  The geometry is that of
    scikit-learn's ``make_moons``; the random draws differ from it.

    Returns
    -------
    Dataset
        ``x`` ``(n, 2)``, ``y`` ``(n,)`` int64 labels, no grid (2-D inputs).
    """
    n = _check_count("n", n, 2)
    noise = _check_noise(noise)
    rng = np.random.default_rng(seed)
    n_up = n // 2
    t_up = np.linspace(0.0, np.pi, n_up)
    t_low = np.linspace(0.0, np.pi, n - n_up)
    x = np.concatenate(
        [
            np.stack([np.cos(t_up), np.sin(t_up)], axis=1),
            np.stack([1.0 - np.cos(t_low), 0.5 - np.sin(t_low)], axis=1),
        ]
    )
    labels = np.concatenate([np.zeros(n_up, np.int64), np.ones(n - n_up, np.int64)])
    x = x + noise * rng.standard_normal(x.shape)
    order = rng.permutation(n)
    return _as_dataset("two_moons", x[order], labels[order], "classification", dtype)


def load_builtin(
    name: str,
    n: int | None = None,
    noise: float | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    """Build one of the :data:`BUILTIN` toys by name (``None`` keeps its default)."""
    makers = {"regression_gap": regression_gap, "cubic": cubic, "two_moons": two_moons}
    if name not in makers:
        raise ValueError(f"unknown data set {name!r}; built-in data sets are {BUILTIN}.")
    kwargs = {"seed": seed, "dtype": dtype}
    if n is not None:
        kwargs["n"] = n
    if noise is not None:
        kwargs["noise"] = noise
    return makers[name](**kwargs)


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise ValueError(f"{path}: a CSV file needs a header row and at least one data row.")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}: line {i} has {len(row)} fields, the header {len(header)}.")
    columns = {}
    for j, name in enumerate(header):
        try:
            columns[name] = np.array([float(row[j]) for row in body])
        except ValueError as err:
            raise ValueError(f"{path}: column {name!r} is not numeric ({err}).") from None
    return columns


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: np.asarray(data[key]) for key in data.files}


def _stack(columns: dict[str, np.ndarray], names: Sequence[str], role: str, path: Path):
    missing = [c for c in names if c not in columns]
    if missing:
        raise ValueError(
            f"{path}: {role} column(s) {missing} not found; available: {sorted(columns)}."
        )
    parts = []
    for c in names:
        a = columns[c]
        if a.ndim not in (1, 2):
            raise ValueError(f"{path}: array {c!r} must be 1-D or 2-D, got shape {a.shape}.")
        parts.append(a[:, None] if a.ndim == 1 else a)
    lengths = {p.shape[0] for p in parts}
    if len(lengths) != 1:
        raise ValueError(f"{path}: {role} columns have different lengths {sorted(lengths)}.")
    return np.concatenate(parts, axis=1)


def load_table(
    path: str | Path,
    inputs: Sequence[str],
    targets: Sequence[str],
    task: str = "regression",
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    """Load a CSV (with a header row) or NPZ file, picking columns by name.

    Parameters
    ----------
    path : str or Path
        A ``.csv`` file whose first row names the columns, or a ``.npz`` archive whose
        arrays (1-D: one column; 2-D: several) are the columns (loaded without pickle).
    inputs, targets : sequence of str
        Names of the input and target columns.
    task : {'regression', 'classification'}
        For classification there must be exactly one target column holding integer
        labels ``0 .. C-1``.
    dtype : torch.dtype
        Floating dtype of the inputs (and of regression targets).

    Returns
    -------
    Dataset
    """
    path = Path(path)
    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}.")
    for role, names in (("inputs", inputs), ("targets", targets)):
        if isinstance(names, str) or not names or not all(isinstance(c, str) for c in names):
            raise TypeError(f"{role} must be a non-empty list of column names, got {names!r}.")
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        columns = _read_csv(path)
    elif suffix == ".npz":
        columns = _read_npz(path)
    else:
        raise ValueError(f"data file {str(path)!r} must end in .csv or .npz.")
    x = _stack(columns, inputs, "input", path).astype(np.float64)
    y = _stack(columns, targets, "target", path).astype(np.float64)
    if task == "classification":
        if y.shape[1] != 1:
            raise ValueError(f"classification needs one target column, got {list(targets)}.")
        labels = y[:, 0]
        if np.any(labels != np.round(labels)) or labels.min() < 0:
            raise ValueError(f"{path}: class labels must be integers >= 0.")
        y = labels.astype(np.int64)
    grid = _line(x[:, 0], 0.25) if x.shape[1] == 1 else None
    return _as_dataset(path.stem, x, y, task, dtype, grid)
