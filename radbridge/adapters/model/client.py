"""What the remote generators (TGI ``/generate``, OpenAI-style ``/v1/chat/completions``) share.

Error mapping (HTTP status → radbridge error), one try per call (the service loop or a CLI command's
RetryPolicy decides on retries, so waits do not nest), bounded concurrency that keeps order, and the adapter
check that compares log-probabilities with and without the adapter.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from huggingface_hub.errors import (
    GenerationError,
    HfHubHTTPError,
    IncompleteGenerationError,
    InferenceTimeoutError,
    OverloadedError,
    ValidationError,
)

from ...domain import Generation, GenerationParams, ModelInfo
from ...errors import (
    AdapterMismatch,
    AuthFailed,
    ConfigurationError,
    GenerationRejected,
    GeneratorUnavailable,
    RadbridgeError,
)
from ...prompt import SYSTEM, Prompt
from ...redact import mask_url, mask_urls_in

# Fixed, report-free text: the probe must be the same every time and must not carry patient data.
PROBE = Prompt(
    system=SYSTEM,
    user="Derive the impression from findings in the radiology report.\n\nFindings: The lungs are clear. "
    "Heart size is normal. No pleural effusion or pneumothorax.",
    template_id="probe-v1",
)


log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

RETRY_STATUSES = frozenset({408, 424, 429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})
CONFIG_STATUSES = frozenset({404, 405})  # a wrong URL or route: retrying cannot fix it


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an exception from huggingface_hub/httpx, following ``raise ... from``."""
    seen = 0
    while exc is not None and seen < 5:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _is_transport_error(exc: BaseException) -> bool:
    if isinstance(exc, (InferenceTimeoutError, TimeoutError, ConnectionError)):
        return True
    # httpx2 (huggingface_hub >= 1) and httpx both name their base class TransportError
    return any(c.__name__ in ("TransportError", "TimeoutException") for c in type(exc).__mro__)


def map_error(exc: BaseException, what: str) -> RadbridgeError:
    """A radbridge error for a failed call; never includes request or response bodies (they hold report text)."""
    if isinstance(exc, RadbridgeError):
        return exc
    status = http_status(exc)
    if isinstance(exc, ValidationError) or status == 422:
        return GenerationRejected(f"{what}: the model server rejected the request (422): {_short(exc)}")
    if isinstance(exc, (OverloadedError, GenerationError, IncompleteGenerationError)) or status in RETRY_STATUSES:
        return GeneratorUnavailable(f"{what}: model server answered {status or type(exc).__name__}")
    if status in AUTH_STATUSES:  # an expired or revoked key: an outage to wait out, not a verdict on the message
        return AuthFailed("model", f"{what}: model server answered {status}; credentials refused")
    if status in CONFIG_STATUSES:
        return ConfigurationError(f"{what}: model server answered {status}; check the URL and route")
    if status is not None and 400 <= status < 500:
        return GenerationRejected(f"{what}: model server answered {status}")
    if _is_transport_error(exc):
        return GeneratorUnavailable(f"{what}: {type(exc).__name__} talking to the model server")
    if isinstance(exc, HfHubHTTPError):
        return GeneratorUnavailable(f"{what}: model server answered {status}")
    return GeneratorUnavailable(f"{what}: unexpected {type(exc).__name__}")


def _short(exc: BaseException) -> str:
    # TGI's validation messages name parameters and token counts, not the prompt; still, keep them short.
    return mask_urls_in(str(exc).splitlines()[0])[:200] if str(exc) else type(exc).__name__


def call_once(fn: Callable[[], R], what: str) -> R:
    """``fn()`` once; any failure comes out as a radbridge error. Whoever calls decides whether to retry."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - every failure is mapped below
        err = map_error(exc, what)
        if err is exc:
            raise
        raise err from exc


def map_ordered(fn: Callable[[T], R], items: Sequence[T], concurrency: int) -> list[R]:
    """``[fn(x) for x in items]`` with at most ``concurrency`` calls in flight; the first error propagates."""
    if len(items) <= 1 or concurrency <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix="radbridge-gen") as pool:
        return list(pool.map(fn, items))


class RemoteGenerator:
    """Base of the HTTP generators: subclasses send one prompt; this class batches and maps errors, one try each."""

    backend = "remote"

    def __init__(
        self,
        url: str,
        *,
        adapter: str | None = None,
        base_model: str | None = None,
        adapter_sha256: str | None = None,
        timeout: float = 60.0,
        concurrency: int = 8,
        min_adapter_logprob_delta: float = 1e-3,
        api_key: str | None = None,
        ca_bundle: str | Path | None = None,
    ):
        if timeout is None or timeout <= 0:
            raise ConfigurationError("the model server timeout must be a positive number of seconds")
        self.url = url.rstrip("/")
        self.adapter = adapter
        self.base_model = base_model
        self.adapter_sha256 = adapter_sha256
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.min_adapter_logprob_delta = min_adapter_logprob_delta
        self._api_key = api_key
        if ca_bundle is not None:
            trust_ca_bundle(ca_bundle)
        self._server_model: str | None = None
        self._server_version: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """Headers of every request: the bearer token when the server needs one (never logged)."""
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}({mask_url(self.url)!r})"

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            backend=self.backend,
            base_model=self._server_model or self.base_model or "unknown",
            adapter=self.adapter,
            adapter_sha256=self.adapter_sha256,
            server_version=self._server_version,
        )

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        if params.max_new_tokens < 1:
            raise GenerationRejected("max_new_tokens must be at least 1")

        def one(prompt: Prompt) -> Generation:
            return call_once(lambda: self._generate_one(prompt, params), self._what)

        return map_ordered(one, list(prompts), self.concurrency)

    @property
    def _what(self) -> str:
        return f"{self.backend} {mask_url(self.url)}"  # goes into errors and logs: never credentials

    def _generate_one(self, prompt: Prompt, params: GenerationParams) -> Generation:
        raise NotImplementedError

    def _once(self, fn: Callable[[], R]) -> R:
        return call_once(fn, self._what)

    def _check_adapter_changes_output(self, probe: Callable[[str | None], list[float]]) -> None:
        """Refuse to run when the server answers identically with and without the adapter.

        ``probe(adapter)`` returns log-probabilities for one fixed greedy request. The base model is probed
        twice to measure the server's own numeric noise (batching on GPUs changes the last digits); the
        adapter must move the numbers clearly beyond that. A trained LoRA always does; a server that
        silently dropped an unknown adapter (TGI) or an untrained adapter (B = 0) does not.
        """
        base = probe(None)
        base_again = probe(None)
        tuned = probe(self.adapter)
        if not base or not tuned:
            raise AdapterMismatch(f"{self._what}: the adapter probe returned no log-probabilities to compare")
        noise = _max_abs_diff(base, base_again)
        effect = _max_abs_diff(base, tuned)
        threshold = max(self.min_adapter_logprob_delta, 10 * noise)
        log.info("adapter probe: effect %.3g, noise %.3g, threshold %.3g", effect, noise, threshold)
        if effect <= threshold:
            raise AdapterMismatch(
                f"{self._what}: requests with adapter {self.adapter!r} give the same log-probabilities as the base "
                f"model (largest difference {effect:.2g} <= {threshold:.2g}). The server is not applying the adapter: "
                "it is not loaded under that name (TGI silently falls back to the base model), or it is untrained."
            )


def trust_ca_bundle(path: str | Path) -> None:
    """Verify the model server's certificate with ``path`` (a site CA). huggingface_hub, which both remote
    generators use, has one process-wide HTTP client; its documented hook for custom CAs is the client factory,
    so this keeps its default client (hooks, redirects) and changes only the verification."""
    import ssl

    from huggingface_hub.utils import set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    try:
        context = ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"RADBRIDGE_MODEL_CA_BUNDLE {path} cannot be loaded ({type(exc).__name__})") from None

    def factory():
        default = default_client_factory()
        hooks = default.event_hooks
        default.close()
        return type(default)(event_hooks=hooks, follow_redirects=True, timeout=None, verify=context)

    set_client_factory(factory)


def _max_abs_diff(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        return float("inf")
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


__all__ = [
    "RemoteGenerator",
    "call_once",
    "map_error",
    "map_ordered",
    "http_status",
]
