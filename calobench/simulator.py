"""The Simulator interface: a fast parametric detector simulation a plugin registers."""
from __future__ import annotations

import numpy as np

from .data import Geometry, ShowerData


class Simulator:
    """Subclass and set ``name``; implement :meth:`geometry`, :meth:`condition_ranges`, :meth:`simulate`.

    ``simulate`` must be deterministic given ``rng``; the catalog calls it in blocks of
    ``block_size`` showers with independent child seeds, so datasets larger than memory
    stream straight to disk. Bump ``version`` whenever the physics changes: it is part of
    the cache key.
    """

    name: str = ""
    version: str = "1"
    block_size: int = 4096

    def geometry(self, **params) -> Geometry:
        raise NotImplementedError

    def condition_ranges(self, **params) -> dict:
        """``{condition name: (low, high)}`` of the labels this simulator produces."""
        raise NotImplementedError

    def simulate(self, n: int, rng: np.random.Generator, **params) -> ShowerData:
        raise NotImplementedError
