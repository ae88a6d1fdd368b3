"""One root seed, many named random streams.

Every stochastic concern (fleet trips, departures, shadowing, traffic, channels,
images ...) draws from its own generator, derived from the scenario seed and a
stable name. Two runs that differ only in, say, a refinement policy therefore see
the same mobility and the same shadowing draws (common random numbers), and the
same seed always gives the same event log.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["RngStreams", "stream_key"]


def stream_key(name: str) -> int:
    """Return a stable 32-bit key for a stream name (independent of PYTHONHASHSEED)."""
    return zlib.crc32(name.encode("utf-8"))


class RngStreams:
    """Named, independent random generators derived from one root seed.

    Parameters
    ----------
    seed
        The scenario's root seed.

    Examples
    --------
    >>> rng = RngStreams(7)
    >>> a = rng.numpy("mobility").integers(0, 100)
    >>> a == RngStreams(7).numpy("mobility").integers(0, 100)
    True
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._int_seeds: dict[str, int] = {}  # int_seed is a pure function of (seed, name): asked again per job

    def seed_sequence(self, name: str) -> np.random.SeedSequence:
        """Return the seed sequence of stream ``name`` (``"a/b"`` names nest)."""
        keys = tuple(stream_key(part) for part in name.split("/"))
        return np.random.SeedSequence(self.seed, spawn_key=keys)

    def numpy(self, name: str) -> np.random.Generator:
        """Return a fresh ``numpy`` generator for stream ``name``.

        Calling twice with the same name returns two generators in the same
        state; owners keep the generator they asked for.
        """
        return np.random.Generator(np.random.PCG64(self.seed_sequence(name)))

    def int_seed(self, name: str) -> int:
        """Return a 63-bit integer seed for libraries that take one (e.g. ``torch.Generator``)."""
        seed = self._int_seeds.get(name)
        if seed is None:
            seed = int(self.seed_sequence(name).generate_state(2, np.uint64)[0] >> np.uint64(1))
            self._int_seeds[name] = seed
        return seed
