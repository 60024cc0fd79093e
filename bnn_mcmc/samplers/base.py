"""The stateful driver shared by every single-chain sampler.

A driver owns one chain: its current state (position with cached ``U`` and
``∇U``), its generator, its metric and step size, its stored draws and
statistics, and warmup.  The mathematics lives in the pure kernels of
:mod:`bnn_mcmc.kernels` and the adaptation functions of
:mod:`bnn_mcmc.adaptation`; a subclass only says which kernel to call.
"""

from __future__ import annotations

import inspect
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..adaptation.step_size import search_step_size
from ..adaptation.window import (
    WarmupPlan,
    WarmupState,
    metric_from_estimate,
    window_final,
    window_init,
    window_restart,
    window_step_size,
    window_update,
)
from ..checkpoint import (
    CHECKPOINT_NAME,
    DAMAGED_REMEDY,
    INIT_ATTRIBUTES,
    check_resume_options,
    holds_run,
    load_checkpoint,
    manifest_of,
    metric_from_state,
    metric_state,
    save_checkpoint,
    warmup_from_state,
    warmup_state,
)
from ..checks import check_count, check_positive, check_seed
from ..kernels.hmc import uniform
from ..kernels.metrics import DenseMetric, DiagMetric, Metric, ScalarMetric, make_metric
from ..kernels.potential import Potential, PotentialValue
from ..kernels.records import Info, info_stats
from ..optim.fisher_metric import resolve_inv_mass
from ..options import AdaptMass, choices
from ..runfolder import (
    DamagedRunError,
    check_manifest,
    check_potential_fingerprint,
    remove_stale_temporaries,
)
from ..storage import DrawStore

ADAPT_MASS_CHOICES = (*choices(AdaptMass), None)
#: ``thin`` of a rank that does not write output (it keeps no draw; its chain is unchanged).
FOLLOWER_THIN = 2**62


def check_position(position: object, name: str = "initial_position") -> Tensor:
    """Validate a chain's starting point: a finite, 1-D, floating tensor."""
    if not isinstance(position, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor (a flat weight vector); got {type(position).__name__}."
        )
    if position.ndim != 1 or position.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D tensor; got shape {tuple(position.shape)}. "
            "Flatten network weights with torch.nn.utils.parameters_to_vector."
        )
    if not position.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype; got {position.dtype}.")
    if not bool(torch.isfinite(position).all()):
        raise ValueError(f"{name} contains NaN or inf entries; start from a finite point.")
    return position.detach().clone()


def make_generator(
    seed: int | None, generator: torch.Generator | None, device: torch.device
) -> torch.Generator:
    """The chain's private generator: ``generator`` as given, or a new one seeded with ``seed``.

    Without either, a seed is drawn from the operating system; the global torch
    RNG is never used.
    """
    if generator is not None:
        if seed is not None:
            raise ValueError("pass either seed or generator, not both.")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}.")
        if generator.device.type != device.type:
            raise ValueError(
                f"generator lives on {generator.device}, the position on {device}; create "
                f"it with torch.Generator(device='{device}')."
            )
        return generator
    if seed is not None:
        seed = check_seed(seed)
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) if seed is not None else secrets.randbits(63))
    return g


#: The single-chain sampler classes by name, filled as they are defined; snapshots name
#: their class, and :meth:`Sampler.from_state_dict` looks it up here.
SAMPLER_CLASSES: dict[str, type[Sampler]] = {}


class Sampler:
    """Base class of the single-chain samplers (see :class:`~bnn_mcmc.HMC`).

    Subclasses define :meth:`_kernel`, ``stat_names`` and the default target
    acceptance statistic.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        SAMPLER_CLASSES[cls.__name__] = cls

    stat_names: tuple[str, ...] = ()
    warmup_plan = WarmupPlan()
    uses_gradient = True
    #: Whether ``acceptance_probability`` is the mean acceptance statistic
    #: (NUTS) instead of the fraction of accepted proposals.
    acceptance_from_statistic = False
    #: Dual averaging explores around ``centre * step_size`` (Hoffman & Gelman use 10).
    #: Output options (see :meth:`configure_output`); the defaults keep all draws in memory.
    output_dir: Path | None = None
    checkpoint_every: int | None = None
    thin: int = 1
    chunk_size: int = 256
    #: Line of the tqdm bar (one per chain when several run at once).
    progress_position: int | None = None
    #: Label of the tqdm bar (default: ``writer_tag``); ``MultiChainHMC`` names the chain.
    progress_label: str | None = None
    _pending_sampling = 0
    _since_checkpoint = 0
    #: Number of MultiChainHMC calls recorded in this chain (its run journal, issue 16).
    run_call: int = 0

    def __init__(
        self,
        initial_position: Tensor,
        pot_energy_func: Callable[[Tensor], Tensor],
        step_size: float,
        inv_mass: float | Tensor | Metric,
        logger: logging.Logger | None,
        log_interval: int,
        writer,
        writer_tag: str,
        seed: int | None,
        generator: torch.Generator | None,
        progress: bool,
        jitter: float = 0.0,
        compile_potential: bool = False,
    ):
        position = check_position(initial_position)
        self.compile_potential = bool(compile_potential)
        # issue 14 hook: a sharded potential (bnn_mcmc.distributed) checks here, with one
        # all-gather, that every rank starts the same chain, and says whether this rank writes
        self.writes_output = bool(getattr(pot_energy_func, "is_writer", True))
        start_chain = getattr(pot_energy_func, "start_chain", None)
        if start_chain is not None:
            start_chain(
                self,
                position,
                {
                    "seed": seed,
                    "generator": None if generator is None else generator.get_state(),
                    "step_size": step_size,
                    "inv_mass": inv_mass,
                    "compile_potential": self.compile_potential,
                },
            )
        self._potential = Potential(pot_energy_func, compile=self.compile_potential)
        self._state: PotentialValue = self._potential.check_initial(position, self.uses_gradient)
        self.dim = position.shape[0]
        # FishLeg hook (issue 15): inv_mass='fisher' -> a Kronecker metric fitted here from the
        # potential's .spec (bnn_mcmc/optim/fisher_metric.py); anything else passes unchanged.
        inv_mass = resolve_inv_mass(inv_mass, pot_energy_func, position)
        self.metric = make_metric(inv_mass, self.dim, position.dtype, position.device)
        self.step_size = check_positive("stepsize", step_size)
        if not (isinstance(jitter, (int, float)) and 0 <= jitter < 1):
            raise ValueError(f"jitter must be in [0, 1); got {jitter}.")
        self.jitter = float(jitter)
        self.generator = make_generator(seed, generator, position.device)
        self.logger = logger
        self.log_interval = check_count("log_interval", log_interval, 1)
        self.writer = writer if self.writes_output else None
        self.writer_tag = writer_tag
        self.progress = bool(progress)
        self._draws = DrawStore(self.dim, position.dtype, self.stat_names)
        self._warmup_draws = DrawStore(self.dim, position.dtype, self.stat_names)
        self._warmup: WarmupState | None = None
        self._num_transitions = 0
        self._num_accepted = 0
        self._sum_accept_stat = 0.0
        self._writer_step = 0

    # ------------------------------------------------------------------ kernel
    def _kernel(self, step_size: float) -> tuple[PotentialValue, Info]:
        raise NotImplementedError

    # --------------------------------------------------------------- read-outs
    @property
    def inv_mass(self) -> float | Tensor:
        """The inverse mass matrix (scalar, diagonal or dense) in use."""
        return self.metric.inv_mass

    @property
    def position(self) -> Tensor:
        """The chain's current position (detached)."""
        return self._state.position.detach()

    @property
    def potential_energy(self) -> float:
        """:math:`U` at the current position."""
        return self._state.potential

    @property
    def num_grad_evals(self) -> int:
        """Evaluations of :math:`U` with :math:`\\nabla U` so far (warmup included)."""
        return self._potential.num_grad_evals

    @property
    def num_states(self) -> int:
        """Number of posterior transitions simulated so far (warmup not counted).

        As in the original toolkit, clearing stored draws does not change it; the
        number of stored draws is ``len(samples())``.
        """
        return self._num_transitions

    @property
    def stepsize(self) -> float:
        """Alias of :attr:`step_size` (the original toolkit's name)."""
        return self.step_size

    @stepsize.setter
    def stepsize(self, value: float) -> None:
        self._step_size = check_positive("stepsize", value)

    @property
    def step_size(self) -> float:
        """The step size of the next transition (checked like :attr:`stepsize` on assignment)."""
        return self._step_size

    @step_size.setter
    def step_size(self, value: float) -> None:
        self._step_size = check_positive("step_size", value)

    @property
    def current_position(self) -> Tensor:
        """Alias of :attr:`position` (the original toolkit's name)."""
        return self.position

    def samples(self) -> Tensor:
        """The stored posterior draws as one ``(n, dim)`` tensor (``n`` after thinning/clearing)."""
        return self._draws.draws()

    @property
    def num_stored(self) -> int:
        """Number of stored posterior draws (after thinning and clearing)."""
        return len(self._draws)

    @property
    def position_trajectory(self) -> list[Tensor]:
        """The stored posterior draws as a list of 1-D tensors (views of :meth:`samples`).

        Unlike the original toolkit, the initial position is not stored: the
        list holds exactly the draws made by :meth:`simulate_chain`.
        """
        return list(self.samples().unbind(0))

    @property
    def stats(self) -> dict[str, Tensor]:
        """Per-transition statistics of the stored draws, by ArviZ ``sample_stats`` name."""
        return self._draws.stats()

    @property
    def warmup_trajectory(self) -> Tensor:
        """The warmup draws as one ``(n, dim)`` tensor."""
        return self._warmup_draws.draws()

    @property
    def warmup_stats(self) -> dict[str, Tensor]:
        """Per-transition statistics of the warmup draws."""
        return self._warmup_draws.stats()

    @property
    def acceptance_probability(self) -> float:
        """Fraction of accepted proposals after warmup (NUTS: mean acceptance statistic)."""
        if self._num_transitions == 0:
            return float("nan")
        if self.acceptance_from_statistic:
            return self._sum_accept_stat / self._num_transitions
        return self._num_accepted / self._num_transitions

    def clear_position_trajectory(self, n: int | None = None) -> None:
        """Drop all stored draws, or only the first ``n`` (the burn-in idiom).

        ``simulate_chain(1000 + burn_in)`` followed by
        ``clear_position_trajectory(n=burn_in)`` leaves exactly 1000 draws.
        """
        if n is not None:
            check_count("n", n)
        self._draws.drop_first(n)

    # ---------------------------------------------------------------- running
    def _jittered(self, step_size: float) -> float:
        if self.jitter == 0.0:
            return step_size
        return step_size * (1.0 + self.jitter * (2.0 * uniform(self.generator) - 1.0))

    def _transition(self) -> None:
        """One transition of this chain through its own kernel (the protocol below)."""
        step = self.next_step_size()
        state, info = self._kernel(step)
        self.complete_transition(state, info, step)

    def _record(self, info: Info, step: float, store: DrawStore) -> None:
        """Store the statistics of a transition that moved to ``self._state``, with lp and step."""
        stats = info_stats(info, -self._state.potential, step)
        store.append(self._state.position, stats)
        if self.writer is not None:
            self._write_scalars(stats)

    def _write_scalars(self, info: dict) -> None:
        tag = self.writer_tag
        step = self._writer_step
        self._writer_step += 1
        self.writer.add_scalar(f"{tag}potential", -info["lp"], step)
        if "energy" in info:
            self.writer.add_scalar(f"{tag}kinetic", info["energy"] + info["lp"], step)
            self.writer.add_scalar(f"{tag}hamiltonian", info["energy"], step)
        self.writer.add_scalar(f"{tag}acceptance", info["acceptance_rate"], step)
        self.writer.add_scalar(f"{tag}step_size", info["step_size"], step)
        if "tree_depth" in info:
            self.writer.add_scalar(f"{tag}tree_depth", info["tree_depth"], step)

    def _progress_bar(self, total: int, desc: str):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            desc=f"{self.writer_tag if self.progress_label is None else self.progress_label}{desc}",
            leave=False,
            position=self.progress_position,
        )

    def _log(self, phase: str, done: int, total: int) -> None:
        if self.logger is not None and (done % self.log_interval == 0 or done == total):
            self.logger.info(
                "%s%s: %d/%d states, U = %.4g, step size = %.3g, acceptance = %.3f",
                self.writer_tag,
                phase,
                done,
                total,
                self._state.potential,
                self.step_size,
                self.acceptance_probability if phase == "sampling" else float("nan"),
            )

    def simulate_chain(self, n: int) -> None:
        """Run ``n`` transitions at the current step size and store each draw.

        Calling it in several pieces gives the same chain as one call.
        """
        n = check_count("n", n)
        if self._warmup is not None:
            raise RuntimeError("an interrupted warmup is pending; call resume_warmup() first.")
        bar = self._progress_bar(n, "sampling")
        self.schedule_sampling(n)
        self._checkpoint_call()
        while self.phase == "sampling":
            self._transition()
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        self.finish_phase()

    def _count_sampling(self, info: Info) -> None:
        """Book-keeping after a post-warmup transition."""
        self._num_transitions += 1
        self._num_accepted += bool(getattr(info, "accepted", False))
        self._sum_accept_stat += info.acceptance_rate
        self._pending_sampling -= 1
        self._after_transition()

    # ------------------------------------------------- the transition protocol
    # The one contract between a chain and whatever advances it: the chain's own loops
    # (warmup, simulate_chain) and the lockstep driver of many chains both go
    # next_step_size -> kernel -> complete_transition, and finish_phase at the end.
    @property
    def state(self) -> PotentialValue:
        """The chain's current point: position with its cached :math:`U` and :math:`\\nabla U`."""
        return self._state

    @property
    def phase(self) -> str | None:
        """``'warmup'`` or ``'sampling'`` while that recorded call has transitions left."""
        if self._warmup is not None and self._warmup.done < self._warmup.num_steps:
            return "warmup"
        return "sampling" if self._pending_sampling > 0 else None

    @property
    def warmup_pending(self) -> bool:
        """Whether a recorded warmup is not finished (its last step may still be due)."""
        return self._warmup is not None

    @property
    def pending_transitions(self) -> int:
        """Transitions left in the current phase."""
        if self.phase == "warmup":
            return self._warmup.num_steps - self._warmup.done
        return self._pending_sampling

    @property
    def pot_energy_func(self) -> Callable[[Tensor], Tensor]:
        """The potential this chain evaluates (the function given, not a wrapper)."""
        return self._potential.func

    @property
    def current_step_size(self) -> float:
        """The step size in use now, before jitter: warmup's while one is recorded."""
        return self._warmup_step_size() if self._warmup is not None else self.step_size

    def schedule_sampling(self, n: int) -> None:
        """Record ``n`` sampling transitions to be run (by :meth:`continue_run` or a driver)."""
        self._pending_sampling = check_count("n", n)
        self._sampling_total = self._pending_sampling

    def next_step_size(self) -> float:
        """The step size of the next transition (warmup's or the adapted one), jittered.

        Draws one uniform from the chain's generator when ``jitter > 0``.
        """
        return self._jittered(self.current_step_size)

    def complete_transition(
        self,
        state: PotentialValue,
        info: Info,
        step_size: float,
        grad_evals: int | None = None,
        restart: bool = True,
    ) -> bool:
        """Store, count, adapt on, checkpoint and log one transition that moved to ``state``.

        ``grad_evals`` is added to :attr:`num_grad_evals` when the kernel ran outside
        this chain's counted potential (a batched evaluation).  In warmup, when a slow
        window closes, dual averaging restarts from a new step-size search; with
        ``restart=False`` the caller runs that search (for many chains at once) and
        passes its result to :meth:`restart_warmup`; the return value says whether
        one is due.
        """
        self._state = state
        if grad_evals is not None:
            self._potential.num_grad_evals += grad_evals
        if self.phase == "warmup":
            self._record(info, step_size, self._warmup_draws)
            return self._warmup_update(info, restart)
        self._record(info, step_size, self._draws)
        self._count_sampling(info)
        total = getattr(self, "_sampling_total", 0) or self._pending_sampling
        self._log("sampling", total - self._pending_sampling, total)
        return False

    def restart_warmup(self, step_size: float) -> None:
        """Restart dual averaging at ``step_size`` (after a closed window; see above)."""
        self._restart_warmup(step_size)

    def count_grad_evals(self, n: int) -> None:
        """Add ``n`` gradient evaluations made for this chain outside its own potential."""
        self._potential.num_grad_evals += n

    def finish_phase(self) -> None:
        """End the current call: the adapted step size after warmup; flush or checkpoint."""
        if self._warmup is not None and self._warmup.done >= self._warmup.num_steps:
            self._finish_warmup()
        else:
            self._end_of_run()

    def progress_bar(self, total: int, desc: str):
        """A tqdm bar labelled for this chain, or ``None`` without ``progress=True``."""
        return self._progress_bar(total, desc)

    # ----------------------------------------------------------------- warmup
    def search_step_size(self, step_size: float) -> float:
        """Hoffman & Gelman's step-size search from this chain's state (one gradient per trial).

        See :func:`bnn_mcmc.adaptation.step_size.search_step_size`; draws one momentum
        from this chain's generator.
        """
        return search_step_size(
            self._state, self.metric, self._potential, self.generator, step_size
        )

    def warmup(
        self,
        num_steps: int,
        target_accept: float | None = None,
        adapt_mass: str | None = "diag",
        adapt_step_size: bool = True,
    ) -> None:
        """Tune step size and inverse mass matrix; the draws go to ``warmup_trajectory``.

        The step size is adapted by dual averaging towards ``target_accept``
        (0.8 for HMC/NUTS, 0.234 for Metropolis–Hastings), restarted after a
        step-size search at the beginning and after every mass-matrix update.
        The inverse mass matrix (``'diag'``, ``'dense'`` or ``None`` to keep it)
        is re-estimated from the draws of each slow window of Stan's schedule
        (:func:`~bnn_mcmc.adaptation.adaptation_windows`) with Welford's method,
        regularised towards the identity.  Afterwards :attr:`step_size` and
        :attr:`inv_mass` hold the adapted values.

        Parameters
        ----------
        num_steps
            Number of warmup transitions.
        target_accept
            Target of the acceptance statistic, in (0, 1).
        adapt_mass
            ``'diag'``, ``'dense'`` or ``None``.
        adapt_step_size
            ``False`` keeps the step size (and only adapts the mass matrix).
        """
        self.schedule_warmup(num_steps, target_accept, adapt_mass, adapt_step_size)
        self._checkpoint_call()
        self.resume_warmup()

    def check_warmup_options(
        self, num_steps: int, target_accept: float | None, adapt_mass: str | None
    ) -> tuple[int, float]:
        """Check :meth:`warmup`'s options (clear errors); returns ``num_steps, target_accept``.

        Changes nothing, so a driver can check every chain before any of them searches.
        """
        num_steps = check_count("num_steps", num_steps)
        if target_accept is None:
            target_accept = self.warmup_plan.target_accept
        if not (isinstance(target_accept, (int, float)) and 0 < target_accept < 1):
            raise ValueError(f"target_accept must be in (0, 1); got {target_accept}.")
        if adapt_mass not in ADAPT_MASS_CHOICES:
            raise ValueError(f"adapt_mass must be one of {ADAPT_MASS_CHOICES}; got {adapt_mass!r}.")
        if adapt_mass is not None and not isinstance(
            self.metric, (ScalarMetric, DiagMetric, DenseMetric)
        ):
            raise ValueError(
                "adapt_mass must be None for a fixed custom metric (e.g. FishLeg's); "
                "the step size is still adapted."
            )
        return num_steps, float(target_accept)

    def schedule_warmup(
        self, num_steps, target_accept, adapt_mass, adapt_step_size, initial_step=None
    ) -> None:
        """Check the options of :meth:`warmup` and record it; nothing runs yet.

        ``initial_step`` is the result of the initial step-size search when the caller
        has run it already (the lockstep driver searches for all chains at once).
        """
        num_steps, target_accept = self.check_warmup_options(num_steps, target_accept, adapt_mass)
        if num_steps == 0:
            return
        step = None
        if adapt_step_size:
            step = self.warmup_plan.restart_step(self.step_size, self.dim, at_start=True)
            if step is None:
                step = (
                    self.search_step_size(self.step_size)
                    if initial_step is None
                    else float(initial_step)
                )
        self._warmup = window_init(num_steps, target_accept, adapt_mass, step, self.warmup_plan)

    def resume_warmup(self) -> None:
        """Continue an interrupted warmup (e.g. after loading a checkpoint)."""
        w = self._warmup
        if w is None:
            return
        bar = self._progress_bar(w.num_steps - w.done, "warmup")
        while self.phase == "warmup":
            self._transition()
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        self.finish_phase()

    def _warmup_step_size(self) -> float:
        """The step size of the next warmup transition."""
        step = window_step_size(self._warmup)
        return self.step_size if step is None else step

    def _warmup_update(self, info: Info, restart: bool = True) -> bool:
        """Adapt step size and mass matrix after one warmup transition.

        Returns whether dual averaging must restart after a closed window; with
        ``restart=False`` the caller (the lockstep driver, which searches for all
        chains at once) does it through :meth:`_restart_warmup`.
        """
        update = window_update(self._warmup, info.acceptance_rate, self._state.position)
        self._warmup = update.state
        pending = update.closed and update.state.dual is not None
        if update.closed:
            position = self._state.position
            self.metric = metric_from_estimate(
                update.estimate, self.metric, position.dtype, position.device
            )
        if pending and restart:
            self._restart_warmup(self._restart_step(self._warmup_step_size()))
            pending = False
        self._after_transition()
        self._log("warmup", self._warmup.done, self._warmup.num_steps)
        return pending

    def _restart_step(self, current: float) -> float | None:
        """The restart step after a window, searched unless the plan fixes it."""
        step = self.warmup_plan.restart_step(current, self.dim, at_start=False)
        return self.search_step_size(current) if step is None else step

    def _restart_warmup(self, step_size: float) -> None:
        self._warmup = window_restart(self._warmup, step_size, self.warmup_plan)

    def _finish_warmup(self) -> None:
        step = window_final(self._warmup)
        if step is not None:
            self.step_size = step
        self._warmup = None
        self._end_of_run()

    # ------------------------------------------------- output and checkpoints
    def configure_output(
        self,
        output_dir: str | os.PathLike | None = None,
        thin: int = 1,
        checkpoint_every: int | None = None,
        chunk_size: int = 256,
    ) -> None:
        """Choose where draws go, how many are kept and how often the state is saved.

        Call it before the first transition.

        Parameters
        ----------
        output_dir
            Stream draws and statistics to ``output_dir/draws`` and
            ``output_dir/warmup`` in ``.npy`` chunks of ``chunk_size`` rows
            (see :mod:`bnn_mcmc.storage`): memory stays bounded and the draws
            can be read during the run and after it was killed
            (:func:`bnn_mcmc.storage.read_chunks`).  ``None`` keeps them in memory.
        thin
            Keep every ``thin``-th transition (warmup and sampling alike).
        checkpoint_every
            Save the complete sampler state to ``output_dir/checkpoint.pt``
            every this many transitions and at the end of each
            :meth:`warmup` / :meth:`simulate_chain`; continue a killed run with
            :meth:`resume`.  Needs ``output_dir``.
        chunk_size
            Rows per chunk file.
        """
        if self._draws._seen or self._warmup_draws._seen:
            raise RuntimeError("configure_output must be called before the first transition.")
        self._configure_output(output_dir, thin, checkpoint_every, chunk_size, fresh=True)
        self._checkpoint_call()

    def _checkpoint_call(self) -> None:
        """Save the state when a call begins (issue 16), so that a kill before the first
        periodic checkpoint still resumes: the folder always holds a checkpoint, and the
        checkpoint always holds the call in progress."""
        if self.checkpoint_every is not None:
            self.save_checkpoint()

    def _configure_output(self, output_dir, thin, checkpoint_every, chunk_size, fresh: bool):
        if checkpoint_every is not None:
            checkpoint_every = check_count("checkpoint_every", checkpoint_every, 1)
            if output_dir is None:
                raise ValueError("checkpoint_every needs an output_dir to write checkpoints to.")
        thin = check_count("thin", thin, 1)
        chunk_size = check_count("chunk_size", chunk_size, 1)
        if output_dir is not None and not self.writes_output:
            # a follower of a sharded chain (issue 14): no files, no draws; the chain is rank 0's
            output_dir, checkpoint_every, thin = None, None, FOLLOWER_THIN
        if output_dir is not None:
            output_dir = Path(os.path.abspath(output_dir))  # a later chdir must not move the run
            if fresh and holds_run(output_dir):
                raise ValueError(
                    f"output_dir {output_dir} already holds a run; continue it with "
                    "resume(output_dir, pot_energy_func) or choose a new directory."
                )
        self.output_dir, self.thin = output_dir, thin
        self.checkpoint_every, self.chunk_size = checkpoint_every, chunk_size
        for attr, sub in (("_draws", "draws"), ("_warmup_draws", "warmup")):
            setattr(
                self,
                attr,
                DrawStore(
                    self.dim,
                    self._state.position.dtype,
                    self.stat_names,
                    block_size=chunk_size if output_dir is not None else 1024,
                    thin=thin,
                    directory=None if output_dir is None else output_dir / sub,
                ),
            )

    def output_options(self) -> dict:
        """The arguments of :meth:`configure_output` in use."""
        return {
            "output_dir": None if self.output_dir is None else str(self.output_dir),
            "thin": self.thin,
            "checkpoint_every": self.checkpoint_every,
            "chunk_size": self.chunk_size,
        }

    def _after_transition(self) -> None:
        if self.checkpoint_every is None:
            return
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.checkpoint_every:
            self.save_checkpoint()

    def _end_of_run(self) -> None:
        if self.checkpoint_every is not None:
            self.save_checkpoint()
        elif self.output_dir is not None:
            self._draws.flush()
            self._warmup_draws.flush()

    def save_checkpoint(self) -> None:
        """Write :meth:`state_dict` to ``output_dir/checkpoint.pt`` (atomically)."""
        if self.output_dir is None:
            raise ValueError("save_checkpoint needs an output_dir; call configure_output first.")
        self._since_checkpoint = 0
        save_checkpoint(self.output_dir / CHECKPOINT_NAME, self.state_dict())

    def state_dict(self) -> dict:
        """The complete state of the chain: plain tensors, numbers, strings, lists, dicts.

        See :mod:`bnn_mcmc.checkpoint` for what it holds and how it is saved; a
        chain rebuilt from it by :meth:`from_state_dict` continues bit for bit.
        """
        s = self._state
        grad = None if s.grad is None else s.grad.detach().cpu()
        init = {
            name: getattr(self, name)
            for name in INIT_ATTRIBUTES
            if name in inspect.signature(type(self).__init__).parameters
        }
        return {
            "class": type(self).__name__,
            "init": init,
            "device": str(s.position.device),
            "dtype": str(s.position.dtype).removeprefix("torch."),
            "position": s.position.detach().cpu(),
            "potential": s.potential,
            "grad": grad,
            "step_size": self.step_size,
            "metric": metric_state(self.metric),
            "generator": self.generator.get_state(),
            "warmup": warmup_state(self._warmup),
            "pending_sampling": self._pending_sampling,
            "counters": {
                "num_transitions": self._num_transitions,
                "num_accepted": self._num_accepted,
                "sum_accept_stat": self._sum_accept_stat,
                "writer_step": self._writer_step,
                "since_checkpoint": self._since_checkpoint,
                "num_grad_evals": self._potential.num_grad_evals,
                "num_evals": self._potential.num_evals,
            },
            "output": self.output_options(),
            "draws": self._draws.state_dict(),
            "warmup_draws": self._warmup_draws.state_dict(),
            "run_call": self.run_call,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` taken from a sampler of the same class."""
        if state["class"] != type(self).__name__:
            raise ValueError(
                f"checkpoint is of a {state['class']} chain, not {type(self).__name__}; "
                f"rebuild it with {state['class']}."
            )
        device = self._state.position.device
        position = state["position"].to(device)
        grad = None if state["grad"] is None else state["grad"].to(device)
        self._state = PotentialValue(position, state["potential"], grad)
        self.step_size = state["step_size"]
        self.metric = metric_from_state(state["metric"], self.dim, position.dtype, device)
        self.generator.set_state(state["generator"])
        self._warmup = warmup_from_state(state["warmup"], device)
        self._pending_sampling = state["pending_sampling"]
        c = state["counters"]
        self._num_transitions = c["num_transitions"]
        self._num_accepted = c["num_accepted"]
        self._sum_accept_stat = c["sum_accept_stat"]
        self._writer_step = c["writer_step"]
        self._since_checkpoint = c["since_checkpoint"]
        self._potential.num_grad_evals = c["num_grad_evals"]
        self._potential.num_evals = c["num_evals"]
        self._draws.load_state_dict(state["draws"])
        self._warmup_draws.load_state_dict(state["warmup_draws"])
        self.run_call = int(state.get("run_call", 0))

    @staticmethod
    def from_state_dict(
        state: dict,
        pot_energy_func: Callable[[Tensor], Tensor],
        device=None,
        folder: str | os.PathLike | None = None,
        force: bool = False,
        **kwargs,
    ) -> Sampler:
        r"""A sampler of the snapshot's class on ``device`` (default: the snapshot's), restored.

        ``kwargs`` are constructor arguments that are not data (``logger``,
        ``writer``, ``writer_tag``, ``progress``).  ``device`` must be of the
        snapshot's device type (another CUDA index is fine): generator states
        are device-specific.

        ``folder`` is the run folder the snapshot was read from: the chain then
        writes there (never where the run was first started), and the potential
        passed in is checked against the snapshot — :math:`U` and
        :math:`\|\nabla U\|` at the saved position
        (:func:`~bnn_mcmc.runfolder.check_potential_fingerprint`) — unless
        ``force``.  The folder's manifest is compared as well.
        """
        cls = SAMPLER_CLASSES.get(state["class"])
        if cls is None:
            where = "the snapshot" if folder is None else Path(folder) / CHECKPOINT_NAME
            raise DamagedRunError(
                f"{where}: unknown chain class {state['class']!r} (known: "
                f"{', '.join(sorted(SAMPLER_CLASSES))}); {DAMAGED_REMEDY}."
            )
        device = torch.device(device if device is not None else state["device"])
        saved = torch.device(state["device"]).type
        if device.type != saved:
            raise ValueError(
                f"the chain was checkpointed on a {saved} device and cannot continue on "
                f"{device}: generator states are device-specific; resume it on a "
                f"{saved} device for the same draws."
            )
        position = state["position"].to(device)
        generator = torch.Generator(device=device)
        sampler = cls(position, pot_energy_func, generator=generator, **state["init"], **kwargs)
        output = dict(state["output"])
        if folder is not None:
            check_manifest(folder, manifest_of(state), force)
            fresh_grad = sampler._state.grad
            check_potential_fingerprint(
                Path(folder) / CHECKPOINT_NAME,
                float(state["potential"]),
                float(sampler.potential_energy),
                None if state["grad"] is None else float(state["grad"].double().norm()),
                None if fresh_grad is None else float(fresh_grad.detach().double().norm()),
                state["dtype"],
                force,
            )
            if output.get("output_dir") is not None:
                output["output_dir"] = Path(folder)
        elif output.get("output_dir") == ".":
            raise ValueError("a snapshot read from a file needs its folder: pass folder=.")
        sampler._configure_output(**output, fresh=False)
        try:
            sampler.load_state_dict(state)
        except (KeyError, TypeError, IndexError, AttributeError, RuntimeError) as err:
            where = "the snapshot" if folder is None else Path(folder) / CHECKPOINT_NAME
            raise DamagedRunError(
                f"{where}: invalid content ({type(err).__name__}: {err}); {DAMAGED_REMEDY}."
            ) from None
        return sampler

    @staticmethod
    def load(
        folder: str | os.PathLike,
        pot_energy_func: Callable[[Tensor], Tensor],
        force: bool = False,
        **kwargs,
    ) -> Sampler:
        """The chain saved in ``folder``, rebuilt to write into ``folder``; nothing runs.

        ``kwargs`` are ``device`` and the options of
        :data:`bnn_mcmc.checkpoint.RESUME_OPTIONS`; any other (``stepsize=``,
        ``num_steps=``, ...) cannot be honoured and is a TypeError.
        """
        device = kwargs.pop("device", None)
        check_resume_options(kwargs)
        folder = Path(os.path.abspath(folder))
        for sub in (folder, folder / "draws", folder / "warmup"):
            remove_stale_temporaries(sub)
        state = load_checkpoint(folder)
        return Sampler.from_state_dict(
            state, pot_energy_func, device, folder=folder, force=force, **kwargs
        )

    def continue_run(self) -> None:
        """Finish an interrupted :meth:`warmup` and :meth:`simulate_chain` call, if any."""
        self.resume_warmup()
        if self._pending_sampling:
            self.simulate_chain(self._pending_sampling)

    @classmethod
    def resume(
        cls,
        output_dir: str | os.PathLike,
        pot_energy_func: Callable[[Tensor], Tensor],
        force: bool = False,
        **kwargs,
    ) -> Sampler:
        """Rebuild a chain from ``output_dir/checkpoint.pt`` and finish its interrupted call.

        The draws equal those of an uninterrupted run bit for bit.  The chain
        writes into ``output_dir`` (wherever the run folder was moved or
        copied to).  The potential is passed again (it is code, not data) and
        checked against the checkpoint (see :mod:`bnn_mcmc.runfolder`);
        ``force=True`` continues with a different one.  ``kwargs`` are the
        options that are not saved: ``logger``, ``writer``, ``writer_tag``,
        ``progress`` and ``device``; any other is an error.
        """
        sampler = Sampler.load(output_dir, pot_energy_func, force=force, **kwargs)
        if cls is not Sampler and not isinstance(sampler, cls):
            raise ValueError(
                f"{output_dir} holds a {type(sampler).__name__} chain; resume it with "
                f"{type(sampler).__name__}.resume or Sampler.resume."
            )
        sampler.continue_run()
        return sampler

    # ------------------------------------------------------------ diagnostics
    def to_inference_data(self, **kwargs):
        """This chain as ArviZ ``InferenceData``; see :func:`bnn_mcmc.to_inference_data`."""
        from ..diagnostics.inference_data import to_inference_data

        return to_inference_data(self, **kwargs)

    def summary(self, **kwargs):
        """Convergence report; see :func:`bnn_mcmc.diagnostics.summary`."""
        from ..diagnostics.summary import summary

        return summary(self, **kwargs)
