"""The one retry policy: exponential backoff with a cap, from Settings.

Adapters try once and raise a ``RetryableError`` or a ``PermanentError``; only their callers wait and retry.
The service waits by this policy without end (partitions paused, polling on, so the group keeps it);
CLI commands (``draft``, ``eval``, ``check``) take at most ``attempts`` tries and then fail.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

from .errors import RetryableError

if TYPE_CHECKING:
    from .domain import Generation, GenerationParams, ModelInfo
    from .ports import Generator
    from .prompt import Prompt
    from .settings import Settings

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 0.5
    max_s: float = 30.0
    #: total tries, the first included; None: retry until the dependency answers (the service)
    attempts: int | None = None
    factor: float = 2.0
    jitter: float = 0.1  # +-10%: instances that lost the same dependency do not retry in lockstep

    @classmethod
    def from_settings(cls, settings: "Settings", *, bounded: bool = True) -> "RetryPolicy":
        """``bounded``: at most ``1 + max_retries`` tries (CLI commands); unbounded for the service."""
        attempts = settings.max_retries + 1 if bounded else None
        return cls(initial_s=settings.retry_initial_s, max_s=settings.retry_max_s, attempts=attempts)

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 = the first retry)."""
        base = min(self.max_s, self.initial_s * self.factor**retry)
        return base * (1 + self.jitter * (2 * (rng or random).random() - 1))

    def call(self, fn: Callable[[], R], *, what: str, sleep: Callable[[float], None] = time.sleep) -> R:
        """``fn()``, retried on ``RetryableError`` until ``attempts`` run out; permanent errors pass at once.

        ``what`` names the operation in the log (a command, a backend, a count): never report text.
        """
        retry = 0
        while True:
            try:
                return fn()
            except RetryableError as exc:
                if self.attempts is not None and retry + 1 >= self.attempts:
                    raise
                wait = self.delay(retry)
                retry += 1
                log.warning(
                    "dependency unavailable, retrying",
                    extra={"what": what, "error_type": exc.kind, "retry": retry,
                           "max_retries": None if self.attempts is None else self.attempts - 1,
                           "delay_s": round(wait, 2)},
                )
                sleep(wait)


class RetryingGenerator:
    """A Generator whose ``generate`` and ``check`` are retried by a policy: for CLI commands.

    The service never wraps its generator: its loop backs off itself, so it keeps polling meanwhile.
    """

    def __init__(self, inner: "Generator", policy: RetryPolicy, *, sleep: Callable[[float], None] = time.sleep):
        self.inner = inner
        self.policy = policy
        self._sleep = sleep
        # from the class, not ``info``: a local generator's info loads the model
        self._name = getattr(inner, "backend", type(inner).__name__)

    @property
    def info(self) -> "ModelInfo":
        return self.inner.info

    def generate(self, prompts: "Sequence[Prompt]", params: "GenerationParams") -> "list[Generation]":
        what = f"{self._name} generate ({len(prompts)} prompts)"
        return self.policy.call(lambda: self.inner.generate(prompts, params), what=what, sleep=self._sleep)

    def check(self) -> None:
        self.policy.call(self.inner.check, what=f"{self._name} check", sleep=self._sleep)

    def __getattr__(self, name: str):
        if name == "inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        # backend-specific attributes (e.g. LocalGenerator.manifest) stay reachable through the wrapper
        return getattr(self.inner, name)
