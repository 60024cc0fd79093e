"""The TOML description of a sampling run, checked strictly.

A run file has the sections ``[data]``, ``[network]``, ``[likelihood]``, ``[prior]``,
``[sampler]``, ``[run]`` and ``[parallel]`` (each chain's data sharded over processes,
as ``bnn-mcmc sample --nproc``); every section and key is optional except ``data.name``
and has the default listed in :data:`SCHEMA`.  Loading is safe (``tomllib`` parses
data only) and strict: an unknown section or key, a value of the wrong type, or a
value outside its allowed set raises :class:`ConfigError` naming the key and what is
allowed.  Example::

    [data]
    name = "regression_gap"      # or "cubic", "two_moons", "csv", "npz"
    n = 40

    [network]
    hidden = [50, 50]
    activation = "tanh"

    [likelihood]
    type = "gaussian"
    noise_std = 0.1

    [prior]
    type = "gaussian"
    scale = 1.0

    [sampler]
    type = "nuts"
    warmup = 500
    draws = 500

    [run]
    chains = 4
    seed = 0
    output_dir = "runs/gap"
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .options import AdaptMass, Backend, choices

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


class ConfigError(ValueError):
    """A run file that does not follow :data:`SCHEMA`."""


@dataclass(frozen=True)
class Key:
    """One allowed key: its type(s), default, allowed values and lower bound."""

    types: tuple[type, ...]
    default: Any
    choices: tuple | None = None
    minimum: float | None = None
    positive: bool = False
    doc: str = ""


_INT = (int,)
_NUM = (int, float)
_STR = (str,)
_BOOL = (bool,)
_LIST = (list,)

#: Every section, key, type, default and allowed value of a run file.
SCHEMA: dict[str, dict[str, Key]] = {
    "data": {
        "name": Key(
            _STR,
            None,
            ("regression_gap", "cubic", "two_moons", "csv", "npz"),
            doc="a built-in toy, or a file format",
        ),
        "path": Key(_STR, None, doc="data file (csv/npz), relative to the config file"),
        "inputs": Key(_LIST, None, doc="input column names (csv/npz)"),
        "targets": Key(_LIST, None, doc="target column names (csv/npz)"),
        "task": Key(
            _STR,
            None,
            ("regression", "classification"),
            doc="task of a csv/npz file (default regression)",
        ),
        "n": Key(_INT, None, minimum=2, doc="number of points of a built-in toy"),
        "noise": Key(_NUM, None, minimum=0, doc="noise of a built-in toy"),
        "seed": Key(_INT, None, minimum=0, doc="seed of a built-in toy (default 0)"),
    },
    "network": {
        "hidden": Key(_LIST, [50, 50], doc="hidden layer widths"),
        "activation": Key(_STR, "tanh", ("tanh", "relu", "sigmoid", "elu", "softplus", "gelu")),
        "bias": Key(_BOOL, True),
        "dtype": Key(_STR, "float32", ("float32", "float64")),
    },
    "likelihood": {
        "type": Key(
            _STR,
            None,
            ("gaussian", "student_t", "categorical", "bernoulli"),
            doc="default: gaussian for regression, categorical for classification",
        ),
        "noise_std": Key(
            _NUM, None, positive=True, doc="noise std (gaussian) or scale (student_t); default 0.1"
        ),
        "df": Key(_NUM, None, positive=True, doc="degrees of freedom (student_t); default 4"),
        "temperature": Key(_NUM, 1.0, positive=True, doc="posterior temperature"),
    },
    "prior": {
        "type": Key(_STR, "gaussian", ("gaussian", "laplace")),
        "scale": Key(_NUM, 1.0, positive=True, doc="std (gaussian) or scale (laplace)"),
    },
    "sampler": {
        "type": Key(
            _STR,
            "nuts",
            ("nuts", "hmc", "mh", "chees", "meads"),
            doc="chees/meads: chains in lockstep, run.backend = 'vectorized'",
        ),
        "warmup": Key(_INT, 500, minimum=0),
        "draws": Key(_INT, 500, minimum=1),
        "step_size": Key(
            _NUM, None, positive=True, doc="initial step size (hmc/nuts; default 0.02)"
        ),
        "num_steps": Key(_INT, None, minimum=1, doc="leapfrog steps (hmc; default 1)"),
        "max_tree_depth": Key(_INT, None, minimum=1, doc="(nuts; default 10, at most 30)"),
        "proposal_std": Key(_NUM, None, positive=True, doc="initial proposal std (mh; default 1)"),
        "trajectory_length": Key(
            _NUM, None, positive=True, doc="initial trajectory length (chees; default one step)"
        ),
        "max_steps": Key(_INT, None, minimum=1, doc="leapfrog steps at most (chees; default 1000)"),
        "learning_rate": Key(
            _NUM, None, positive=True, doc="Adam's rate on log T (chees; default 0.025)"
        ),
        "target_accept": Key(_NUM, None, positive=True, doc="default 0.8 (hmc/nuts), 0.234 (mh)"),
        "adapt_mass": Key(_STR, "diag", (*choices(AdaptMass), "none")),
        "thin": Key(_INT, 1, minimum=1),
    },
    "run": {
        "chains": Key(_INT, 4, minimum=1),
        "backend": Key(_STR, "sequential", choices(Backend)),
        "num_parallel": Key(_INT, 1, minimum=1, doc="chains run at once (joblib/dask)"),
        "scheduler_address": Key(_STR, None, doc="Dask scheduler, e.g. tcp://host:8786"),
        "devices": Key(_LIST, None, doc='e.g. ["cuda:0", "cuda:1"]'),
        "seed": Key(_INT, 0, minimum=0),
        "output_dir": Key(_STR, "bnn_mcmc_run", doc="relative to the config file"),
        "checkpoint_every": Key(
            _INT, 100, minimum=1, doc="transitions between checkpoints (for --resume)"
        ),
        "tensorboard": Key(_BOOL, True),
    },
    # issue 14: one chain's data sharded over processes (as `--nproc`; unset keys: None)
    "parallel": {
        "nproc": Key(
            _INT, None, minimum=1, doc="processes each chain's data is sharded over (--nproc)"
        ),
        "backend": Key(
            _STR, None, ("gloo", "nccl"), doc="gloo (CPU, default) or nccl (a GPU per process)"
        ),
        "timeout": Key(
            _NUM, None, positive=True, doc="seconds a collective waits for a lost process (120)"
        ),
    },
}


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array"}
    if types == _NUM:
        return "number"
    return " or ".join(names[t] for t in types)


def _a_type(types: tuple[type, ...]) -> str:
    """``_type_name`` with its indefinite article ("an integer", "a number")."""
    name = _type_name(types)
    return ("an " if name[0] in "aeiou" else "a ") + name


def _check_value(where: str, key: Key, value: Any) -> Any:
    # bool is a subclass of int: refuse it where a number is expected.
    if isinstance(value, bool) and bool not in key.types:
        ok = False
    else:
        ok = isinstance(value, key.types)
    if not ok:
        raise ConfigError(
            f"{where}: expected {_a_type(key.types)}, got {type(value).__name__} {value!r}."
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}.")
    if key.choices is not None and value not in key.choices:
        allowed = ", ".join(repr(c) for c in key.choices)
        raise ConfigError(f"{where}: {value!r} is not allowed; choose one of {allowed}.")
    if key.positive and not value > 0:
        raise ConfigError(f"{where}: must be > 0, got {value!r}.")
    if key.minimum is not None and value < key.minimum:
        raise ConfigError(f"{where}: must be >= {key.minimum}, got {value!r}.")
    if key.types == _NUM:
        return float(value)
    return value


def _check_list(where: str, value: list, item_types: tuple[type, ...], positive: bool) -> None:
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, item_types):
            raise ConfigError(f"{where}[{i}]: expected {_a_type(item_types)}, got {item!r}.")
        if positive and item <= 0:
            raise ConfigError(f"{where}[{i}]: layer widths must be positive, got {item!r}.")


@dataclass(frozen=True)
class RunConfig:
    """A checked run description: one plain dict per section, defaults filled in.

    Attributes
    ----------
    data, network, likelihood, prior, sampler, run, parallel : dict
        The sections of :data:`SCHEMA`.
    base_dir : Path
        Directory against which relative paths (data file, output folder) resolve.
    """

    data: dict
    network: dict
    likelihood: dict
    prior: dict
    sampler: dict
    run: dict
    base_dir: Path
    parallel: dict = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        """The run's output folder (absolute)."""
        return (self.base_dir / self.run["output_dir"]).resolve()

    def as_dict(self) -> dict[str, dict]:
        """The sections as a plain nested dict (what :func:`from_dict` accepts); keys
        whose value is ``None`` (unset, TOML has no null) are left out."""
        return {s: {k: v for k, v in getattr(self, s).items() if v is not None} for s in SCHEMA}


#: Keys that only some sampler types / likelihood types use.
SAMPLER_KEYS = {
    "step_size": ("hmc", "nuts", "chees"),
    "num_steps": ("hmc",),
    "max_tree_depth": ("nuts",),
    "proposal_std": ("mh",),
    "trajectory_length": ("chees",),
    "max_steps": ("chees",),
    "learning_rate": ("chees",),
}
LIKELIHOOD_KEYS = {"noise_std": ("gaussian", "student_t"), "df": ("student_t",)}


def _only_for(sections: dict, section: str, selector: str, keys: dict) -> None:
    """Refuse a key set for a ``section.selector`` value that does not use it."""
    chosen = sections[section][selector]
    for k, users in keys.items():
        if sections[section][k] is not None and chosen not in users:
            allowed = " or ".join(repr(u) for u in users)
            raise ConfigError(
                f"{section}.{k}: only used with {section}.{selector} = {allowed}, not {chosen!r}."
            )


def _cross_checks(sections: dict[str, dict], base_dir: Path) -> None:
    data = sections["data"]
    if data["name"] is None:
        raise ConfigError(
            "data.name: required; choose one of "
            + ", ".join(repr(c) for c in SCHEMA["data"]["name"].choices)
            + "."
        )
    _only_for(sections, "sampler", "type", SAMPLER_KEYS)
    lik_type = sections["likelihood"]["type"]
    if lik_type is not None:
        _only_for(sections, "likelihood", "type", LIKELIHOOD_KEYS)
    elif sections["likelihood"]["df"] is not None:
        raise ConfigError("likelihood.df: only for likelihood.type = 'student_t'.")
    file_keys = ("path", "inputs", "targets")
    if data["name"] in ("csv", "npz"):
        for k in file_keys:
            if data[k] is None:
                raise ConfigError(f"data.{k}: required when data.name = {data['name']!r}.")
        for k in ("inputs", "targets"):
            _check_list(f"data.{k}", data[k], _STR, positive=False)
            if not data[k]:
                raise ConfigError(f"data.{k}: give at least one column name.")
        for k in ("n", "noise", "seed"):
            if data[k] is not None:
                raise ConfigError(f"data.{k}: only for built-in toys, not for {data['name']!r}.")
    else:
        for k in (*file_keys, "task"):
            if data[k] is not None:
                raise ConfigError(f"data.{k}: only for data.name = 'csv' or 'npz'.")
    _check_list("network.hidden", sections["network"]["hidden"], _INT, positive=True)
    devices = sections["run"]["devices"]
    if devices is not None:
        _check_list("run.devices", devices, _STR, positive=False)
    run = sections["run"]
    if run["scheduler_address"] is not None and run["backend"] != "dask":
        raise ConfigError("run.scheduler_address: only used with run.backend = 'dask'.")
    depth = sections["sampler"]["max_tree_depth"]
    if depth is not None and depth > 30:
        raise ConfigError(f"sampler.max_tree_depth: must be <= 30, got {depth!r}.")
    nproc = sections["parallel"]["nproc"]
    if nproc is not None and nproc > 1 and run["backend"] != "sequential":
        raise ConfigError(
            f"parallel.nproc = {nproc}: a sharded run takes the chains one after the other; "
            f"set run.backend = 'sequential' (not {run['backend']!r}) or remove [parallel]."
        )
    ta = sections["sampler"]["target_accept"]
    if ta is not None and not 0 < ta < 1:
        raise ConfigError(f"sampler.target_accept: must lie in (0, 1), got {ta!r}.")


def from_dict(raw: Mapping[str, Any], base_dir: str | Path = ".") -> RunConfig:
    """Check a nested mapping against :data:`SCHEMA` and fill in the defaults.

    Raises
    ------
    ConfigError
        Naming the offending ``section.key`` and what is allowed.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a run description must be a table, got {type(raw).__name__}.")
    unknown = [s for s in raw if s not in SCHEMA]
    if unknown:
        raise ConfigError(
            f"unknown section [{unknown[0]}]; allowed sections: "
            + ", ".join(f"[{s}]" for s in SCHEMA)
            + "."
        )
    sections: dict[str, dict] = {}
    for name, keys in SCHEMA.items():
        given = raw.get(name, {})
        if not isinstance(given, Mapping):
            raise ConfigError(f"[{name}] must be a table, got {type(given).__name__}.")
        for k in given:
            if k not in keys:
                raise ConfigError(
                    f"{name}.{k}: unknown key; allowed keys in [{name}]: " + ", ".join(keys) + "."
                )
        checked = {}
        for k, key in keys.items():
            if k in given:
                checked[k] = _check_value(f"{name}.{k}", key, given[k])
            else:
                checked[k] = list(key.default) if isinstance(key.default, list) else key.default
        sections[name] = checked
    _cross_checks(sections, Path(base_dir))
    return RunConfig(**{s: sections[s] for s in SCHEMA}, base_dir=Path(base_dir).resolve())


def load_config(path: str | Path) -> RunConfig:
    """Read and check a TOML run file (relative paths in it resolve against its folder).

    Raises
    ------
    ConfigError
        For a missing file, invalid TOML, or a schema violation.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist.")
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML ({err}).") from None
    return from_dict(raw, path.parent)


def _toml(value: Any) -> str:
    """A default as it would be written in TOML (``(unset)`` for none)."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, list)):
        return json.dumps(value)
    return repr(value)


def describe_schema() -> str:
    """The schema as text: one ``section.key = default  (type; allowed)`` line per key."""
    lines = []
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]")
        for k, key in keys.items():
            info = [_type_name(key.types)]
            if key.choices:
                info.append("one of " + "|".join(str(c) for c in key.choices))
            if key.doc:
                info.append(key.doc)
            default = "(required)" if section == "data" and k == "name" else _toml(key.default)
            lines.append(f"  {k} = {default}  ({'; '.join(info)})")
    return "\n".join(lines)
