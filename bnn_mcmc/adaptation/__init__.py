"""Warmup adaptation as pure functions: dual averaging, Welford estimates, Stan's windows."""

from .dual_averaging import (
    DualAveragingState,
    dual_averaging_final,
    dual_averaging_init,
    dual_averaging_update,
)
from .schedule import adaptation_windows
from .step_size import SEARCH_THRESHOLD, reasonable_step_size
from .welford import WelfordState, welford_covariance, welford_init, welford_update

__all__ = [
    "SEARCH_THRESHOLD",
    "reasonable_step_size",
    "DualAveragingState",
    "WelfordState",
    "adaptation_windows",
    "dual_averaging_final",
    "dual_averaging_init",
    "dual_averaging_update",
    "welford_covariance",
    "welford_init",
    "welford_update",
]
