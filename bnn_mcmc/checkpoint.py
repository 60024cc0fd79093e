"""Complete, pickle-free snapshots of a single-chain sampler.

A snapshot holds everything a transition depends on — position with cached
:math:`U` and :math:`\\nabla U`, step size, metric, jitter, generator state,
warmup (dual averaging and Welford) state, counters and the stored draws (or,
when streaming, the list of committed chunks) — so a chain rebuilt from it
continues bit for bit as if it had never stopped.  Potentials are code, not
data: they are passed again when a sampler is rebuilt.

Snapshots contain only tensors, Python numbers, strings, lists and dicts, so
:func:`torch.load` reads them with ``weights_only=True``; a loaded snapshot is
validated (:func:`validate_checkpoint`) before use.  Files are written with
:func:`bnn_mcmc.runfolder.atomic_write`, so a kill during a save leaves the
previous checkpoint intact.  A checkpoint records no absolute path: resuming
writes into the folder it is read from.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import torch

from .adaptation import DualAveragingState, WelfordState
from .adaptation.window import WarmupState
from .kernels.metrics import DenseMetric, DiagMetric, Metric, ScalarMetric
from .runfolder import (
    MANIFEST_NAME,
    DamagedRunError,
    Manifest,
    atomic_write,
    read_bytes,
    write_manifest,
)

CHECKPOINT_NAME = "checkpoint.pt"

#: Constructor arguments a sampler keeps as attributes of the same name.
INIT_ATTRIBUTES = (
    "num_steps",
    "jitter",
    "max_tree_depth",
    "delta_max",
    "log_interval",
    "compile_potential",
)


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


def warmup_state(w) -> dict | None:
    """The warmup state ``w`` (or ``None``) as plain numbers, lists and tensors."""
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


def warmup_from_state(state: dict | None, device) -> WarmupState | None:
    """The :class:`~bnn_mcmc.adaptation.window.WarmupState` saved by :func:`warmup_state`."""
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


def save_checkpoint(
    path: str | os.PathLike, state: dict, run_dir: str | os.PathLike | None = None
) -> None:
    """Write ``state`` with :func:`torch.save`, atomically (``runfolder.atomic_write``).

    The folder is not recorded (``output_dir`` is saved as ``'.'``): the run
    folder is wherever the file is when it is resumed.  The folder's
    ``manifest.json`` is written with the first checkpoint.
    """
    path = Path(path)
    run_dir = path.parent if run_dir is None else run_dir
    if isinstance(state.get("output"), dict) and state["output"].get("output_dir") is not None:
        state = {**state, "output": {**state["output"], "output_dir": "."}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    if not (path.parent / MANIFEST_NAME).exists():
        write_manifest(path.parent, manifest_of(state))
    atomic_write(path, buffer.getvalue(), run_dir)


def holds_run(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a run worth keeping: a checkpoint, or committed draws.

    A folder whose creation was killed before its first checkpoint holds at most
    empty indices and a manifest: it may be set up afresh.
    """
    folder = Path(folder)
    if (folder / CHECKPOINT_NAME).exists():
        return True
    for sub in ("draws", "warmup"):
        index = folder / sub / "index.json"
        if index.exists():
            try:
                if json.loads(index.read_text()).get("chunks"):
                    return True
            except (ValueError, OSError, AttributeError):
                return True
    return False


def manifest_of(state: dict, num_chains: int = 1) -> Manifest:
    """The :class:`~bnn_mcmc.runfolder.Manifest` of a chain snapshot."""
    return Manifest(
        chain_type=state["class"],
        num_chains=num_chains,
        dim=int(state["position"].shape[0]),
        dtype=state["dtype"],
    )


DAMAGED_REMEDY = (
    "restore the folder from a copy, or resume an older copy of the run; the draws already "
    "committed can still be read with bnn_mcmc.storage.read_chunks"
)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and validate a checkpoint with ``torch.load(weights_only=True)``.

    Raises
    ------
    FileNotFoundError
        When there is no checkpoint.
    DamagedRunError
        When the file is truncated, not a checkpoint, holds objects other than
        plain data, or holds invalid values (a bad step size or mass matrix);
        the message names the file and the remedy.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; was the run started with output_dir and checkpoint_every?"
        )
    data = read_bytes(path)
    try:
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as err:  # torch raises many kinds on bad bytes; none is informative
        kind = "truncated" if isinstance(err, EOFError) or len(data) < 64 else "unreadable"
        raise DamagedRunError(
            f"{path} is {kind}: it is not a complete bnn_mcmc checkpoint of plain data "
            f"({type(err).__name__}); it is refused, never loaded unsafely. {DAMAGED_REMEDY}."
        ) from None
    validate_checkpoint(state, path)
    return state


_REQUIRED_KEYS = (
    "class",
    "init",
    "device",
    "dtype",
    "position",
    "potential",
    "grad",
    "step_size",
    "metric",
    "generator",
    "warmup",
    "pending_sampling",
    "counters",
    "output",
    "draws",
    "warmup_draws",
)
_COUNTERS = (
    "num_transitions",
    "num_accepted",
    "sum_accept_stat",
    "writer_step",
    "since_checkpoint",
    "num_grad_evals",
    "num_evals",
)


def validate_checkpoint(state: object, path: str | os.PathLike) -> None:
    """Check that a loaded checkpoint has the keys and sane values a chain needs.

    The step size must be finite and positive, the inverse mass matrix finite
    and positive (a positive scalar, a positive vector of the chain's length,
    or a symmetric positive-definite matrix), the position a finite 1-D
    floating tensor.

    Raises
    ------
    DamagedRunError
        Naming the file and what is wrong.
    """

    def bad(what: str) -> DamagedRunError:
        return DamagedRunError(f"{path}: {what}; the checkpoint is damaged: {DAMAGED_REMEDY}.")

    if not isinstance(state, dict):
        raise bad(f"holds a {type(state).__name__}, not a checkpoint")
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise bad(f"keys {missing} are missing")
    if not isinstance(state["class"], str) or not state["class"].isidentifier():
        raise bad(f"the chain class {state['class']!r} is not a class name")
    position = state["position"]
    if not isinstance(position, torch.Tensor) or position.ndim != 1 or position.numel() == 0:
        raise bad("the position is not a non-empty 1-D tensor")
    if not position.is_floating_point() or not bool(torch.isfinite(position).all()):
        raise bad("the position is not a finite floating tensor")
    if str(position.dtype).removeprefix("torch.") != state["dtype"]:
        raise bad(f"the position has dtype {position.dtype}, the checkpoint says {state['dtype']}")
    dim = position.shape[0]
    grad = state["grad"]
    if grad is not None and (not isinstance(grad, torch.Tensor) or grad.shape != position.shape):
        raise bad("the cached gradient does not match the position")
    if isinstance(state["potential"], bool) or not isinstance(state["potential"], (int, float)):
        raise bad("the cached potential is not a number")
    step = state["step_size"]
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step < math.inf:
        raise bad(f"the step size {step!r} is not a finite positive number")
    _validate_metric(state["metric"], dim, bad)
    if not isinstance(state["generator"], torch.Tensor) or state["generator"].dtype != torch.uint8:
        raise bad("the generator state is not a byte tensor")
    counters = state["counters"]
    if not isinstance(counters, dict) or any(k not in counters for k in _COUNTERS):
        raise bad("the counters are incomplete")
    for key in ("init", "output", "draws", "warmup_draws"):
        if not isinstance(state[key], dict):
            raise bad(f"{key!r} is not a table")
    pending = state["pending_sampling"]
    if isinstance(pending, bool) or not isinstance(pending, int) or pending < 0:
        raise bad(f"the pending number of transitions {pending!r} is invalid")


def _validate_metric(metric: object, dim: int, bad) -> None:
    if not isinstance(metric, dict) or metric.get("kind") not in ("scalar", "diag", "dense"):
        raise bad("the metric is not a scalar, diagonal or dense inverse mass matrix")
    inv = metric.get("inv_mass")
    if metric["kind"] == "scalar":
        if isinstance(inv, bool) or not isinstance(inv, (int, float)) or not 0 < inv < math.inf:
            raise bad(f"the inverse mass {inv!r} is not a finite positive number")
        return
    if not isinstance(inv, torch.Tensor) or not inv.is_floating_point():
        raise bad("the inverse mass matrix is not a floating tensor")
    shape = (dim,) if metric["kind"] == "diag" else (dim, dim)
    if tuple(inv.shape) != shape:
        raise bad(f"the inverse mass matrix has shape {tuple(inv.shape)}, expected {shape}")
    if not bool(torch.isfinite(inv).all()):
        raise bad("the inverse mass matrix has NaN or inf entries")
    if metric["kind"] == "diag":
        if not bool((inv > 0).all()):
            raise bad("the diagonal inverse mass matrix has entries <= 0")
        return
    m = inv.double()
    if not torch.allclose(m, m.T, rtol=1e-6, atol=1e-12) or torch.linalg.cholesky_ex(m).info:
        raise bad("the dense inverse mass matrix is not symmetric positive definite")


#: Options that resume accepts besides the potential (everything else is saved).
RESUME_OPTIONS = ("logger", "writer", "writer_tag", "progress")


def check_resume_options(kwargs: dict) -> None:
    """Refuse options that a resume cannot honour (the saved values are used)."""
    unknown = [k for k in kwargs if k not in RESUME_OPTIONS]
    if unknown:
        raise TypeError(
            f"resume cannot honour {', '.join(map(repr, unknown))}: the run continues with the "
            "settings saved in its checkpoint (step size, mass matrix, trajectory options, "
            f"output options) so that its draws match an uninterrupted run. Only "
            f"{', '.join(RESUME_OPTIONS)}, device and force are accepted; to change a setting, "
            "change the attribute after resume returns (e.g. sampler.step_size = 0.1)."
        )
