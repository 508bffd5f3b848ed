"""Deterministic identifiers: the same source report always yields the same ids, so replays are idempotent.

Everything here is a pure function of a report key (``SourceRef.key``) or of a ``ModelInfo``; nothing reads
the clock or a random source. Changing ``NAMESPACE`` or any name string below changes every id radbridge has
ever written, so treat them as frozen.
"""

from __future__ import annotations

import hashlib
import uuid

from .domain import ModelInfo

#: Root of all radbridge UUIDv5 ids.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:radbridge")

#: Identifier systems radbridge owns.
DRAFT_SYSTEM = "urn:radbridge:draft"
SOURCE_SYSTEM = "urn:radbridge:source-sha256"
DEVICE_SYSTEM = "urn:radbridge:device"
#: Code system of the draft checker's findings (radbridge.verify.FlagKind values), and their identifiers.
CHECK_SYSTEM = "urn:radbridge:draft-check"
#: Identifier system of a model card (value: the adapter's sha256, else the base model's).
MODEL_CARD_SYSTEM = "urn:radbridge:model-card"


def resource_uuid(report_key: str, resource_type: str) -> str:
    """UUID of the ``resource_type`` radbridge writes for one report (DiagnosticReport, Provenance)."""
    return str(uuid.uuid5(NAMESPACE, f"{resource_type}/{report_key}"))


def model_fingerprint(model: ModelInfo) -> str:
    """A stable string naming exactly which weights produced a draft (backend excluded: same weights, same Device)."""
    parts = (
        model.base_model,
        model.base_model_sha256 or "",
        model.adapter or "",
        model.adapter_sha256 or "",
        model.server_version or "",
    )
    # appended only when set, so the Device of a float32 model keeps the id it always had
    return "\x1f".join(parts + ((model.numerics,) if model.numerics else ()))


def device_id(model: ModelInfo) -> str:
    """Id of the Device resource describing a model+adapter; a new adapter or weight hash gives a new Device."""
    return str(uuid.uuid5(NAMESPACE, "Device/" + model_fingerprint(model)))


def message_control_id(report_key: str, prefix: str = "RB") -> str:
    """HL7 v2 MSH-10 for the ORU radbridge emits for one report: 20 characters, the v2.5.1 maximum."""
    digest = hashlib.sha256(f"oru/{report_key}".encode()).hexdigest()
    return (prefix + digest)[:20]
