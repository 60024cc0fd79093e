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
