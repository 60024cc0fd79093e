"""Random-number generators for hypernetworks (the global torch RNG is never used)."""

from __future__ import annotations

import contextlib

import torch


def make_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """Return a CPU :class:`torch.Generator` from a generator, a seed or ``None``.

    ``None`` gives a generator seeded non-deterministically from the operating system
    (``Generator.seed``), which leaves the global torch RNG untouched.
    """
    if isinstance(generator, torch.Generator):
        return generator
    g = torch.Generator()
    if generator is None:
        g.seed()
    elif isinstance(generator, int) and not isinstance(generator, bool):
        g.manual_seed(generator)
    else:
        raise TypeError(
            f"generator must be a torch.Generator, an int seed or None, got {generator!r}"
        )
    return g


def child_seed(generator: torch.Generator) -> int:
    """Draw a 62-bit seed from ``generator`` (to seed derived generators)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


@contextlib.contextmanager
def seeded_global_rng(generator: torch.Generator):
    """Run a block that can only use the global CPU RNG (e.g. torch's spectral-norm
    registration) with a seed drawn from ``generator``; the global state is restored
    afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(child_seed(generator))
        yield


class GeneratorDropout(torch.nn.Module):
    r"""Inverted dropout driven by an explicit generator.

    In training mode each unit is zeroed with probability :math:`p` and the survivors are
    scaled by :math:`1/(1-p)`, so :math:`E[\mathrm{out}] = \mathrm{in}`; in eval mode it is
    the identity (Srivastava et al., 2014).

    Parameters
    ----------
    p : float
        Dropout probability in ``[0, 1)``.
    generator : torch.Generator
        CPU generator; for other devices a generator on that device is derived from it.
    """

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1) (or -1 for none), got {p}")
        self.p = float(p)
        self._generators = {torch.device("cpu"): generator}

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(child_seed(self._generators[torch.device("cpu")]))
            self._generators[device] = g
        return self._generators[device]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        u = torch.rand(x.shape, generator=self._generator(x.device), device=x.device,
                       dtype=x.dtype)
        return x * (u >= self.p).to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
