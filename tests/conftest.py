"""Test configuration: one torch thread per process (2-core CI machines)."""

import torch

torch.set_num_threads(1)
