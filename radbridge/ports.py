"""The small interfaces outside systems sit behind. Each has an in-memory implementation in the package."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from .domain import Generation, GenerationParams, ModelInfo
from .prompt import Prompt


@runtime_checkable
class Generator(Protocol):
    """Turns prompts into completions. Implementations batch as well as they can and keep order."""

    @property
    def info(self) -> ModelInfo: ...

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        """One Generation per prompt, in order. Raises GeneratorUnavailable (retryable) or a PermanentError."""
        ...

    def check(self) -> None:
        """Raise if the backend cannot serve what is configured (e.g. the adapter is not loaded)."""
        ...


@runtime_checkable
class FhirStore(Protocol):
    def transact(self, bundle: dict) -> dict:
        """POST a transaction Bundle; return the transaction-response Bundle. All entries are written, or none.

        Honours ``ifNoneExist`` (conditional create) and a PUT entry's ``ifMatch`` (``W/"<versionId>"``: the write
        happens only if the resource is still that version; how a draft is retired without overwriting a
        concurrent edit). Raises StoreUnavailable (retryable), VersionConflict (an ``ifMatch`` failed) or
        StoreRejected (permanent).
        """
        ...

    def read(self, resource_type: str, resource_id: str) -> dict | None: ...

    def search(self, resource_type: str, params: dict[str, str]) -> list[dict]:
        """The matching resources (all pages)."""
        ...


@runtime_checkable
class ExampleSource(Protocol):
    """Solved reports to show the model (retrieval-augmented prompts; a site's own radiologists' style)."""

    def examples_for(self, findings: str, k: int) -> list["Example"]: ...


from .prompt import Example  # noqa: E402  (re-exported for the annotation above)
