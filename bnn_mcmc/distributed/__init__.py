"""One chain, many processes: a data-parallel potential on ``torch.distributed``.

Each rank holds a shard of the data and the whole chain.  The potential and its
gradient are summed over the ranks by one all-reduce per evaluation
(:mod:`.potential`, :mod:`.nn_potential`); every rank runs the same sampler with the
same seed, checked at the start by one all-gather of a settings hash
(:mod:`.settings`); rank 0 writes every file and resumes for all (:mod:`.resume`);
ranks are started by :func:`launch` or ``torchrun`` (:mod:`.group`).
"""

from .group import (
    DEFAULT_TIMEOUT,
    DistributedError,
    default_backend,
    init_from_env,
    is_writer,
    rank,
    world_size,
)
from .launch import LaunchError, RankFailure, launch
from .nn_potential import local_shard, shard_range, sharded_pot_energy
from .potential import EvaluationTimes, ShardedPotential
from .resume import broadcast_checkpoint, follower_state, resume_sharded
from .settings import check_same_settings, settings_hash

__all__ = [
    "DEFAULT_TIMEOUT",
    "DistributedError",
    "EvaluationTimes",
    "LaunchError",
    "RankFailure",
    "ShardedPotential",
    "broadcast_checkpoint",
    "check_same_settings",
    "default_backend",
    "follower_state",
    "init_from_env",
    "is_writer",
    "launch",
    "local_shard",
    "rank",
    "resume_sharded",
    "settings_hash",
    "shard_range",
    "sharded_pot_energy",
    "world_size",
]
