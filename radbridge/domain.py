"""The domain: a radiology report, why one was skipped, and a draft impression.

Nothing here knows about Kafka, HTTP, hl7apy, FHIR libraries or torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Literal

SourceFormat = Literal["hl7v2", "fhir"]

# FHIR DiagnosticReport.status values; HL7 v2 OBR-25 codes are mapped onto these by the readers.
FINAL_STATUSES = frozenset({"final", "amended", "corrected", "appended"})
CLOSED_STATUSES = frozenset({"cancelled", "entered-in-error"})


@dataclass(frozen=True)
class Coding:
    system: str | None = None
    code: str | None = None
    display: str | None = None


@dataclass(frozen=True)
class Identifier:
    """An identifier with the system (FHIR URI or HL7 v2 assigning authority) it belongs to."""

    value: str
    system: str | None = None
    type_code: str | None = None  # v2-0203 code, e.g. "ACSN" for accession, "PLAC", "FILL", "MR"


@dataclass(frozen=True)
class SourceRef:
    """Where a report came from. Carries no report text and no patient data: safe to log."""

    format: SourceFormat
    sha256: str  # of the whole source message as received
    message_id: str | None = None  # MSH-10, or the FHIR Bundle/DiagnosticReport id
    index: int = 0  # which report inside the message (OBR group / DiagnosticReport), from 0
    location: str | None = None  # e.g. "tests/fixtures/x.hl7#1" or "kafka:radiology/0@42"
    message_time: datetime | None = None  # MSH-7, Bundle.timestamp, DiagnosticReport.issued

    @property
    def key(self) -> str:
        """Stable key of this report: same input bytes, same key (redelivery and replay are idempotent)."""
        return f"{self.sha256[:32]}-{self.index}"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Report:
    """One radiology report, whatever format it arrived in."""

    source: SourceRef
    status: str  # FHIR DiagnosticReport.status vocabulary
    procedure: Coding | None = None  # OBR-4 / DiagnosticReport.code
    patient: Identifier | None = None  # PID-3 / DiagnosticReport.subject identifier
    patient_reference: str | None = None  # literal FHIR reference, when the source had one
    identifiers: tuple[Identifier, ...] = ()  # accession, placer/filler order numbers, report ids
    based_on: tuple[str, ...] = ()  # FHIR references to the order(s) (ServiceRequest/...)
    # The source report itself: "DiagnosticReport/<id>", or its fullUrl inside a Bundle (FHIR sources only).
    report_reference: str | None = None
    encounter_reference: str | None = None  # FHIR DiagnosticReport.encounter
    imaging_studies: tuple[str, ...] = ()  # FHIR DiagnosticReport.imagingStudy references
    effective: datetime | None = None  # OBR-7 / effectiveDateTime
    modality: str | None = None  # OBR-24 diagnostic service section, e.g. "RAD", "CT"
    indication: str | None = None
    comparison: str | None = None
    technique: str | None = None
    findings: str | None = None
    impression: str | None = None  # the radiologist's own impression, when the source has one
    # OBR-32 / resultsInterpreter: who signed it. Only ever used pseudonymised (radbridge.service.signoff).
    interpreter: str | None = None
    # Every part of the source that did not land in a field above, named (e.g. "OBX[4] CE 309088003"),
    # never quoted: this is how "nothing is silently dropped" is kept and shown.
    unmapped: tuple[str, ...] = ()

    @property
    def accession(self) -> Identifier | None:
        return next((i for i in self.identifiers if i.type_code == "ACSN"), None)

    @property
    def is_signed(self) -> bool:
        return self.status in FINAL_STATUSES


class SkipReason(str, Enum):
    NOT_RADIOLOGY = "not_radiology"
    NOT_A_RESULT = "not_a_result"
    NO_FINDINGS = "no_findings"
    ALREADY_SIGNED = "already_signed"
    OUT_OF_SCOPE = "out_of_scope"  # an exam the model was not trained for (radbridge.scope)
    CLOSED = "cancelled"


@dataclass(frozen=True)
class Skipped:
    """An input that was understood but deliberately not drafted, with the reason."""

    source: SourceRef
    reason: SkipReason
    detail: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """What produced a draft: recorded in the Provenance of every AI-written resource."""

    backend: str  # local | tgi | openai | echo
    base_model: str
    base_model_sha256: str | None = None
    adapter: str | None = None
    adapter_sha256: str | None = None
    server_version: str | None = None
    # How the weights were run when not plain float32 ("bfloat16", "int8 dynamic"): the same weights in other
    # numerics can word a draft differently, so it is part of what produced it.
    numerics: str | None = None


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 96
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    seed: int = 0
    repetition_penalty: float | None = None
    # Greedy decoding ends a draft when the end-of-turn token is the most likely next token, even if the model
    # gives it little probability (the many ways to go on split the rest). With this set (a template's
    # ``+end<pct>``), the draft's first such end is held when it has less than this probability: the most likely
    # other token is taken instead, and the next end is final. Drafts get longer, never shorter (the greedy draft
    # is always their prefix).
    end_threshold: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str | None = None  # length | eos_token | stop_sequence
    generated_tokens: int | None = None


@dataclass(frozen=True)
class Draft:
    """An AI-written impression for one report, with everything needed to say how it was made."""

    report: Report
    impression: str
    prompt_version: str
    model: ModelInfo
    params: GenerationParams
    finish_reason: str | None = None
    extra: dict = field(default_factory=dict)
    # What radbridge.verify found wrong with the draft against its own findings (radbridge.verify.Flag).
    flags: tuple = ()
    # What the model wrote (cleaned), when a wording policy replaced it with an example's impression: evaluation
    # scores the model alone too. Not written to any output.
    model_text: str | None = None
