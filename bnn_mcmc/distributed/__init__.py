"""One chain, many processes: a data-parallel potential on ``torch.distributed``.

Each rank holds a shard of the data and the whole chain; the potential and its
gradient are summed over the ranks by one all-reduce per evaluation
(:mod:`.potential`); every rank runs the same sampler with the same seed, and rank 0
writes (:mod:`.chains`); ranks are started by :mod:`.launch` or ``torchrun``;
:mod:`.checks` compares their settings at the start.
"""

from .chains import (
    FOLLOWER_THIN,
    broadcast_checkpoint,
    check_in_sync,
    configure_rank_output,
    follower_state,
    resume_sampler,
)
from .checks import check_same_settings, settings_hash
from .group import (
    DistributedError,
    default_backend,
    init_from_env,
    is_writer,
    rank,
    rank_output,
    world_size,
)
from .launch import LaunchError, RankFailure, launch
from .potential import (
    EvaluationTimes,
    ShardedPotential,
    all_reduce_potential,
    local_shard,
    shard_range,
    sharded_pot_energy,
)

__all__ = [
    "FOLLOWER_THIN",
    "DistributedError",
    "EvaluationTimes",
    "LaunchError",
    "RankFailure",
    "ShardedPotential",
    "all_reduce_potential",
    "broadcast_checkpoint",
    "check_in_sync",
    "check_same_settings",
    "configure_rank_output",
    "default_backend",
    "follower_state",
    "init_from_env",
    "is_writer",
    "launch",
    "local_shard",
    "rank",
    "rank_output",
    "resume_sampler",
    "settings_hash",
    "shard_range",
    "sharded_pot_energy",
    "world_size",
]
