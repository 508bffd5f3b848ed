"""Where the service loop stands in the retry policy's delays while a dependency is down."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..retry import RetryPolicy


@dataclass
class Backoff:
    """The policy's next delay on each failure; ``reset`` once the dependency answers. Never gives up."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    attempts: int = field(default=0, init=False)
    _rng: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def next_delay(self) -> float:
        delay = self.policy.delay(self.attempts, self._rng)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
