"""An in-memory generator: instant, deterministic, no model. For unit tests, --dry-run and middleware benchmarks."""

from __future__ import annotations

import hashlib
from typing import Sequence

from ...domain import Generation, GenerationParams, ModelInfo
from ...prompt import Prompt

_CANNED = (
    "No acute cardiopulmonary abnormality.",
    "No active disease.",
    "Stable chest radiograph.",
)


class InstantGenerator:
    """Returns one of a few canned impressions, chosen by a hash of the prompt: same prompt, same answer."""

    def __init__(self, *, fail_with: Exception | None = None):
        self.fail_with = fail_with  # tests set this to simulate an outage
        self.calls = 0

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(backend="instant", base_model="instant-canned", adapter=None)

    def check(self) -> None:
        return None

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        out = []
        for p in prompts:
            h = int(hashlib.sha256(p.user.encode()).hexdigest(), 16)
            text = _CANNED[h % len(_CANNED)]
            out.append(Generation(text=text, finish_reason="eos_token", generated_tokens=len(text.split())))
        return out
