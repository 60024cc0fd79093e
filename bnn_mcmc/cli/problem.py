"""From a checked run description to data, network, likelihood, prior and potential."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..bnn import (
    MLP,
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    GaussianPrior,
    LaplacePrior,
    Likelihood,
    Prior,
    StudentTLikelihood,
    nn_pot_energy,
)
from ..config import ConfigError, RunConfig
from ..datasets import Dataset, load_builtin, load_table

ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "elu": nn.functional.elu,
    "softplus": nn.functional.softplus,
    "gelu": nn.functional.gelu,
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Problem:
    """Everything a chain needs: the data, the network and the potential ``U(w)``."""

    data: Dataset
    net: MLP
    likelihood: Likelihood
    prior: Prior
    potential: object
    device: torch.device

    @property
    def dim(self) -> int:
        """Length of the flat weight vector."""
        return self.net.num_params

    def initial_position(self, seed: int) -> Tensor:
        """PyTorch's default layer initialisation drawn from a generator seeded ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        net = MLP(
            self.net.n_in,
            self.net.n_out,
            self.net.hidden_layers,
            self.net.activation_fn,
            self.net.has_bias,
            generator=gen,
        )
        vec = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
        return vec.to(dtype=self.data.x.dtype, device=self.device)


def load_data(cfg: RunConfig) -> Dataset:
    """The data set that ``cfg.data`` describes."""
    d = cfg.data
    dtype = DTYPES[cfg.network["dtype"]]
    if d["name"] in ("csv", "npz"):
        path = cfg.base_dir / d["path"]
        if path.suffix.lower() != "." + d["name"]:
            raise ConfigError(f"data.path: {d['path']!r} does not end in .{d['name']}.")
        return load_table(path, d["inputs"], d["targets"], d["task"] or "regression", dtype)
    return load_builtin(d["name"], d["n"], d["noise"], d["seed"] or 0, dtype)


def make_likelihood(cfg: RunConfig, data: Dataset) -> Likelihood:
    """The observation model of ``cfg.likelihood`` (checked against the task)."""
    lk = cfg.likelihood
    kind = lk["type"] or ("gaussian" if data.task == "regression" else "categorical")
    needs = {
        "gaussian": "regression",
        "student_t": "regression",
        "categorical": "classification",
        "bernoulli": "classification",
    }
    if needs[kind] != data.task:
        raise ConfigError(
            f"likelihood.type: {kind!r} needs a {needs[kind]} data set, but data "
            f"{data.name!r} is {data.task}."
        )
    if kind in ("categorical", "bernoulli") and lk["noise_std"] is not None:
        raise ConfigError(f"likelihood.noise_std: not used by the {kind} likelihood.")
    noise = 0.1 if lk["noise_std"] is None else lk["noise_std"]
    if kind == "gaussian":
        return GaussianLikelihood(tau_pred=1.0 / noise**2)
    if kind == "student_t":
        return StudentTLikelihood(df=4.0 if lk["df"] is None else lk["df"], scale=noise)
    if kind == "bernoulli":
        if data.n_out > 2:
            raise ConfigError("likelihood.type: 'bernoulli' needs two classes; use 'categorical'.")
        return BernoulliLikelihood()
    return CategoricalLikelihood()


def build_problem(cfg: RunConfig, device: str | torch.device = "cpu") -> Problem:
    """Data, ``MLP``, likelihood, prior and potential of a run, on ``device``."""
    data = load_data(cfg)
    likelihood = make_likelihood(cfg, data)
    n_out = 1 if isinstance(likelihood, BernoulliLikelihood) else data.n_out
    net_cfg = cfg.network
    net = MLP(
        data.n_in,
        n_out,
        tuple(net_cfg["hidden"]),
        ACTIVATIONS[net_cfg["activation"]],
        net_cfg["bias"],
        generator=torch.Generator().manual_seed(0),
    ).to(device=device, dtype=DTYPES[net_cfg["dtype"]])
    scale = cfg.prior["scale"]
    prior = GaussianPrior(std=scale) if cfg.prior["type"] == "gaussian" else LaplacePrior(scale)
    device = torch.device(device)
    x, y = data.x.to(device), data.y.to(device)
    potential = nn_pot_energy(
        net,
        x,
        y,
        likelihood=likelihood,
        prior=prior,
        temperature=cfg.likelihood["temperature"],
    )
    return Problem(data, net, likelihood, prior, potential, device)
