"""Margins of the statistical tests over seeds: how far each asserted quantity is from failing.

For every check of ``tests/test_samplers_statistics.py::test_moments`` (the test's own seed and
two others) it prints the smallest ESS over its guard (fails below 1; the suite asks >= 2) and
the largest |z| of the means, variances and cross moment (fail at 5).

    PYTHONPATH=$PWD python benchmarks/stat_margins.py [sampler ...]
"""

from __future__ import annotations

import sys
import time

import torch

from tests.test_samplers_statistics import SAMPLERS, TARGETS, Z_BOUND, run_moments

OTHER_SEEDS = (1001, 2002)


def main(samplers: list[str]) -> None:
    torch.set_num_threads(1)
    print("| sampler | target | seed | min ESS / guard | max z mean | max z var | z cross | s |")
    print("|---|---|---|---|---|---|---|---|")
    for sampler in samplers:
        for target in TARGETS:
            for seed in (SAMPLERS[sampler][2], *OTHER_SEEDS):
                t0 = time.perf_counter()
                try:
                    m, cross = run_moments(sampler, target, seed)
                    row = f"{m.ess_ratio:.2f} | {m.z_mean:.2f} | {m.z_var:.2f} | "
                    row += "-" if cross is None else f"{cross:.2f}"
                except AssertionError as err:
                    row = f"FAIL: {err} | | |"
                dt = time.perf_counter() - t0
                print(f"| {sampler} | {target} | {seed} | {row} | {dt:.0f} |", flush=True)
    print(f"(z bound {Z_BOUND})")


if __name__ == "__main__":
    main(sys.argv[1:] or list(SAMPLERS))
