"""Capped exponential back-off with jitter, as a small value object.

Used by the agent between attempts to reach an unreachable Redis: quick first
retries (a blip), then at most `cap` seconds apart, jittered so the nodes of a
cluster do not reconnect in lock-step when Redis returns.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.1
    cap: float = 2.0
    rng: Callable[[], float] = field(default=random.random, repr=False)
    failures: int = 0

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next attempt."""
        self.failures += 1
        ceiling = min(self.cap, self.base * 2 ** (self.failures - 1))
        return ceiling * (0.5 + 0.5 * self.rng())  # "equal jitter": never less than half

    def reset(self) -> None:
        self.failures = 0
