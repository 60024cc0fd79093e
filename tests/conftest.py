"""Test configuration: one torch thread per process (2-core CI machines), shared fixtures."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def float64_default():
    """Run a test with torch's default dtype set to float64, restored afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


#: Long runs (≥ ~15 s each on a 2-core machine): end-to-end kills and resumes in
#: subprocesses, process-pool backends, the tutorials, compilation.  They carry the
#: ``slow`` marker: the default ``python -m pytest`` skips them and ``.ci/run`` runs
#: them as a second pass (``python -m pytest -m slow``).
SLOW_TESTS = (
    "tests/test_cli.py::test_killed_run_resumes_to_the_same_draws",
    "tests/test_cli.py::test_backends_from_the_config[dask]",
    "tests/test_cli.py::test_backends_from_the_config[joblib]",
    "tests/test_cli.py::test_backends_from_the_config[vectorized]",
    "tests/test_cli.py::test_errors_are_one_line_with_nonzero_exit",
    "tests/test_cli.py::test_chees_from_a_config_resumes_bit_for_bit",
    "tests/test_tutorials.py::",
    "tests/test_compiled_potential.py::test_compiled_potential_matches_eager",
    "tests/test_multichain.py::test_dask_local_cluster",
    "tests/test_dropin.py::test_bnn_nuts",
    "tests/test_checkpoint.py::test_sigkill_then_resume_equals_uninterrupted_run",
    "tests/test_runfolder_multichain.py::test_kill_between_the_first_per_chain_checkpoints",
    "tests/test_runfolder_faults.py::test_multichain_killed_at_every_write_resumes_bit_for_bit",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.startswith(SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
