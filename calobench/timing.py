"""The one timing loop every speed number in calobench comes from (runner and benchmarks).

The CaloChallenge protocol: one warm-up call (which pays for compilation and caches), then the
median wall time of up to ``reps`` calls, stopping early once ``budget_s`` is spent (but never
before ``min_reps`` calls). On CUDA each call is followed by a synchronisation so the time is
the device's, not the launch queue's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Timing:
    median_s: float | None  # None: the warm-up alone exceeded the budget
    calls: int
    warmup_s: float

    def rate(self, items: int) -> float | None:
        """Items per second at the median call time."""
        return None if not self.median_s else items / self.median_s


def synchronizer(device):
    """A function that waits for ``device`` (a torch device or its name) to finish its queued work."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def time_calls(fn, reps: int = 10, budget_s: float = 60.0, min_reps: int = 3, device=None,
               warmup: bool = True) -> Timing:
    """Median wall time of ``fn()``; see the module docstring for the protocol."""
    sync = synchronizer(device)
    warm = 0.0
    if warmup:
        t0 = time.perf_counter()
        fn()
        sync()
        warm = time.perf_counter() - t0
        if warm > budget_s:
            return Timing(None, 0, warm)
    times: list[float] = []
    while len(times) < reps and (sum(times) + warm < budget_s or len(times) < min_reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return Timing(float(np.median(times)), len(times), warm)
