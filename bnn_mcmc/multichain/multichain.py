"""``MultiChainHMC``: several single-chain samplers run as one experiment."""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..checkpoint import load_checkpoint, rebuild_sampler
from ..kernels.batched_hmc import vmap_potential
from ..samplers import HMC, NUTS, MetropolisHastings, Sampler
from .executors import BACKENDS, ChainError, ChainTask, run_tasks
from .lockstep import LOCKSTEP_TYPES, build_lockstep
from .potentials import PotentialFactory, build_potential, per_chain_potentials
from .seeds import chain_seeds
from .vectorized import run_vectorized

CHAIN_TYPES: dict[str, type[Sampler]] = {"hmc": HMC, "nuts": NUTS, "mh": MetropolisHastings}
OUTPUT_OPTIONS = ("output_dir", "checkpoint_every", "thin", "chunk_size")
META_NAME = "multichain.json"


def _chain_dir(output_dir: Path, index: int) -> Path:
    return output_dir / f"chain_{index:02d}"


def _console_logger(index: int) -> logging.Logger:
    logger = logging.getLogger(f"bnn_mcmc.chain{index}")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"%(asctime)s chain {index}: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return logger


def _loggers(logger, num_chains: int) -> list[logging.Logger | None]:
    """One logger per chain: a single logger goes to chain 0 only; ``None`` in a list
    becomes a console logger naming the chain."""
    if logger is None or isinstance(logger, logging.Logger):
        return [logger] + [None] * (num_chains - 1)
    if not isinstance(logger, Sequence) or len(logger) != num_chains:
        raise ValueError(
            f"logger must be a logging.Logger or a list of {num_chains} loggers (None entries "
            "get a console logger); got " + repr(logger)
        )
    return [lg if lg is not None else _console_logger(i) for i, lg in enumerate(logger)]


class MultiChainHMC:
    """Several chains of HMC, NUTS or Metropolis–Hastings, run on any backend.

    Parameters
    ----------
    initial_positions
        A list of 1-D tensors or a ``(chains, dim)`` tensor: one start per chain.
    pot_energy_func
        ``U(w) -> scalar tensor``, a list of them (one per chain), or a
        :class:`~bnn_mcmc.multichain.PotentialFactory` (called with each chain's
        device where the chain runs).  For the ``'joblib'`` and ``'dask'``
        backends potentials must be picklable by cloudpickle, or be built by a
        factory in the worker.
    chain_type
        ``'hmc'``, ``'nuts'`` or ``'mh'``; ``'chees'`` or ``'meads'`` return the lockstep
        ensemble :class:`~bnn_mcmc.multichain.chees.ChEESHMC` or
        :class:`~bnn_mcmc.multichain.meads.MEADS` instead (vectorized backend, >= 2 chains).
    seed
        Root seed; chain ``i`` gets its own seed from it
        (:func:`~bnn_mcmc.multichain.seeds.chain_seeds`), so results do not
        depend on the backend or on ``num_parallel``.
    backend
        ``None`` (``'sequential'`` for ``num_parallel=1``, else ``'joblib'``),
        ``'sequential'``, ``'joblib'`` (loky processes, ``torch`` threads =
        cores / workers), ``'vectorized'`` (all chains in lockstep through one
        batched potential; chains agree with the other backends in
        distribution, not bit for bit) or ``'dask'`` (joblib's Dask backend on
        a ``distributed`` cluster given by ``client`` or ``scheduler_address``).
    devices
        Devices to place the chains on, round-robin (``['cuda:0', 'cuda:1']``);
        draws are always stored on CPU.
    scheduler_address, client
        The Dask cluster for ``backend='dask'``.
    batched_pot_energy_func
        ``U(W) -> (chains,)`` for the vectorised backend; without it the
        single-chain potential is batched with :func:`torch.func.vmap`.
    writer
        A tensorboardX ``SummaryWriter`` (tags get ``chain{i}/`` appended; only
        for in-process backends) or a directory (one writer per chain in
        ``writer/chain_{i}`` so the chains overlay in one plot).
    logger
        A logger (given to chain 0 only) or a list of loggers, one per chain
        (``None`` entries get a console logger naming the chain).  Worker
        processes (``'joblib'``, ``'dask'``) get each logger by name, without
        the parent's handlers; one without handlers there logs to the worker's
        console, naming the chain.
    progress
        One tqdm bar per chain, labelled ``chain{i}/`` on line ``i``
        (``tqdm.auto``: a widget in notebooks for in-process backends; bars of
        worker processes are drawn on the workers' stderr, i.e. the terminal
        and not a notebook cell).
    output_dir, checkpoint_every, thin, chunk_size
        Per chain, see :meth:`bnn_mcmc.samplers.Sampler.configure_output`;
        chain ``i`` writes to ``output_dir/chain_{i:02d}``.
    **sampler_kwargs
        Passed to every chain's constructor (``stepsize``, ``num_steps``,
        ``inv_mass``, ``max_tree_depth``, ``progress``, ...).
    """

    def __new__(cls, *args, **kwargs):
        # chain_type 'chees' / 'meads': one lockstep ensemble instead (multichain/lockstep.py)
        chain_type = kwargs.get("chain_type", args[2] if len(args) > 2 else None)
        if isinstance(chain_type, str) and chain_type in LOCKSTEP_TYPES:
            return build_lockstep(*args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        initial_positions: Sequence[Tensor] | Tensor,
        pot_energy_func,
        chain_type: str = "hmc",
        seed: int | None = None,
        backend: str | None = None,
        devices: Sequence[str | torch.device] | None = None,
        scheduler_address: str | None = None,
        client=None,
        batched_pot_energy_func: Callable[[Tensor], Tensor] | None = None,
        writer=None,
        writer_tag: str = "",
        logger=None,
        **sampler_kwargs,
    ):
        if chain_type not in CHAIN_TYPES:
            raise ValueError(
                f"chain_type must be one of {tuple(CHAIN_TYPES) + tuple(LOCKSTEP_TYPES)}; got "
                f"{chain_type!r}."
            )
        if isinstance(initial_positions, Tensor):
            if initial_positions.ndim != 2:
                raise ValueError(
                    "initial_positions as a tensor must have shape (chains, dim); got "
                    f"{tuple(initial_positions.shape)}."
                )
            initial_positions = list(initial_positions.unbind(0))
        positions = list(initial_positions)
        if not positions:
            raise ValueError("initial_positions must hold at least one position.")
        n = len(positions)
        output = {k: sampler_kwargs.pop(k) for k in OUTPUT_OPTIONS if k in sampler_kwargs}
        self.chain_type = chain_type
        self.seed, self.seeds = chain_seeds(seed, n)
        self.devices = self._place(positions, devices)
        self.output_dir = Path(output["output_dir"]) if output.get("output_dir") else None
        self._set_runtime(
            pot_energy_func, backend, client, scheduler_address, batched_pot_energy_func, n
        )
        writers, writer_tags = self._writers(writer, writer_tag, n)
        loggers = _loggers(logger, n)
        cls = CHAIN_TYPES[chain_type]
        self.chains: list[Sampler] = []
        for i, position in enumerate(positions):
            device = torch.device(self.devices[i])
            chain = cls(
                position.to(device),
                build_potential(self._specs[i], device),
                seed=self.seeds[i],
                writer=writers[i],
                writer_tag=writer_tags[i],
                logger=loggers[i],
                **sampler_kwargs,
            )
            chain.progress_position, chain.progress_label = i, f"chain{i}/"
            self.chains.append(chain)
        if self.output_dir is not None:
            if (self.output_dir / META_NAME).exists():
                raise ValueError(
                    f"output_dir {self.output_dir} already holds a run; continue it with "
                    "MultiChainHMC.resume(output_dir, pot_energy_func) or choose a new directory."
                )
            for i, chain in enumerate(self.chains):
                chain.configure_output(
                    _chain_dir(self.output_dir, i),
                    **{k: v for k, v in output.items() if k != "output_dir"},
                )
            self._write_meta()
        elif "checkpoint_every" in output:
            raise ValueError("checkpoint_every needs an output_dir to write checkpoints to.")
        elif output:
            for chain in self.chains:
                chain.configure_output(None, **output)

    # ----------------------------------------------------------------- set-up
    @staticmethod
    def _place(positions: list[Tensor], devices) -> list[str]:
        if devices is None:
            return [str(p.device) for p in positions]
        if isinstance(devices, (str, torch.device)) or not len(devices):
            raise ValueError(
                "devices must be a non-empty list such as ['cuda:0', 'cuda:1']; chains are "
                "placed on them round-robin."
            )
        return [str(torch.device(devices[i % len(devices)])) for i in range(len(positions))]

    def _set_runtime(self, pot_energy_func, backend, client, scheduler_address, batched, n):
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be None or one of {BACKENDS}; got {backend!r}.")
        if backend == "dask" and client is None and scheduler_address is None:
            raise ValueError("backend='dask' needs a distributed Client or a scheduler_address.")
        if (client is not None or scheduler_address is not None) and backend != "dask":
            raise ValueError("client and scheduler_address are used with backend='dask' only.")
        if batched is not None and backend != "vectorized":
            raise ValueError("batched_pot_energy_func is used with backend='vectorized' only.")
        if scheduler_address is not None and client is None:
            from distributed import Client

            client = Client(scheduler_address)
        self.backend, self.client, self._batched = backend, client, batched
        self._specs = per_chain_potentials(pot_energy_func, n)

    def _writers(self, writer, writer_tag: str, n: int):
        self._writer_dirs = None
        if writer is None:
            return [None] * n, [f"{writer_tag}chain{i}/" for i in range(n)]
        if isinstance(writer, (str, os.PathLike)):
            from tensorboardX import SummaryWriter

            self._writer_dirs = [str(Path(writer) / f"chain_{i}") for i in range(n)]
            return [SummaryWriter(d) for d in self._writer_dirs], [writer_tag] * n
        if not hasattr(writer, "add_scalar"):
            raise TypeError(
                f"writer must be a tensorboardX SummaryWriter or a directory; got {writer!r}."
            )
        return [writer] * n, [f"{writer_tag}chain{i}/" for i in range(n)]

    def _write_meta(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        meta = {
            "chain_type": self.chain_type,
            "num_chains": len(self.chains),
            "seed": self.seed,
            "seeds": self.seeds,
            "devices": self.devices,
        }
        (self.output_dir / META_NAME).write_text(json.dumps(meta, indent=1))

    # ---------------------------------------------------------------- running
    def _select(self, num_chains) -> list[int]:
        total = len(self.chains)
        if isinstance(num_chains, bool):
            raise TypeError("num_chains must be an int or a list of chain indices.")
        if isinstance(num_chains, int):
            if num_chains == -1:
                return list(range(total))
            if not 1 <= num_chains <= total:
                raise ValueError(f"num_chains must be -1 or in [1, {total}]; got {num_chains}.")
            order = sorted(range(total), key=lambda i: (self.chains[i].num_states, i))
            return sorted(order[:num_chains])
        if isinstance(num_chains, str) or not hasattr(num_chains, "__iter__"):
            raise TypeError(
                f"num_chains must be an int or a list of chain indices; got {num_chains!r}."
            )
        indices = list(num_chains)
        if len(set(indices)) != len(indices) or not all(
            isinstance(i, int) and 0 <= i < total for i in indices
        ):
            raise ValueError(
                f"num_chains as a list must hold distinct chain indices in [0, {total}); "
                f"got {num_chains!r}."
            )
        return indices

    def _resolve_backend(self, num_parallel: int) -> str:
        if isinstance(num_parallel, bool) or not isinstance(num_parallel, int) or num_parallel < 1:
            raise ValueError(f"num_parallel must be a positive int; got {num_parallel!r}.")
        if self.backend is not None:
            return self.backend
        return "sequential" if num_parallel == 1 else "joblib"

    def _run(self, indices: list[int], prepare, num_parallel: int) -> None:
        """Record the work in each chain (``prepare(chain)``), checkpoint it, and run it.

        Recording the call before running it lets :meth:`resume` finish the
        chains that had not started when the run was killed.
        """
        backend = self._resolve_backend(num_parallel)
        if prepare is not None:
            for i in indices:
                prepare(self.chains[i])
                if self.chains[i].checkpoint_every is not None:
                    self.chains[i].save_checkpoint()
        if backend == "vectorized":
            self._run_vectorized(indices)
            return
        if backend == "sequential":
            self._run_in_process(indices)
            return
        tasks = []
        for i in indices:
            chain = self.chains[i]
            options = {
                "logger": chain.logger,
                "writer_tag": chain.writer_tag,
                "progress": chain.progress,
                "progress_position": chain.progress_position,
                "progress_label": chain.progress_label,
            }
            writer_dir = None
            if backend == "sequential":
                options["writer"] = chain.writer
            elif self._writer_dirs is not None:
                writer_dir = self._writer_dirs[i]
            elif chain.writer is not None:
                raise ValueError(
                    "a SummaryWriter object cannot be sent to worker processes; pass writer "
                    "as a directory string (one writer per chain is made in each worker)."
                )
            tasks.append(
                ChainTask(
                    i,
                    chain.state_dict(),
                    self._specs[i],
                    self.devices[i],
                    options,
                    writer_dir,
                )
            )
        states, errors = run_tasks(tasks, backend, num_parallel, self.client)
        for i, state in states.items():
            self.chains[i].load_state_dict(state)
        if errors:
            raise ChainError(errors)

    def _run_in_process(self, indices: list[int]) -> None:
        """Finish each chain's recorded work here, one after the other.

        The chains run as they are: no snapshot round trip, hence no uncounted
        re-evaluation of the potential and no copy of the stored draws.
        """
        errors = {}
        for i in indices:
            try:
                self.chains[i].continue_run()
            except Exception:
                errors[i] = traceback.format_exc()
        if errors:
            raise ChainError(errors)

    def _run_vectorized(self, indices) -> None:
        func = self._batched
        if func is None:
            specs = {id(self._specs[i]) for i in indices}
            if len(specs) != 1:
                raise ValueError(
                    "the vectorized backend with a list of potentials needs "
                    "batched_pot_energy_func (U(W) -> (chains,))."
                )
            single = self.chains[indices[0]]._potential.func
            # a potential that evaluates a (chains, dim) batch natively (nn_pot_energy's does,
            # through the network's batched forward) is faster than vmap over the 1-D one
            func = single if getattr(single, "accepts_batches", False) else vmap_potential(single)
        try:
            run_vectorized([self.chains[i] for i in indices], func)
        except (ValueError, RuntimeError, TypeError) as err:
            if isinstance(err, ValueError) and "vectorized" in str(err):
                raise
            raise ChainError({i: f"{type(err).__name__}: {err}" for i in indices}) from err

    def simulate_chains(self, num_states: int, num_chains=-1, num_parallel: int = 1) -> None:
        """Add ``num_states`` transitions to the selected chains.

        Parameters
        ----------
        num_states
            Transitions per chain (stored draws: ``num_states / thin``).
        num_chains
            ``-1`` (all), an int ``k`` (the ``k`` chains with the fewest stored
            states, ties by index) or a list of chain indices.
        num_parallel
            Chains run at once (worker processes for ``'joblib'``/``'dask'``).

        Raises
        ------
        ChainError
            Naming each chain that failed; the others keep their new draws.
        """
        if isinstance(num_states, bool) or not isinstance(num_states, int) or num_states < 0:
            raise ValueError(f"num_states must be a non-negative int; got {num_states!r}.")
        indices = self._select(num_chains)
        for i in indices:
            if self.chains[i]._warmup is not None:
                raise RuntimeError(f"chain {i} has an unfinished warmup; run warmup() first.")
        self._run(
            indices, lambda chain: setattr(chain, "_pending_sampling", num_states), num_parallel
        )

    def warmup(
        self,
        num_steps: int,
        target_accept: float | None = None,
        adapt_mass: str | None = "diag",
        adapt_step_size: bool = True,
        num_chains=-1,
        num_parallel: int = 1,
    ) -> None:
        """Warm up the selected chains (see :meth:`bnn_mcmc.samplers.Sampler.warmup`)."""
        self._run(
            self._select(num_chains),
            lambda chain: chain._begin_warmup(
                num_steps, target_accept, adapt_mass, adapt_step_size
            ),
            num_parallel,
        )

    # --------------------------------------------------------------- resuming
    @classmethod
    def resume(
        cls,
        output_dir: str | os.PathLike,
        pot_energy_func,
        backend: str | None = None,
        num_parallel: int = 1,
        client=None,
        scheduler_address: str | None = None,
        batched_pot_energy_func=None,
        logger=None,
        progress: bool = False,
    ) -> MultiChainHMC:
        """Rebuild a run from its checkpoints and finish every chain's interrupted call.

        Draws equal those of an uninterrupted run bit for bit (for backends
        other than ``'vectorized'``).  Potentials are passed again, as for the
        constructor.
        """
        output_dir = Path(output_dir)
        meta_path = output_dir / META_NAME
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found; is {output_dir} a MultiChainHMC run?")
        meta = json.loads(meta_path.read_text())
        self = cls.__new__(cls)
        n = meta["num_chains"]
        self.chain_type, self.seed, self.seeds = meta["chain_type"], meta["seed"], meta["seeds"]
        self.devices, self.output_dir = meta["devices"], output_dir
        self._set_runtime(
            pot_energy_func, backend, client, scheduler_address, batched_pot_energy_func, n
        )
        self._writer_dirs = None
        loggers = _loggers(logger, n)
        self.chains = []
        for i in range(n):
            device = torch.device(self.devices[i])
            chain = rebuild_sampler(
                load_checkpoint(_chain_dir(output_dir, i)),
                build_potential(self._specs[i], device),
                device=device,
                logger=loggers[i],
                writer_tag=f"chain{i}/",
                progress=progress,
            )
            chain.progress_position, chain.progress_label = i, f"chain{i}/"
            self.chains.append(chain)
        self._run(list(range(n)), None, num_parallel)
        return self

    # -------------------------------------------------------------- read-outs
    @property
    def num_chains(self) -> int:
        """Number of chains."""
        return len(self.chains)

    @property
    def avg_acceptance_probability(self) -> float:
        """Mean of the chains' ``acceptance_probability`` (the original toolkit's read-out)."""
        return sum(c.acceptance_probability for c in self.chains) / len(self.chains)

    def samples(self) -> Tensor:
        """Draws of all chains as ``(chains, draws, dim)`` (chains must have equal lengths)."""
        lengths = {len(c._draws) for c in self.chains}
        if len(lengths) != 1:
            raise ValueError(
                f"chains hold different numbers of draws {sorted(lengths)}; read them from "
                "chains[i].samples() or simulate the shorter ones first."
            )
        return torch.stack([c.samples() for c in self.chains])

    def to_inference_data(self, **kwargs):
        """All chains as ArviZ ``InferenceData``; see :func:`bnn_mcmc.to_inference_data`."""
        from ..diagnostics.inference_data import to_inference_data

        return to_inference_data(self, **kwargs)

    def summary(self, **kwargs):
        """Convergence report; see :func:`bnn_mcmc.diagnostics.summary`."""
        from ..diagnostics.summary import summary

        return summary(self, **kwargs)


__all__ = ["CHAIN_TYPES", "ChainError", "MultiChainHMC", "PotentialFactory"]
