"""One error root. Retryable errors back off and retry; permanent ones go to the dead-letter topic."""

from __future__ import annotations

from .redact import safe_id


class RadbridgeError(Exception):
    """Root of every error radbridge raises on purpose."""

    retryable: bool = False
    #: short machine-readable kind, used in dead-letter headers and skip/error records
    kind: str = "error"


class PermanentError(RadbridgeError):
    """Retrying cannot help: the input or the configuration is wrong."""

    retryable = False
    kind = "permanent"


class RetryableError(RadbridgeError):
    """A dependency is down or overloaded: back off and try again without committing."""

    retryable = True
    kind = "retryable"


class MalformedMessage(PermanentError):
    """The bytes are not a parseable HL7 v2 or FHIR message.

    ``where`` names the segment/field or JSON path, never the text of the report.
    """

    kind = "malformed"

    def __init__(self, reason: str, *, message_id: str | None = None, where: str | None = None):
        self.reason = reason
        self.message_id = message_id
        self.where = where
        parts = [reason]
        if where:
            parts.append(f"at {where}")
        if message_id:
            # MSH-10 / a resource id is sender-controlled: printed only when id-shaped
            parts.append(f"in message {safe_id(message_id)}")
        super().__init__(" ".join(parts))


class UnsupportedContent(PermanentError):
    """Parseable, but not something radbridge can handle (e.g. an unsupported message type in a strict path)."""

    kind = "unsupported"


class LimitExceeded(PermanentError):
    """The message is bigger than a configured limit (bytes, segments, reports, pages, text characters).

    ``limit`` is the setting's name (``max_message_bytes``...); the reason names it with the sizes only."""

    kind = "limit_exceeded"

    def __init__(self, limit: str, size: int, maximum: int, *, where: str | None = None):
        self.limit, self.size, self.maximum, self.where = limit, size, maximum, where
        at = f" at {where}" if where else ""
        super().__init__(f"{limit} exceeded{at}: {size} > {maximum}")


class TooSlow(PermanentError):
    """Reading one message took longer than its wall-clock budget (``message_budget_s``): dead-lettered so one
    slow message cannot hold its partition; the reason gives the times only."""

    kind = "too_slow"

    def __init__(self, elapsed_s: float, budget_s: float):
        self.elapsed_s, self.budget_s = elapsed_s, budget_s
        super().__init__(f"message_budget_s exceeded: reading took {elapsed_s:.1f} s > {budget_s:g} s")


class ConfigurationError(PermanentError):
    """Settings or model files are wrong; the service must refuse to start rather than draft with them."""

    kind = "configuration"


class AdapterMismatch(ConfigurationError):
    """The model server does not serve the adapter we asked for (TGI would silently use the base model)."""

    kind = "adapter_mismatch"


class GenerationRejected(PermanentError):
    """The model server rejected this request (HTTP 422): retrying the same request cannot succeed."""

    kind = "generation_rejected"


class GenerationFailed(PermanentError):
    """The generator broke on this message with an error radbridge does not know (a bug, not a rejection).

    The message is dead-lettered with its original bytes, to be replayed once the cause is fixed, so one
    message that always trips the bug cannot crash-loop the service."""

    kind = "generation_failed"


class GeneratorUnavailable(RetryableError):
    """The model server is down, overloaded (429/503) or timed out."""

    kind = "generator_unavailable"


class AuthFailed(RetryableError):
    """A dependency refused our credentials (HTTP 401/403): an expired token or a revoked grant is an outage
    for an operator to fix, not a verdict on the message, so it backs off and nothing is dead-lettered.

    ``dependency`` names the system (``fhir``, ``model``) for the metric and /readyz."""

    kind = "auth_failed"

    def __init__(self, dependency: str, reason: str):
        self.dependency = dependency
        super().__init__(reason)


class StoreUnavailable(RetryableError):
    """The FHIR server or Kafka output could not durably accept the output. ``dependency`` says which (for /readyz
    and the metrics)."""

    kind = "store_unavailable"

    def __init__(self, reason: str, *, dependency: str = "fhir"):
        self.dependency = dependency
        super().__init__(reason)


class BrokerUnavailable(RetryableError):
    """No Kafka broker answered at the configured bootstrap address."""

    kind = "broker_unavailable"


class StoreRejected(PermanentError):
    """The FHIR server refused the output (4xx other than 408/429)."""

    kind = "store_rejected"


class VersionConflict(StoreRejected):
    """A version-aware write (If-Match) found the resource changed since it was read: re-read and decide again."""

    kind = "version_conflict"


class FinalReportProtected(PermanentError):
    """Writing would overwrite a signed (final) report; radbridge never does that."""

    kind = "final_protected"


class OutputRejected(PermanentError):
    """Kafka refused this message's output for what it is (too large, invalid record), not for an outage:
    retrying cannot help, so the source message is dead-lettered and the partition moves on."""

    kind = "output_rejected"
