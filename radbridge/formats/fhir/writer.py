"""Draft impressions -> one FHIR R4 transaction Bundle per input message.

For each Draft the Bundle holds:

``DiagnosticReport`` (conditional create: ``POST`` with ``ifNoneExist: identifier=urn:radbridge:draft|<key>``)
    ``status`` preliminary (or partial; never final), ``conclusion`` = the draft impression, the source's
    procedure ``code`` (LOINC 18748-4 "Diagnostic imaging study" when it had none), category RAD (v2-0074),
    ``subject`` (the source's literal reference when it is portable — ``Type/id`` or an absolute URL, on the
    assumption that source and target are the same FHIR server — else a logical reference by identifier),
    the source's order-level identifiers (accession, placer, filler: they name the study, not the source
    report, so copying them does not make two reports share a report id) plus radbridge's own
    ``urn:radbridge:draft`` identifier, ``basedOn`` (the source's references, else a logical ServiceRequest
    reference by accession/placer/filler number), ``effective[x]``, ``issued`` = recorded, and
    ``meta.security`` = HL7 ``AIAST``. The findings are not copied: the source holds them.
    R4 DiagnosticReport has no ``note``, and ``presentedForm`` is what EHRs show as *the* signed report, so the
    human-visible warning lives in the narrative (``text``, status ``generated``): a banner
    "AI-generated draft; requires radiologist review." followed by the draft.

``Provenance`` (conditional create on ``_tag=urn:radbridge:draft|<key>``; R4 Provenance has no identifier)
    ``target`` = the DiagnosticReport; ``recorded``; ``activity`` v3-DataOperation CREATE; one ``agent`` of
    type ``author`` (provenance-participant-type: the model wrote the text) whose ``who`` is the model Device;
    ``entity`` role ``source`` = the source message as a logical reference (identifier
    ``urn:radbridge:source-sha256|<sha256 of the message bytes>``, display "HL7v2 ORU^R01 <MSH-10> report n");
    ``policy`` = ``urn:radbridge:prompt-template:<template id>`` (the prompt template is the plan the activity
    followed); generation parameters in the complex extension ``GENERATION_EXT`` (one sub-extension per
    parameter, plus backend, finish reason and radbridge version).
    Conditional create rather than PUT: when a report is replayed with another model the DiagnosticReport is
    left alone, so its Provenance must be left alone too, or it would name a model that did not write it.

``Device`` (``PUT Device/<uuid5 of the model info>``)
    The base model and adapter (``deviceName`` model-name / other) and their sha256 and server version
    (``version``). Shared by every draft of that model, so PUT with a deterministic id rather than a
    conditional create: two concurrent first writes of a conditional create would leave two Devices and
    make every later ``ifNoneExist`` fail with 412; two PUTs of the same content cannot. (sekmet stores each
    identical PUT as a new version; HAPI skips unchanged content. Either way the content never changes.)

All ``fullUrl`` values are ``urn:uuid:`` UUIDv5 of the report key (radbridge.ids), and nothing reads the clock:
the same drafts and ``recorded`` give byte-identical ``bundle_bytes``. Verified against sekmet-fhir 0.1.1
(urn:uuid rewriting, ``ifNoneExist`` in transactions, ``_tag`` and ``identifier`` search, logical references
left untouched); the same constructs are standard R4 transaction processing in HAPI FHIR.

Cost, measured on one shared core: build about 0.1 ms, build + ``bundle_bytes`` about 0.27 ms per one-report
message (~3,700/s); validating with the R4B models costs about 3.3 ms (~300/s), so it is off the hot path
(``validate=True`` for tests and debugging; the unit tests validate every shape the writer produces).

Datetimes: a naive ``recorded`` is taken as UTC (an instant needs an offset); a naive ``effective`` is written
as its date only rather than inventing an offset for a clinical time.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from typing import Any, Literal

from ... import __version__
from ...domain import Coding, Draft, Identifier, Report
from ...errors import ConfigurationError, UnsupportedContent
from ...ids import CHECK_SYSTEM, DEVICE_SYSTEM, DRAFT_SYSTEM, MODEL_CARD_SYSTEM, SOURCE_SYSTEM, device_id, resource_uuid
from ..hl7v2.codes import CODING_SYSTEMS

OutputStatus = Literal["preliminary", "partial"]
ALLOWED_STATUSES: frozenset[str] = frozenset({"preliminary", "partial"})

AIAST = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "AIAST",
    "display": "Artificial Intelligence asserted",
}
RAD_CATEGORY = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}]
}
GENERIC_IMAGING = {"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}
CREATE_ACTIVITY = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE", "display": "create"}]
}
AUTHOR_TYPE = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
            "code": "author",
            "display": "Author",
        }
    ]
}
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
# HL7 AI Transparency on FHIR (STU1 ballot, R4): the AI Device type and the Device's model-card extension.
AI_DEVICE_TYPE = {
    "system": "http://hl7.org/fhir/uv/aitransparency/CodeSystem/AIdeviceTypeCS",
    "code": "Artificial-Intelligence",
}
MODEL_CARD_EXT = "http://hl7.org/fhir/uv/aitransparency/StructureDefinition/aitransparency.modelCardDescription"
DERIVATION_ROLE = "derivation"  # the IG's role for the model card an AI ran under (R5 would say instantiates)
REVIEW_NOTICE = "AI-generated draft; requires radiologist review."
# Provenance.reason of a draft made by an audit replay of an already signed report (never sent to live systems).
REPLAY_REASON = {"text": "audit replay of a signed report (radbridge audit); not for clinical use"}
GENERATION_EXT = "urn:radbridge:fhir:extension:generation-parameters"
PROMPT_POLICY_PREFIX = "urn:radbridge:prompt-template:"
# Order-level identifier types (v2-0203) copied from the source onto the draft.
ORDER_ID_TYPES = ("ACSN", "PLAC", "FILL")

# HL7 v2 coding-system names (table 0396) are mapped to URIs with the readers' table; names without a URI
# are dropped (code and display kept) rather than written as an invalid Coding.system.


def build_bundle(
    draft: Draft,
    *,
    status: OutputStatus = "preliminary",
    recorded: datetime,
    validate: bool = False,
    replay: bool = False,
) -> dict:
    """One transaction Bundle (plain JSON-able dict) for one report's draft: its DiagnosticReport, Provenance,
    DetectedIssues and the model's Device.

    One per report, never one per message: a message of many reports would otherwise make one output record
    that grows with the message (600 reports made 1.6 MB, over what Kafka takes), and one report's refusal would
    lose its neighbours.
    """
    if status not in ALLOWED_STATUSES:
        raise ConfigurationError(
            f"output status must be one of {sorted(ALLOWED_STATUSES)}, not {status!r}: "
            "an AI draft is never final"
        )
    issued = _instant(recorded)
    key = draft_key(draft, replay)
    dr_url = "urn:uuid:" + resource_uuid(key, "DiagnosticReport")
    did = device_id(draft.model)
    entries: list[dict] = [
        {
            "fullUrl": dr_url,
            "resource": _diagnostic_report(draft, status, issued, key),
            "request": {
                "method": "POST",
                "url": "DiagnosticReport",
                "ifNoneExist": f"identifier={DRAFT_SYSTEM}|{key}",
            },
        },
        {
            "fullUrl": "urn:uuid:" + resource_uuid(key, "Provenance"),
            "resource": _provenance(draft, dr_url, "urn:uuid:" + did, issued, key, replay),
            "request": {"method": "POST", "url": "Provenance", "ifNoneExist": f"_tag={DRAFT_SYSTEM}|{key}"},
        },
    ]
    entries.extend(_detected_issue_entry(draft, flag, dr_url, issued, key) for flag in draft.flags)
    entries.append(_device_entry(draft, did))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    if validate:
        validate_bundle(bundle)
    return bundle


def draft_key(draft: Draft, replay: bool = False) -> str:
    """The key of a draft's ids: the source report's; in a replay (audit) also the model's, so two adapters audited on
    the same history give two distinct drafts instead of the second one being taken for the first."""
    key = draft.report.source.key
    return f"{key}-{device_id(draft.model)[:8]}" if replay else key


def bundle_bytes(bundle: dict) -> bytes:
    """Canonical JSON (sorted keys, no whitespace, UTF-8): equal Bundles give equal bytes."""
    return json.dumps(bundle, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def validate_bundle(bundle: dict) -> None:
    """Validate with the fhir.resources R4B models; raises pydantic.ValidationError naming the element."""
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(bundle)


# ---------------------------------------------------------------- resources


def _diagnostic_report(draft: Draft, status: str, issued: str, key: str) -> dict:
    report = draft.report
    impression = draft.impression.strip()
    if not impression:
        raise UnsupportedContent(f"empty draft impression for report {key}")
    dr: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "meta": {"security": [AIAST]},
        "text": {"status": "generated", "div": _narrative(impression)},
        "identifier": [{"system": DRAFT_SYSTEM, "value": key}, *_order_identifiers(report)],
        "status": status,
        "category": [RAD_CATEGORY],
        "code": _procedure_code(report.procedure),
        "issued": issued,
        "conclusion": impression,
    }
    based_on = _based_on(report)
    if based_on:
        dr["basedOn"] = based_on
    subject = _subject(report)
    if subject:
        dr["subject"] = subject
    if _portable(report.encounter_reference):
        dr["encounter"] = {"reference": report.encounter_reference}
    studies = [{"reference": ref} for ref in report.imaging_studies if _portable(ref)]
    if studies:
        dr["imagingStudy"] = studies
    if report.effective is not None:
        dr["effectiveDateTime"] = _datetime(report.effective)
    return dr


def _detected_issue_entry(draft: Draft, flag: Any, dr_url: str, identified: str, key: str) -> dict:
    """One problem radbridge.verify found in the draft: a DetectedIssue implicating the draft report.

    ``detail`` names the observation and sides, never report text. Conditional create on its own tag, like the
    Provenance: a redelivery adds nothing.
    """
    ident = f"{key}/{flag.kind.value}/{flag.observation.lower().replace(' ', '-')}"  # a search value: no spaces
    issue: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "meta": {"security": [AIAST], "tag": [{"system": CHECK_SYSTEM, "code": ident}]},
        "identifier": [{"system": CHECK_SYSTEM, "value": ident}],
        "status": "preliminary",
        "code": {"coding": [{"system": CHECK_SYSTEM, "code": flag.kind.value, "display": flag.title}], "text": flag.title},
        "severity": flag.severity,
        "identifiedDateTime": identified,
        "implicated": [{"reference": dr_url}],
        "detail": flag.detail,
    }
    subject = _subject(draft.report)
    if subject:
        issue["patient"] = subject
    return {
        "fullUrl": "urn:uuid:" + resource_uuid(ident, "DetectedIssue"),
        "resource": issue,
        # _tag, like the Provenance: every server supports it on every resource (sekmet has no DetectedIssue
        # identifier search parameter)
        "request": {"method": "POST", "url": "DetectedIssue", "ifNoneExist": f"_tag={CHECK_SYSTEM}|{ident}"},
    }


def _provenance(draft: Draft, dr_url: str, device_url: str, recorded: str, key: str, replay: bool = False) -> dict:
    source = draft.report.source
    model = draft.model
    who_display = model.base_model + (f" + {model.adapter}" if model.adapter else "")
    return {
        "resourceType": "Provenance",
        "meta": {"tag": [{"system": DRAFT_SYSTEM, "code": key}]},
        "extension": [_generation_extension(draft)],
        "target": [{"reference": dr_url}],
        "recorded": recorded,
        "policy": [PROMPT_POLICY_PREFIX + draft.prompt_version],
        "activity": CREATE_ACTIVITY,
        **({"reason": [REPLAY_REASON]} if replay else {}),
        "agent": [{"type": AUTHOR_TYPE, "who": {"reference": device_url, "display": who_display}}],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": SOURCE_SYSTEM, "value": source.sha256},
                    "display": _source_display(draft.report),
                },
            },
            *_source_report_entities(draft.report),
            {"role": DERIVATION_ROLE, "what": _model_card(model)},
        ],
    }


def _source_report_entities(report: Report) -> list[dict]:
    """The source report itself: its literal reference when portable, else each of its business identifiers."""
    if _portable(report.report_reference):
        return [{"role": "source", "what": {"reference": report.report_reference}}]
    return [
        {"role": "source", "what": {"type": "DiagnosticReport", "identifier": _identifier(ident)}}
        for ident in report.identifiers
    ]


def _model_card(model: Any) -> dict:
    """A logical reference to the model card (model/MODEL_CARD.md travels with the adapter, keyed by its hash)."""
    value = model.adapter_sha256 or model.base_model_sha256 or model.base_model
    name = model.adapter or model.base_model
    return {"type": "DocumentReference", "identifier": {"system": MODEL_CARD_SYSTEM, "value": value},
            "display": f"Model card of {name}"}


def _device_entry(draft: Draft, did: str) -> dict:
    model = draft.model
    names = [{"name": model.base_model, "type": "model-name"}]
    if model.adapter:
        names.append({"name": model.adapter, "type": "other"})
    versions = []
    for label, value in (
        ("base-model-sha256", model.base_model_sha256),
        ("adapter-sha256", model.adapter_sha256),
        ("model-server", model.server_version),
        ("numerics", model.numerics),
    ):
        if value:
            versions.append({"type": {"text": label}, "value": value})
    device: dict[str, Any] = {
        "resourceType": "Device",
        "id": did,
        "identifier": [{"system": DEVICE_SYSTEM, "value": did}],
        "status": "active",
        "deviceName": names,
        "type": {
            "coding": [AI_DEVICE_TYPE],
            "text": "AI language model (base model + LoRA adapter)" if model.adapter else "AI language model",
        },
        "extension": [{"url": MODEL_CARD_EXT, "valueReference": _model_card(model)}],
    }
    if versions:
        device["version"] = versions
    return {"fullUrl": "urn:uuid:" + did, "resource": device, "request": {"method": "PUT", "url": f"Device/{did}"}}


# ---------------------------------------------------------------- pieces


def _generation_extension(draft: Draft) -> dict:
    parts: list[dict] = []
    for name, value in sorted(draft.params.as_dict().items()):
        parts.append({"url": name, **_ext_value(value)})
    parts.append({"url": "backend", "valueCode": draft.model.backend})
    if draft.finish_reason:
        parts.append({"url": "finish_reason", "valueCode": draft.finish_reason})
    for name, value in sorted(draft.extra.items()):  # e.g. wording taken from the nearest example (+copynormal)
        if value is not None:
            parts.append({"url": name, **_ext_value(value)})
    parts.append({"url": "software", "valueString": f"radbridge {__version__}"})
    return {"url": GENERATION_EXT, "extension": parts}


def _ext_value(value: object) -> dict:
    if isinstance(value, bool):  # before int: bool is an int
        return {"valueBoolean": value}
    if isinstance(value, int):
        return {"valueInteger": value}
    if isinstance(value, float):
        return {"valueDecimal": value}
    return {"valueString": str(value)}


def _narrative(impression: str) -> str:
    lines = "<br/>".join(html.escape(line) for line in impression.splitlines())
    return (
        '<div xmlns="http://www.w3.org/1999/xhtml">'
        f"<p><b>{REVIEW_NOTICE}</b></p><p>Draft impression:</p><p>{lines}</p></div>"
    )


def _identifier(ident: Identifier) -> dict:
    out: dict[str, Any] = {"value": ident.value}
    if ident.system and ":" in ident.system:
        out["system"] = ident.system
    elif ident.system:
        # An HL7 v2 assigning authority name is not a URI: R4 keeps it as the assigner's display.
        out["assigner"] = {"display": ident.system}
    if ident.type_code:
        out["type"] = {"coding": [{"system": V2_0203, "code": ident.type_code}]}
    return out


def _order_identifiers(report: Report) -> list[dict]:
    return [_identifier(i) for i in report.identifiers if i.type_code in ORDER_ID_TYPES]


def _portable(reference: str | None) -> bool:
    """A literal reference that means the same thing outside the source message.

    ``urn:uuid:``/``urn:oid:`` fullUrls and ``#contained`` ids only resolve inside the Bundle or resource they
    came from; copied into our transaction they would be unresolvable, so the logical identifier is used instead.
    """
    return bool(reference) and not reference.startswith(("urn:", "#"))  # type: ignore[union-attr]


def _based_on(report: Report) -> list[dict]:
    literal = [{"reference": ref} for ref in report.based_on if _portable(ref)]
    if literal:
        return literal
    by_type = {i.type_code: i for i in report.identifiers if i.type_code in ORDER_ID_TYPES}
    for type_code in ORDER_ID_TYPES:
        if type_code in by_type:
            return [{"type": "ServiceRequest", "identifier": _identifier(by_type[type_code])}]
    return []


def _subject(report: Report) -> dict | None:
    if _portable(report.patient_reference):
        return {"reference": report.patient_reference}
    if report.patient is not None:
        return {"type": "Patient", "identifier": _identifier(report.patient)}
    return None


def _procedure_code(procedure: Coding | None) -> dict:
    if procedure is not None and procedure.code:
        coding: dict[str, Any] = {"code": procedure.code}
        system = _system_uri(procedure.system)
        if system:
            coding["system"] = system
        if procedure.display:
            coding["display"] = procedure.display
        out: dict[str, Any] = {"coding": [coding]}
        if procedure.display:
            out["text"] = procedure.display
        return out
    text = procedure.display if procedure is not None and procedure.display else GENERIC_IMAGING["display"]
    return {"coding": [GENERIC_IMAGING], "text": text}


def _system_uri(system: str | None) -> str | None:
    """A FHIR system URI for a source system: URIs pass, known HL7 v2 names map, anything else is dropped."""
    if not system:
        return None
    if ":" in system:
        return system
    mapped = CODING_SYSTEMS.get(system.strip().upper())
    return mapped if mapped and ":" in mapped else None


def _source_display(report: Report) -> str:
    source = report.source
    label = "HL7v2 ORU^R01" if source.format == "hl7v2" else "FHIR"
    return f"{label} {source.message_id or '(no message id)'} report {source.index + 1}"


def _instant(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")


def _datetime(value: datetime) -> str:
    if value.tzinfo is None:
        return value.date().isoformat()
    return value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")
