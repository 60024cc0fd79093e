"""``MultiChainHMC``: several single-chain samplers run as one experiment."""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..checkpoint import load_checkpoint, manifest_of
from ..checks import check_seed, check_starts
from ..kernels.batched_hmc import BatchedPotential, vmap_potential
from ..options import Backend, ChainType, parse_option
from ..runfolder import SettingsMismatchError, check_manifest, remove_stale_temporaries
from ..samplers import HMC, NUTS, MetropolisHastings, Sampler
from .executors import ChainError, ChainTask, run_tasks
from .lockstep import LOCKSTEP_TYPES, build_lockstep
from .potentials import PotentialFactory, build_potential, per_chain_potentials
from .runlog import (
    META_NAME,
    IncompleteRunError,
    RunMeta,
    chain_dir,
    check_chain_class,
    clear_interrupted_creation,
    read_meta,
    record_call,
    write_meta,
    write_run_manifest,
)
from .seeds import chain_seeds
from .vectorized import (
    check_batched_potential,
    check_vectorizable,
    run_vectorized,
    search_in_lockstep,
)

CHAIN_TYPES: dict[str, type[Sampler]] = {"hmc": HMC, "nuts": NUTS, "mh": MetropolisHastings}
OUTPUT_OPTIONS = ("output_dir", "checkpoint_every", "thin", "chunk_size")
_chain_dir = chain_dir


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
        chain_type = getattr(chain_type, "value", chain_type)  # a ChainType member
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
        chain_type = parse_option(ChainType, chain_type, "chain_type").value
        if chain_type not in CHAIN_TYPES:  # the lockstep types were routed by __new__
            raise ValueError(f"chain_type {chain_type!r} needs the lockstep ensemble.")
        if isinstance(initial_positions, Tensor):
            if initial_positions.ndim != 2:
                raise ValueError(
                    "initial_positions as a tensor must have shape (chains, dim); got "
                    f"{tuple(initial_positions.shape)}."
                )
            initial_positions = list(initial_positions.unbind(0))
        positions = check_starts(list(initial_positions))
        n = len(positions)
        output = {k: sampler_kwargs.pop(k) for k in OUTPUT_OPTIONS if k in sampler_kwargs}
        self.chain_type = chain_type
        self.seed, self.seeds = chain_seeds(None if seed is None else check_seed(seed), n)
        self.devices = self._place(positions, devices)
        self.output_dir = (
            Path(os.path.abspath(output["output_dir"])) if output.get("output_dir") else None
        )
        self._calls: list[dict] = []
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
            self._create_run_folder({k: v for k, v in output.items() if k != "output_dir"})
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
        if backend is not None:
            backend = parse_option(Backend, backend, "backend").value
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

    def _meta(self, committed: bool) -> RunMeta:
        return RunMeta(
            self.chain_type,
            len(self.chains),
            self.seed,
            self.seeds,
            self.devices,
            committed,
            self._calls,
        )

    def _write_meta(self, committed: bool = True) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_meta(self.output_dir, self._meta(committed))

    def _create_run_folder(self, output: dict) -> None:
        """Set up the run folder: settings, then every chain's initial checkpoint, then commit.

        ``multichain.json`` is written first with ``committed = false``; only
        when every chain's initial checkpoint exists is it marked committed.
        A creation killed before that is replaced by the next creation in the
        same folder (nothing was sampled), and resume says so.
        """
        meta_path = self.output_dir / META_NAME
        if meta_path.exists():
            try:
                read_meta(self.output_dir, CHAIN_TYPES)
            except IncompleteRunError:
                clear_interrupted_creation(self.output_dir, len(self.chains))
            except Exception:
                pass
            if meta_path.exists():
                raise ValueError(
                    f"output_dir {self.output_dir} already holds a run; continue it with "
                    "MultiChainHMC.resume(output_dir, pot_energy_func) or choose a new directory."
                )
        self._write_meta(committed=False)
        first = self.chains[0]
        write_run_manifest(
            self.output_dir,
            self._meta(False),
            type(first).__name__,
            first.dim,
            str(first.position.dtype).removeprefix("torch."),
        )
        for i, chain in enumerate(self.chains):  # each writes its initial checkpoint
            chain.configure_output(_chain_dir(self.output_dir, i), **output)
        self._write_meta(committed=True)

    @property
    def _journaled(self) -> bool:
        return self.output_dir is not None and self.chains[0].checkpoint_every is not None

    def _reload_from_folder(self, indices) -> None:
        """Make chains ``indices`` equal to their last checkpoint again (after a failure)."""
        for i in indices:
            try:
                self.chains[i].load_state_dict(load_checkpoint(_chain_dir(self.output_dir, i)))
            except Exception:  # the original error is more useful; resume() reports this one
                pass

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
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < total for i in indices
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

    def _run(
        self, indices: list[int], prepare, num_parallel: int, initial_steps=None
    ) -> None:
        """Record the work in each chain (``prepare(chain)``), checkpoint it, and run it.

        Recording the call before running it lets :meth:`resume` finish the
        chains that had not started when the run was killed.
        """
        backend = self._resolve_backend(num_parallel)
        if prepare is not None:
            self._record_call(indices, prepare, initial_steps or {})
        try:
            self._run_backend(indices, backend, num_parallel)
        except ChainError as err:
            if self._journaled:
                self._reload_from_folder(err.errors)
            raise

    def _record_call(
        self, indices: list[int], call: dict, initial_steps: dict[int, float] | None = None
    ) -> None:
        """Journal ``call`` (checkpointing runs), then record it in each chain and checkpoint it.

        Any failure leaves every chain equal to its checkpoint on disk; a
        resume records the journaled call in chains that missed it.
        """
        prepare = self._prepare_function(call, initial_steps or {})
        if not self._journaled:
            for i in indices:
                prepare(self.chains[i])
            return
        prepared = []
        try:
            for i in indices:  # argument errors surface before anything is written
                prepare(self.chains[i])
                prepared.append(i)
            self._calls.append({**call, "chains": list(indices)})
            try:
                self._write_meta()
            except BaseException:
                self._calls.pop()
                raise
            for i in indices:
                self.chains[i].run_call = len(self._calls)
                self.chains[i].save_checkpoint()
        except BaseException:
            self._reload_from_folder(prepared)
            raise

    def _prepare_function(self, call: dict, initial_steps: dict[int, float] | None = None):
        """The function that records ``call`` (a journal entry) in a chain.

        ``initial_steps`` maps ``id(chain)`` to the result of a step-size search already
        run for it (the vectorized backend searches for all chains at once).
        """
        initial_steps = initial_steps or {}
        return lambda chain: record_call(chain, call, initial_steps.get(id(chain)))

    def _run_backend(self, indices: list[int], backend: str, num_parallel: int) -> None:
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

    def _batched_function(self, indices) -> Callable:
        """``U(W) -> (chains,)`` for the chains ``indices`` of the vectorized backend."""
        func = self._batched
        if func is None:
            specs = {id(self._specs[i]) for i in indices}
            if len(specs) != 1:
                raise ValueError(
                    "the vectorized backend with a list of potentials needs "
                    "batched_pot_energy_func (U(W) -> (chains,))."
                )
            single = self.chains[indices[0]].pot_energy_func
            # a potential that evaluates a (chains, dim) batch natively (nn_pot_energy's does,
            # through the network's batched forward) is faster than vmap over the 1-D one
            func = single if getattr(single, "accepts_batches", False) else vmap_potential(single)
        elif not getattr(self, "_batched_checked", False):  # once, at the first batched call
            check_batched_potential(func, [self.chains[i] for i in indices])
            self._batched_checked = True
        return func

    def _run_vectorized(self, indices) -> None:
        func = self._batched_function(indices)
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
            if self.chains[i].warmup_pending:
                raise RuntimeError(f"chain {i} has an unfinished warmup; run warmup() first.")
        self._run(indices, {"kind": "sample", "num_states": num_states}, num_parallel)

    def warmup(
        self,
        num_steps: int,
        target_accept: float | None = None,
        adapt_mass: str | None = "diag",
        adapt_step_size: bool = True,
        num_chains=-1,
        num_parallel: int = 1,
    ) -> None:
        """Warm up the selected chains (see :meth:`bnn_mcmc.samplers.Sampler.warmup`).

        With the ``'vectorized'`` backend the initial step-size searches of all chains
        run together, one batched evaluation per trial (a resume that records this
        call in a chain that missed it runs that chain's own search, which draws the
        same random numbers).
        """
        indices = self._select(num_chains)
        chains = [self.chains[i] for i in indices]
        for chain in chains:
            chain.check_warmup_options(num_steps, target_accept, adapt_mass)
        initial: dict[int, float] = {}
        if (
            adapt_step_size
            and num_steps
            and self._resolve_backend(num_parallel) == "vectorized"
            and all(c.warmup_plan.restart == "search" for c in chains)
        ):
            check_vectorizable(chains)
            potential = BatchedPotential(self._batched_function(indices))
            found = search_in_lockstep(chains, potential, [c.step_size for c in chains])
            initial = {id(c): step for c, step in zip(chains, found)}
        call = {
            "kind": "warmup",
            "num_steps": num_steps,
            "target_accept": target_accept,
            "adapt_mass": adapt_mass,
            "adapt_step_size": adapt_step_size,
        }
        self._run(indices, call, num_parallel, initial)

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
        force: bool = False,
    ) -> MultiChainHMC:
        """Rebuild a run from its checkpoints and finish every chain's interrupted call.

        Draws equal those of an uninterrupted run bit for bit, on every backend
        (the lockstep kernels compute each chain's row independently of the others, so
        a vectorized run resumes exactly as long as the batched potential does too).
        Potentials are passed again, as for the constructor.  The run continues in
        ``output_dir`` wherever it was moved or copied to.  The folder is checked
        first (``multichain.json``, the manifest, every chain's checkpoint, and each
        potential at its chain's saved position; see :mod:`bnn_mcmc.runfolder`);
        ``force=True`` accepts a different potential or manifest.
        """
        output_dir = Path(os.path.abspath(output_dir))
        meta = read_meta(output_dir, CHAIN_TYPES)
        remove_stale_temporaries(output_dir)
        self = cls.__new__(cls)
        n = meta.num_chains
        self.chain_type, self.seed, self.seeds = meta.chain_type, meta.seed, meta.seeds
        self.devices, self.output_dir = meta.devices, output_dir
        self._calls = list(meta.calls)
        self._set_runtime(
            pot_energy_func, backend, client, scheduler_address, batched_pot_energy_func, n
        )
        self._writer_dirs = None
        loggers = _loggers(logger, n)
        expected = CHAIN_TYPES[meta.chain_type].__name__
        self.chains = []
        for i in range(n):
            device = torch.device(self.devices[i])
            folder = _chain_dir(output_dir, i)
            for sub in (folder, folder / "draws", folder / "warmup"):
                remove_stale_temporaries(sub)
            state = load_checkpoint(folder)
            check_chain_class(output_dir, i, state["class"], expected)
            try:
                check_manifest(output_dir, manifest_of(state, n), force)
            except SettingsMismatchError as err:
                raise SettingsMismatchError(f"{folder}/checkpoint.pt: {err}") from None
            chain = Sampler.from_state_dict(
                state,
                build_potential(self._specs[i], device),
                device=device,
                folder=folder,
                force=force,
                logger=loggers[i],
                writer_tag=f"chain{i}/",
                progress=progress,
            )
            chain.progress_position, chain.progress_label = i, f"chain{i}/"
            self.chains.append(chain)
        self._replay_last_call()
        self._run(list(range(n)), None, num_parallel)
        return self

    def _replay_last_call(self) -> None:
        """Record the last journaled call in the chains that were killed before recording it."""
        if not self._calls:
            return
        call = self._calls[-1]
        prepare = self._prepare_function(call)
        for i in call["chains"]:
            chain = self.chains[i]
            if chain.run_call < len(self._calls):
                prepare(chain)
                chain.run_call = len(self._calls)
                chain.save_checkpoint()

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
        lengths = {c.num_stored for c in self.chains}
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
