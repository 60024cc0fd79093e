"""Complete, pickle-free snapshots of a single-chain sampler.

A snapshot holds everything a transition depends on — position with cached
:math:`U` and :math:`\\nabla U`, step size, metric, jitter, generator state,
warmup (dual averaging and Welford) state, counters and the stored draws (or,
when streaming, the list of committed chunks) — so a chain rebuilt from it
continues bit for bit as if it had never stopped.  Potentials are code, not
data: they are passed again when a sampler is rebuilt.

Snapshots contain only tensors, Python numbers, strings, lists and dicts, so
:func:`torch.load` reads them with ``weights_only=True``.  Files are written to
a temporary name and moved into place atomically, so a kill during a save
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .adaptation import DualAveragingState, WelfordState
from .kernels.metrics import DenseMetric, DiagMetric, Metric, ScalarMetric
from .kernels.potential import PotentialValue

CHECKPOINT_NAME = "checkpoint.pt"

#: Constructor arguments a sampler keeps as attributes of the same name.
INIT_ATTRIBUTES = ("num_steps", "jitter", "max_tree_depth", "delta_max", "log_interval",
                   "compile_potential")


def metric_state(metric: Metric) -> dict:
    """The inverse mass matrix of a scalar, diagonal or dense metric, tagged by kind."""
    if isinstance(metric, ScalarMetric):
        return {"kind": "scalar", "inv_mass": float(metric.inv_mass)}
    if isinstance(metric, DiagMetric):
        return {"kind": "diag", "inv_mass": metric.inv_mass.detach().cpu()}
    if isinstance(metric, DenseMetric):
        return {"kind": "dense", "inv_mass": metric.inv_mass.detach().cpu()}
    raise TypeError(
        f"cannot checkpoint a {type(metric).__name__}: only scalar, diagonal and dense "
        "metrics are saved; run without checkpoint_every or with such a metric."
    )


def metric_from_state(state: dict, dim: int, dtype: torch.dtype, device) -> Metric:
    """Rebuild the metric of :func:`metric_state` on ``device``."""
    if state["kind"] == "scalar":
        return ScalarMetric(state["inv_mass"], dim, dtype, device)
    inv_mass = state["inv_mass"].to(device)
    return DiagMetric(inv_mass) if state["kind"] == "diag" else DenseMetric(inv_mass)


def _warmup_state(w) -> dict | None:
    if w is None:
        return None
    dual = None if w.dual is None else [float(v) for v in w.dual[:4]] + list(w.dual[4:])
    welford = None
    if w.welford is not None:
        welford = {
            "count": w.welford.count,
            "mean": w.welford.mean.cpu(),
            "m2": w.welford.m2.cpu(),
            "dense": w.welford.dense,
        }
    return {
        "num_steps": w.num_steps,
        "done": w.done,
        "target_accept": w.target_accept,
        "adapt_mass": w.adapt_mass,
        "windows": [list(x) for x in w.windows],
        "dual": dual,
        "welford": welford,
    }


def _warmup_from_state(state: dict | None, device):
    from .samplers.base import WarmupState

    if state is None:
        return None
    welford = state["welford"]
    if welford is not None:
        welford = WelfordState(
            welford["count"],
            welford["mean"].to(device),
            welford["m2"].to(device),
            welford["dense"],
        )
    dual = state["dual"]
    return WarmupState(
        num_steps=state["num_steps"],
        done=state["done"],
        target_accept=state["target_accept"],
        adapt_mass=state["adapt_mass"],
        windows=[tuple(x) for x in state["windows"]],
        dual=None if dual is None else DualAveragingState(*dual),
        welford=welford,
    )


def sampler_state_dict(sampler) -> dict:
    """Snapshot of a :class:`~bnn_mcmc.samplers.Sampler` (see the module docstring)."""
    s = sampler._state
    grad = None if s.grad is None else s.grad.detach().cpu()
    init = {
        name: getattr(sampler, name)
        for name in INIT_ATTRIBUTES
        if name in inspect.signature(type(sampler).__init__).parameters
    }
    return {
        "class": type(sampler).__name__,
        "init": init,
        "device": str(s.position.device),
        "dtype": str(s.position.dtype).removeprefix("torch."),
        "position": s.position.detach().cpu(),
        "potential": s.potential,
        "grad": grad,
        "step_size": sampler.step_size,
        "metric": metric_state(sampler.metric),
        "generator": sampler.generator.get_state(),
        "warmup": _warmup_state(sampler._warmup),
        "pending_sampling": sampler._pending_sampling,
        "counters": {
            "num_transitions": sampler._num_transitions,
            "num_accepted": sampler._num_accepted,
            "sum_accept_stat": sampler._sum_accept_stat,
            "writer_step": sampler._writer_step,
            "since_checkpoint": sampler._since_checkpoint,
            "num_grad_evals": sampler._potential.num_grad_evals,
            "num_evals": sampler._potential.num_evals,
        },
        "output": sampler.output_options(),
        "draws": sampler._draws.state_dict(),
        "warmup_draws": sampler._warmup_draws.state_dict(),
    }


def load_sampler_state(sampler, state: dict) -> None:
    """Restore :func:`sampler_state_dict` into a sampler built with the same class and options."""
    if state["class"] != type(sampler).__name__:
        raise ValueError(
            f"checkpoint is of a {state['class']} chain, not {type(sampler).__name__}; "
            f"rebuild it with {state['class']}."
        )
    device = sampler._state.position.device
    position = state["position"].to(device)
    grad = None if state["grad"] is None else state["grad"].to(device)
    sampler._state = PotentialValue(position, state["potential"], grad)
    sampler.step_size = state["step_size"]
    sampler.metric = metric_from_state(state["metric"], sampler.dim, position.dtype, device)
    sampler.generator.set_state(state["generator"])
    sampler._warmup = _warmup_from_state(state["warmup"], device)
    sampler._pending_sampling = state["pending_sampling"]
    c = state["counters"]
    sampler._num_transitions = c["num_transitions"]
    sampler._num_accepted = c["num_accepted"]
    sampler._sum_accept_stat = c["sum_accept_stat"]
    sampler._writer_step = c["writer_step"]
    sampler._since_checkpoint = c["since_checkpoint"]
    sampler._potential.num_grad_evals = c["num_grad_evals"]
    sampler._potential.num_evals = c["num_evals"]
    sampler._draws.load_state_dict(state["draws"])
    sampler._warmup_draws.load_state_dict(state["warmup_draws"])


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` with :func:`torch.save`, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; was the run started with output_dir and checkpoint_every?"
        )
    return torch.load(path, weights_only=True, map_location="cpu")


def sampler_classes() -> dict[str, type]:
    """The single-chain sampler classes by name."""
    from .samplers import HMC, NUTS, MetropolisHastings

    return {cls.__name__: cls for cls in (HMC, NUTS, MetropolisHastings)}


def rebuild_sampler(state: dict, pot_energy_func: Callable, device=None, **kwargs):
    """A sampler of the snapshot's class on ``device`` (default: the snapshot's), restored.

    ``kwargs`` are constructor arguments that are not data (``logger``,
    ``writer``, ``writer_tag``, ``progress``).  ``device`` must be of the
    snapshot's device type (another CUDA index is fine): generator states
    are device-specific.
    """
    cls = sampler_classes()[state["class"]]
    device = torch.device(device if device is not None else state["device"])
    saved = torch.device(state["device"]).type
    if device.type != saved:
        raise ValueError(
            f"the chain was checkpointed on a {saved} device and cannot continue on {device}: "
            "generator states are device-specific; resume it on a "
            f"{saved} device for the same draws."
        )
    position = state["position"].to(device)
    generator = torch.Generator(device=device)
    sampler = cls(position, pot_energy_func, generator=generator, **state["init"], **kwargs)
    sampler._configure_output(**state["output"], fresh=False)
    load_sampler_state(sampler, state)
    return sampler
