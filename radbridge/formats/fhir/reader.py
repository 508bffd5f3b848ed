"""Read FHIR R4 DiagnosticReports, alone or inside a Bundle of any type, into domain Reports.

Bundles nested in a Bundle's entries (a message Bundle carrying a document Bundle, say) are read too, up to
three levels; references resolve among the entries of the Bundle that holds the report.

Validation policy (why it is not "validate the whole Bundle"):
- every DiagnosticReport is validated strictly with the fhir.resources R4B model; an invalid one makes the
  whole message malformed (MalformedMessage names the JSON path, never the text);
- resources a report actually *uses* (result Observations, the Patient, the ServiceRequest) are validated
  too; an invalid one is not used and is named in Report.unmapped, so one bad entry cannot cost a good report;
- entries the report does not use are not validated at all (real converters emit Observations with two
  value[x]; validating a 150-entry Bundle costs ~6 ms, far over the 2 ms budget of 500 messages/s) and are
  named in Report.unmapped by type and position.

Radiology or not: an imaging category (v2-0074 RAD/RX/CT/MR/US..., LOINC LP29684-5, SNOMED radiology/imaging,
DICOM modality), an imaging report code (LOINC imaging document codes, or a code name saying XR/CT/MR/US,
radiograph, ultrasound, ...), or a linked ImagingStudy. Anything else is NOT_RADIOLOGY -- including the US Core
"cardiology" report (an EKG panel: category Cardiology, no imaging), while an echocardiogram counts as imaging.

Where report text is taken from, first source wins per section: `conclusion` (impression only), the
basedOn ServiceRequest's reason (indication only), result Observations coded as report sections,
the first readable `presentedForm`, then the narrative `text.div` (only when it is authored, not a
`generated` rendering of the structured data, unless it carries a FINDINGS heading).
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

from ..attachments import PREFERENCE, READABLE, UnreadableAttachment, html_to_text, media_type_name, read_attachment
from ...domain import Coding, Identifier, Report, SkipReason, Skipped, SourceRef, sha256_of
from ...errors import MalformedMessage
from ...limits import DEFAULT_LIMITS, Limits, on_time
from ...redact import NON_STANDARD_ID, safe_code
from ...sections import split_sections

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"

DR_STATUSES = frozenset(
    {"registered", "partial", "preliminary", "final", "amended", "corrected", "appended", "cancelled",
     "entered-in-error", "unknown"}
)
BUNDLE_TYPES = frozenset(
    {"document", "message", "transaction", "transaction-response", "batch", "batch-response", "history",
     "searchset", "collection"}
)
SECTION_FIELDS = ("findings", "impression", "indication", "comparison", "technique")

# v2-0074 diagnostic service sections that are imaging. CUS/VUS/OUS are ultrasound; echo counts as imaging.
RAD_SECTIONS = frozenset(
    {"RAD", "RX", "CT", "NMR", "NMS", "RUS", "US", "CUS", "VUS", "OUS", "XRC", "MR", "MRI", "MG", "NM", "PET",
     "IR", "IMG"}
)
DICOM_MODALITIES = frozenset({"CR", "CT", "DX", "MG", "MR", "NM", "PT", "RF", "US", "XA", "IO", "OT"})
RAD_CATEGORY_CODES = frozenset(
    {
        (LOINC, "LP29684-5"),  # Radiology (US Core DiagnosticReport category)
        (SNOMED, "394914008"),  # Radiology (specialty)
        (SNOMED, "394734003"),  # Radiological specialties
        (SNOMED, "363679005"),  # Imaging
    }
)
# Not a complete LOINC radiology table: imaging names are recognised by words below; these are the
# generic imaging document codes whose names do not say a modality.
RAD_LOINC = frozenset({"18748-4", "18726-0", "18747-6", "18755-9", "18760-9", "18757-5", "18758-3"})
_IMAGING_WORDS = re.compile(
    r"(?i)\b(x-?rays?|radiograph\w*|radiolog\w*|computed\s+tomograph\w*|tomograph\w*|magnetic\s+resonance|"
    r"ultrasound|ultrasonograph\w*|sonograph\w*|sonogram|mammogra\w*|fluoroscop\w*|angiogra\w*|"
    r"nuclear\s+medicine|scintigra\w*|densitometr\w*|echocardiogra\w*|diagnostic\s+imaging|imaging)\b"
)
# Modality acronyms only in capitals, so "us" or "ct" inside ordinary words and units never match.
_IMAGING_ACRONYMS = re.compile(r"\b(XR|CT|CTA|MR|MRA|MRI|US|PET|DXA|DEXA|NM|SPECT)\b")

# Result Observation code -> report section.
LOINC_SECTIONS = {
    "59776-5": "findings",  # Procedure findings
    "18782-3": "findings",  # Radiology Study observation (narrative)
    "19005-8": "impression",  # Radiology Imaging study [Impression] (narrative)
    "18834-2": "comparison",  # Radiology Comparison study (narrative)
    "18785-6": "indication",  # Radiology Reason for study
    "55752-0": "indication",  # Clinical information
    "11329-0": "indication",  # History general (narrative)
    "55111-9": "technique",  # Current imaging procedure descriptions
    "18783-1": "recommendation",  # Radiology Study recommendation (narrative)
}
_LABEL_SECTIONS = (
    ("findings", re.compile(r"(?i)\bfindings?\b")),
    ("impression", re.compile(r"(?i)\b(impressions?|conclusions?|opinion|interpretation)\b")),
    ("comparison", re.compile(r"(?i)\bcomparisons?\b")),
    ("indication", re.compile(r"(?i)\b(indications?|clinical\s+history|reason\s+for)\b")),
    ("technique", re.compile(r"(?i)\b(technique|protocol)\b")),
    ("recommendation", re.compile(r"(?i)\brecommendations?\b")),
)

# DiagnosticReport elements that land in a Report field (or decide whether one is made).
_MAPPED_KEYS = frozenset(
    {"resourceType", "id", "meta", "identifier", "basedOn", "status", "category", "code", "subject",
     "effectiveDateTime", "effectivePeriod", "issued", "result", "presentedForm", "conclusion", "conclusionCode",
     "contained", "text", "imagingStudy", "media", "language", "encounter"}
)

# Trailing sign-off lines: they name people, carry no findings and would leak into prompts.
_SIGNATURE = re.compile(
    r"(?i)^\s*(?:(?:dictated|signed|electronically\s+signed|reviewed|transcribed|verified|approved|finali[sz]ed|"
    r"read|reported|interpreted)(?:\s+(?:by|on|date(?:\s*/\s*time)?))?\s*:|(?:electronically\s+)?signed\s+by\b|"
    r"(?:read|reported|interpreted|dictated|transcribed)\s+by\b|"
    r"(?:attending\s+)?radiologist\s*:|wsn\s*:|workstation\s*:)"
)


def read_fhir(
    data: bytes, *, location: str | None = None, received_at: datetime | None = None, limits: Limits = DEFAULT_LIMITS
) -> list[Report | Skipped]:
    """One FHIR JSON document -> one Report or Skipped per DiagnosticReport in it.

    Raises MalformedMessage, or LimitExceeded when the document is over one of ``limits``."""
    limits.check("max_message_bytes", len(data))
    doc = _load(data)
    rtype = doc.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise MalformedMessage("JSON is not a FHIR resource (no resourceType)", where="resourceType")
    msg = _Message(data=data, sha256=sha256_of(data), location=location, received_at=received_at, limits=limits)
    if rtype == "Bundle":
        # counted before any per-report work: 50,000 reports must cost a count, not 50,000 validations
        entries, reports = _census(doc, depth=1)
        limits.check("max_reports", reports, where="Bundle.entry")
        limits.check("max_entries", entries, where="Bundle.entry")
        return _read_bundle(doc, msg)
    msg.message_id = _str(doc.get("id"))
    if rtype == "DiagnosticReport":
        msg.message_time = _instant(doc.get("issued")) or _instant(_get(doc, "meta", "lastUpdated")) or received_at
        return [_read_report(doc, "DiagnosticReport", 0, msg)]
    _model_class(rtype, "resourceType", msg.message_id)
    msg.message_time = _instant(_get(doc, "meta", "lastUpdated")) or received_at
    return [Skipped(msg.source(0), SkipReason.NOT_A_RESULT, f"a lone {rtype} is not a report")]


# -- message level ----------------------------------------------------------------------------------------


@dataclass
class _Message:
    data: bytes
    sha256: str
    location: str | None
    received_at: datetime | None
    message_id: str | None = None
    message_time: datetime | None = None
    entries: list[dict] = field(default_factory=list)  # Bundle entries (empty for a lone resource)
    by_ref: dict[str, int] = field(default_factory=dict)  # fullUrl / Type/id -> entry index
    path: str = "Bundle"  # JSON path of the Bundle whose entries these are (nested: Bundle.entry[2].resource)
    limits: Limits = DEFAULT_LIMITS

    def source(self, index: int) -> SourceRef:
        return SourceRef(
            format="fhir",
            sha256=self.sha256,
            message_id=self.message_id,
            index=index,
            location=self.location,
            message_time=self.message_time,
        )


def _load(data: bytes) -> dict:
    if not data or not data.strip():
        raise MalformedMessage("empty FHIR payload")
    try:
        doc = json.loads(data)
    except RecursionError:
        raise MalformedMessage("JSON nested too deeply", where="$") from None
    except UnicodeDecodeError as exc:
        raise MalformedMessage("FHIR JSON is not valid UTF-8", where=f"byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise MalformedMessage(f"invalid JSON: {exc.msg}", where=f"line {exc.lineno} column {exc.colno}") from None
    if not isinstance(doc, dict):
        raise MalformedMessage(f"FHIR JSON must be an object, got {type(doc).__name__}", where="$")
    return doc


_MAX_BUNDLE_DEPTH = 3  # a Bundle inside a Bundle inside a Bundle (message -> document -> ...); deeper is malformed


def _census(bundle: dict, depth: int) -> tuple[int, int]:
    """(entries, DiagnosticReports) of a Bundle and the Bundles nested in it, as far as they are read.

    Shapes are not checked here (the reading does that, naming the path); this only counts."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return 0, 0
    n_entries, n_reports = len(entries), 0
    for entry in entries:
        res = entry.get("resource") if isinstance(entry, dict) else None
        rtype = res.get("resourceType") if isinstance(res, dict) else None
        if rtype == "DiagnosticReport":
            n_reports += 1
        elif rtype == "Bundle" and depth < _MAX_BUNDLE_DEPTH:
            inner = _census(res, depth + 1)
            n_entries, n_reports = n_entries + inner[0], n_reports + inner[1]
    return n_entries, n_reports


def _read_bundle(bundle: dict, msg: _Message) -> list[Report | Skipped]:
    ident = bundle.get("identifier")
    msg.message_id = _str(bundle.get("id")) or (_str(ident.get("value")) if isinstance(ident, dict) else None)
    msg.message_time = _instant(bundle.get("timestamp")) or _instant(_get(bundle, "meta", "lastUpdated"))
    reports = _bundle_reports(bundle, msg, depth=1, start=0)
    if not reports:
        if msg.message_time is None:
            msg.message_time = msg.received_at
        kinds = _count_types(range(len(msg.entries)), msg.entries)
        return [Skipped(msg.source(0), SkipReason.NOT_A_RESULT, f"{bundle['type']} Bundle without DiagnosticReport ({kinds or 'empty'})")]
    return reports


def _bundle_reports(bundle: dict, msg: _Message, *, depth: int, start: int) -> list[Report | Skipped]:
    """Reports of one Bundle's entries, then of the Bundles among them (each its own reference scope).

    A Bundle nested in an entry (a FHIR message carrying a document Bundle, a batch of collections) is read
    like the outer one; its references resolve among its own entries, as FHIR's resolution rules say. Report
    indexes continue across nesting levels so every report of the message keeps a distinct SourceRef.index.
    """
    path = msg.path
    btype = bundle.get("type")
    if not isinstance(btype, str) or btype not in BUNDLE_TYPES:
        raise MalformedMessage("Bundle.type missing or not a Bundle type", where=f"{path}.type", message_id=msg.message_id)
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise MalformedMessage("Bundle.entry must be an array", where=f"{path}.entry", message_id=msg.message_id)
    for i, entry in enumerate(entries):
        on_time()
        where = f"{path}.entry[{i}]"
        if not isinstance(entry, dict):
            raise MalformedMessage("entry must be an object", where=where, message_id=msg.message_id)
        res = entry.get("resource")
        if res is None:
            continue  # legal: e.g. a DELETE in a transaction, or a response entry
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            raise MalformedMessage("resource without resourceType", where=f"{where}.resource", message_id=msg.message_id)
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url:
            msg.by_ref.setdefault(full_url, i)
        if isinstance(res.get("id"), str):
            msg.by_ref.setdefault(f"{res['resourceType']}/{res['id']}", i)
    msg.entries = entries
    reports: list[Report | Skipped] = []
    nested: list[int] = []
    for i, entry in enumerate(entries):
        res = entry.get("resource")
        rtype = res.get("resourceType") if isinstance(res, dict) else None
        if rtype == "DiagnosticReport":
            reports.append(_read_report(res, f"{path}.entry[{i}].resource", start + len(reports), msg, entry_index=i))
        elif rtype == "Bundle":
            nested.append(i)
    for i in nested:
        if depth >= _MAX_BUNDLE_DEPTH:
            raise MalformedMessage(f"Bundles nested deeper than {_MAX_BUNDLE_DEPTH}", where=f"{path}.entry[{i}].resource",
                                   message_id=msg.message_id)
        inner_bundle = entries[i]["resource"]
        inner = replace(msg, entries=[], by_ref={}, path=f"{path}.entry[{i}].resource",
                        message_time=msg.message_time or _instant(inner_bundle.get("timestamp")))
        reports.extend(_bundle_reports(inner_bundle, inner, depth=depth + 1, start=start + len(reports)))
    return reports


# -- one DiagnosticReport ---------------------------------------------------------------------------------


@dataclass
class _Text:
    """One place report text came from, already split into sections."""

    name: str  # e.g. "presentedForm[0] text/html", "result[1] Observation/abc"
    sections: dict[str, str]
    notes: list[str] = field(default_factory=list)  # parts of the source not mapped (named, not quoted)


def _read_report(dr: dict, where: str, index: int, msg: _Message, entry_index: int | None = None) -> Report | Skipped:
    for key in ("contained", "result"):
        if isinstance(dr.get(key), list):
            msg.limits.check("max_entries", len(dr[key]), where=f"{where}.{key}")
    _validate(dr, where, msg.message_id)
    status = dr.get("status")
    if status not in DR_STATUSES:
        raise MalformedMessage("DiagnosticReport.status is not an R4 status code", where=f"{where}.status", message_id=msg.message_id)
    message_time = msg.message_time or _instant(dr.get("issued")) or _instant(_get(dr, "meta", "lastUpdated")) or msg.received_at
    source = SourceRef("fhir", msg.sha256, msg.message_id, index, msg.location, message_time)

    is_rad, why = _radiology(dr)
    if not is_rad:
        return Skipped(source, SkipReason.NOT_RADIOLOGY, why)

    ctx = _Resolver(dr, msg, entry_index)
    unmapped: list[str] = []
    for key in dr:
        if key not in _MAPPED_KEYS:
            value = dr[key]
            name = key if _ELEMENT.fullmatch(key) else "<unknown element>"  # validated above; a key is still sent text
            unmapped.append(f"DiagnosticReport.{name}" + (f" ({len(value)})" if isinstance(value, list) else ""))

    impression = _str(dr.get("conclusion"))
    for i, cc in enumerate(dr.get("conclusionCode") or []):
        label = _concept_text(cc)
        if impression is None and label:
            impression = label  # coded-only conclusion: its display is the signed impression
        else:
            unmapped.append(f"DiagnosticReport.conclusionCode[{i}] {_codes(cc) or 'text'}")

    identifiers = _identifiers(dr.get("identifier"), "DiagnosticReport.identifier", unmapped)
    based_on, indication = _orders(dr, ctx, identifiers, unmapped)
    patient, patient_ref = _patient(dr.get("subject"), ctx, unmapped)

    texts: list[_Text] = []
    texts.extend(_result_texts(dr, ctx, unmapped))
    texts.extend(_presented_form_texts(dr, where, msg.message_id, unmapped, msg.limits))
    narrative = _narrative_text(dr)
    if narrative is not None:
        texts.append(narrative)
    elif isinstance(dr.get("text"), dict):
        unmapped.append(f"DiagnosticReport.text ({dr['text'].get('status', 'no status')} narrative, not used)")
    chars = len(impression or "") + sum(len(v) for t in texts for v in t.sections.values())
    msg.limits.check("max_text_chars", chars, where=where)

    fields: dict[str, str | None] = {"impression": impression, "indication": indication}
    for text in texts:
        used = False
        for name, value in text.sections.items():
            if name in SECTION_FIELDS and not fields.get(name):
                fields[name] = value
                used = True
            elif name not in SECTION_FIELDS:
                unmapped.append(f"{text.name}: {name} section (no Report field)")
        unmapped.extend(text.notes)
        if not used and text.sections:
            unmapped.append(f"{text.name}: not used (an earlier source gave the same sections)")

    for i, media in enumerate(dr.get("media") or []):
        ref = _get(media, "link", "reference")
        unmapped.append(f"DiagnosticReport.media[{i}] {_ref_name(ref) or 'link'}: image, not read")
    studies: list[str] = []
    for i, study in enumerate(dr.get("imagingStudy") or []):
        ref = study.get("reference") if isinstance(study, dict) else None
        if isinstance(ref, str) and ref:
            studies.append(ref)  # carried onto the draft so it attaches to the same study
        else:
            unmapped.append(f"DiagnosticReport.imagingStudy[{i}] display only: not linked")
    unmapped.extend(ctx.unused_contained())
    unmapped.extend(ctx.unused_entries())

    if not fields.get("findings"):
        what = "conclusion only" if impression else "no readable text"
        # Say what could not be read (names only), so an operator knows whether a PDF or a missing
        # Observation is the cause.
        why = [u for u in unmapped if u.startswith(("DiagnosticReport.presentedForm", "DiagnosticReport.result"))]
        return Skipped(source, SkipReason.NO_FINDINGS, "; ".join([f"radiology report without findings ({what})", *why]))

    return Report(
        source=source,
        status=status,
        procedure=_procedure(dr.get("code")),
        patient=patient,
        patient_reference=patient_ref,
        identifiers=tuple(identifiers),
        based_on=tuple(based_on),
        report_reference=_self_reference(dr, msg, entry_index),
        encounter_reference=_str(_get(dr, "encounter", "reference")),
        imaging_studies=tuple(studies),
        effective=_instant(dr.get("effectiveDateTime")) or _instant(_get(dr, "effectivePeriod", "start")),
        modality=_modality(dr),
        indication=fields.get("indication"),
        comparison=fields.get("comparison"),
        technique=fields.get("technique"),
        findings=fields.get("findings"),
        impression=fields.get("impression"),
        interpreter=_interpreter(dr),
        unmapped=tuple(unmapped),
    )


def _interpreter(dr: dict) -> str | None:
    """The first resultsInterpreter: its reference, else its identifier's value (pseudonymised before any use)."""
    first = next((r for r in dr.get("resultsInterpreter") or [] if isinstance(r, dict)), None)
    if first is None:
        return None
    return _str(first.get("reference")) or _str(_get(first, "identifier", "value"))


class _Resolver:
    """Resolves references of one DiagnosticReport and remembers what it used (the rest is named unmapped)."""

    def __init__(self, dr: dict, msg: _Message, entry_index: int | None):
        self.msg = msg
        self.contained = {
            c["id"]: (k, c) for k, c in enumerate(dr.get("contained") or []) if isinstance(c, dict) and isinstance(c.get("id"), str)
        }
        self.used_contained: set[str] = set()
        self.used_entries: set[int] = set() if entry_index is None else {entry_index}

    def resolve(self, ref: Any) -> tuple[str, dict] | None:
        """Reference string -> (where, resource), or None when it is not in this message."""
        if not isinstance(ref, str) or not ref:
            return None
        if ref.startswith("#"):
            hit = self.contained.get(ref[1:])
            if hit is None:
                return None
            self.used_contained.add(ref[1:])
            return f"DiagnosticReport.contained[{hit[0]}]", hit[1]
        ref = ref.split("/_history/", 1)[0]
        i = self.msg.by_ref.get(ref)
        if i is None and "/" in ref:
            i = self.msg.by_ref.get("/".join(ref.rsplit("/", 2)[-2:]))  # absolute URL -> Type/id
        if i is None:
            return None
        self.used_entries.add(i)
        return f"{self.msg.path}.entry[{i}]", self.msg.entries[i]["resource"]

    def unused_contained(self) -> list[str]:
        return [
            f"DiagnosticReport.contained[{k}] {_type_name(c.get('resourceType'))}/{_id_name(cid)}: not referenced"
            for cid, (k, c) in self.contained.items()
            if cid not in self.used_contained
        ]

    def unused_entries(self) -> list[str]:
        unused = [i for i, e in enumerate(self.msg.entries) if i not in self.used_entries and isinstance(e.get("resource"), dict)]
        by_type: dict[str, list[int]] = defaultdict(list)
        for i in unused:
            by_type[_type_name(self.msg.entries[i]["resource"]["resourceType"])].append(i)
        return [f"{self.msg.path}.entry[{','.join(map(str, idx))}] {rtype}: not used by this report" for rtype, idx in by_type.items()]


# Elements of a companion resource that a report reads (plus the required ones, and every value[x] of an
# Observation so that two values are caught). Only these are validated: a fault elsewhere in a companion
# cannot cost the report, and validating less keeps a Bundle with companions near the speed of a lone report.
_READ_ELEMENTS = {
    "Observation": frozenset({"resourceType", "id", "status", "code", "note", "hasMember", "text"}),
    "Patient": frozenset({"resourceType", "id", "identifier"}),
    "ServiceRequest": frozenset(
        {"resourceType", "id", "status", "intent", "subject", "identifier", "requisition", "reasonCode",
         "reasonReference"}
    ),
}


def _usable(res: dict, where: str, expected: str, unmapped: list[str]) -> bool:
    """Elements a report reads must be valid; an invalid one is named, not used, and does not fail the report."""
    rtype = res.get("resourceType")
    name = f"{where} {_type_name(rtype)}" + (f"/{_id_name(res['id'])}" if isinstance(res.get("id"), str) else "")
    if rtype != expected:
        unmapped.append(f"{name}: expected {expected}, not used")
        return False
    keep = _READ_ELEMENTS[rtype]
    subset = {k: v for k, v in res.items() if k in keep or (rtype == "Observation" and k.startswith("value"))}
    try:
        _model_class(rtype, where, None).model_validate(subset)
    except MalformedMessage:
        raise
    except Exception as exc:  # pydantic ValidationError; named by path and error type only
        unmapped.append(f"{name}: invalid FHIR ({_first_error(exc)}), not used")
        return False
    return True


# -- sections of text -------------------------------------------------------------------------------------


def _result_texts(dr: dict, ctx: _Resolver, unmapped: list[str]) -> list[_Text]:
    texts: list[_Text] = []
    for i, result in enumerate(dr.get("result") or []):
        ref = result.get("reference") if isinstance(result, dict) else None
        name = f"DiagnosticReport.result[{i}] {_ref_name(ref) or 'reference'}"
        hit = ctx.resolve(ref)
        if hit is None:
            unmapped.append(f"{name}: not in this message")
            continue
        where, obs = hit
        if _usable(obs, where, "Observation", unmapped):
            texts.extend(_observation_texts(obs, name, ctx, unmapped, depth=0))
    return texts


def _observation_texts(obs: dict, name: str, ctx: _Resolver, unmapped: list[str], depth: int) -> list[_Text]:
    section = _observation_section(obs.get("code"))
    text = _observation_value(obs)
    if section is None:
        if depth < 3 and obs.get("hasMember"):
            out: list[_Text] = []
            for j, member in enumerate(obs["hasMember"]):
                mref = member.get("reference") if isinstance(member, dict) else None
                mname = f"{name}.hasMember[{j}] {_ref_name(mref) or 'reference'}"
                hit = ctx.resolve(mref)
                if hit is None:
                    unmapped.append(f"{mname}: not in this message")
                elif _usable(hit[1], hit[0], "Observation", unmapped):
                    out.extend(_observation_texts(hit[1], mname, ctx, unmapped, depth + 1))
            return out
        unmapped.append(f"{name} {_codes(obs.get('code')) or 'uncoded'}: not a report section")
        return []
    if not text:
        unmapped.append(f"{name} {_codes(obs.get('code'))}: {section} without text")
        return []
    return [_split(text, name, default=section, preamble_is_default=True)]


def _observation_section(code: Any) -> str | None:
    if not isinstance(code, dict):
        return None
    for c in code.get("coding") or []:
        if isinstance(c, dict) and c.get("system") == LOINC and c.get("code") in LOINC_SECTIONS:
            return LOINC_SECTIONS[c["code"]]
    labels = " ".join(filter(None, [code.get("text")] + [c.get("display") for c in code.get("coding") or [] if isinstance(c, dict)]))
    for section, pattern in _LABEL_SECTIONS:
        if pattern.search(labels):
            return section
    return None


def _observation_value(obs: dict) -> str | None:
    parts: list[str] = []
    if isinstance(obs.get("valueString"), str):
        parts.append(obs["valueString"])
    elif isinstance(obs.get("valueCodeableConcept"), dict):
        label = _concept_text(obs["valueCodeableConcept"])
        if label:
            parts.append(label)
    parts.extend(n["text"] for n in obs.get("note") or [] if isinstance(n, dict) and isinstance(n.get("text"), str))
    if not parts:
        narrative = obs.get("text")
        if isinstance(narrative, dict) and narrative.get("status") != "generated" and isinstance(narrative.get("div"), str):
            parts.append(html_to_text(narrative["div"]))
    text = "\n".join(p for p in parts if p.strip())
    return _unescape_newlines(text) or None


def _presented_form_texts(
    dr: dict, where: str, message_id: str | None, unmapped: list[str], limits: Limits
) -> list[_Text]:
    readable: list[tuple[int, str, str]] = []
    for i, att in enumerate(dr.get("presentedForm") or []):
        ctype = (att.get("contentType") or "").strip()
        kind = ctype.split(";", 1)[0].strip().lower()
        name = f"DiagnosticReport.presentedForm[{i}] {media_type_name(kind) if kind else 'no contentType'}"
        data = att.get("data")
        if not data:
            unmapped.append(f"{name}: " + ("by url only, cannot be read" if att.get("url") else "no data"))
            continue
        if kind and kind not in READABLE:
            unmapped.append(f"{name}: content type cannot be read")
            continue
        try:
            raw = base64.b64decode(data)
        except (binascii.Error, ValueError):
            raise MalformedMessage("presentedForm.data is not base64", where=f"{where}.presentedForm[{i}].data", message_id=message_id) from None
        try:
            kind, text = read_attachment(raw, ctype, limits=limits)
        except UnreadableAttachment as exc:
            unmapped.append(f"{name}: {exc}")
            continue
        readable.append((i, kind, text))
    if not readable:
        return []
    # Several renditions of the same report are common (plain + HTML); read one, name the others.
    readable.sort(key=lambda t: (PREFERENCE.index(t[1]), t[0]))
    i, kind, text = readable[0]
    for j, other, _ in readable[1:]:
        unmapped.append(f"DiagnosticReport.presentedForm[{j}] {other}: another rendition, not read")
    return [_split(text, f"DiagnosticReport.presentedForm[{i}] {kind}", default="findings", preamble_is_default=False)]


def _narrative_text(dr: dict) -> _Text | None:
    narrative = dr.get("text")
    if not isinstance(narrative, dict) or not isinstance(narrative.get("div"), str):
        return None
    text = html_to_text(narrative["div"])
    if narrative.get("status") == "generated" and "findings" not in split_sections(text).headings:
        # A generated narrative renders the structured fields (subject name and all): not report text.
        return None
    return _split(text, "DiagnosticReport.text", default="findings", preamble_is_default=False)


def _split(text: str, name: str, *, default: str, preamble_is_default: bool) -> _Text:
    """Split text by headings; text before the first heading belongs to `default` unless a heading claims it."""
    text, removed = _strip_signature(text)
    s = split_sections(text)
    sections: dict[str, str] = {}
    notes: list[str] = []
    for section in (*SECTION_FIELDS, "recommendation"):
        value = getattr(s, section, None)
        if value:
            sections[section] = value
    if s.preamble:
        if preamble_is_default or not s.has_headings or default not in sections:
            sections[default] = s.preamble + ("\n" + sections[default] if default in sections else "")
        else:
            notes.append(f"{name}: {len(s.preamble.splitlines())} line(s) before the first heading, not mapped")
    if removed:
        notes.append(f"{name}: {removed} sign-off line(s) removed")
    return _Text(name, sections, notes)


def _strip_signature(text: str) -> tuple[str, int]:
    lines = text.rstrip().splitlines()
    n = len(lines)
    while n and (not lines[n - 1].strip() or _SIGNATURE.match(lines[n - 1])):
        n -= 1
    # a sign-off block is trailing lines; a multi-line "Signed by ... Date ..." paragraph counts as one block
    removed = sum(1 for ln in lines[n:] if ln.strip())
    return "\n".join(lines[:n]), removed


def _unescape_newlines(text: str) -> str:
    # Some senders (US Core examples among them) put a literal backslash-n where they meant a line break.
    if "\n" not in text.strip() and "\\n" in text:
        text = text.replace("\\r\\n", "\n").replace("\\n", "\n")
    return text.strip()


# -- coded fields -----------------------------------------------------------------------------------------


def _radiology(dr: dict) -> tuple[bool, str]:
    """Is this an imaging report? Category first, then the report code, then a linked ImagingStudy."""
    categories = [c for cat in dr.get("category") or [] if isinstance(cat, dict) for c in cat.get("coding") or [] if isinstance(c, dict)]
    for c in categories:
        system, code = c.get("system"), c.get("code")
        if (system, code) in RAD_CATEGORY_CODES or (system in (V2_0074, None) and code in RAD_SECTIONS) or (
            system == DICOM and code in DICOM_MODALITIES
        ):
            return True, "category"
    code = dr.get("code") if isinstance(dr.get("code"), dict) else {}
    for c in code.get("coding") or []:
        if isinstance(c, dict) and c.get("system") == LOINC and c.get("code") in RAD_LOINC:
            return True, "code"
    labels = [code.get("text")] + [c.get("display") for c in code.get("coding") or [] if isinstance(c, dict)]
    labels += [cat.get("text") for cat in dr.get("category") or [] if isinstance(cat, dict)]
    labels += [c.get("display") for c in categories]
    for label in filter(None, labels):
        if isinstance(label, str) and (_IMAGING_WORDS.search(label) or _IMAGING_ACRONYMS.search(label)):
            return True, "code name"
    if dr.get("imagingStudy"):
        return True, "imagingStudy"
    cats = ", ".join(filter(None, (_coding_label(c) for c in categories))) or "none"
    return False, f"category {cats}; code {_codes(code) or 'uncoded'}"


def _self_reference(dr: dict, msg: _Message, entry_index: int | None) -> str | None:
    """How the draft points back at this report: ``DiagnosticReport/<id>``, else its entry's fullUrl."""
    rid = _str(dr.get("id"))
    if rid:
        return f"DiagnosticReport/{rid}"
    if entry_index is not None and entry_index < len(msg.entries):
        return _str(msg.entries[entry_index].get("fullUrl"))
    return None


def _modality(dr: dict) -> str | None:
    for cat in dr.get("category") or []:
        for c in (cat.get("coding") or []) if isinstance(cat, dict) else []:
            if c.get("system") in (V2_0074, DICOM) and c.get("code"):
                return c["code"]
    return None


def _procedure(code: Any) -> Coding | None:
    if not isinstance(code, dict):
        return None
    codings = [c for c in code.get("coding") or [] if isinstance(c, dict) and c.get("code")]
    if not codings:
        return Coding(display=code["text"]) if _str(code.get("text")) else None
    best = next((c for c in codings if c.get("system") == LOINC), codings[0])
    return Coding(system=best.get("system"), code=best.get("code"), display=best.get("display") or code.get("text"))


def _identifiers(values: Any, where: str, unmapped: list[str], *, default_type: str | None = None) -> list[Identifier]:
    out: list[Identifier] = []
    for i, ident in enumerate(values or []):
        if not isinstance(ident, dict):
            continue
        value = _str(ident.get("value"))
        if value is None:
            unmapped.append(f"{where}[{i}]: identifier without value")
            continue
        item = Identifier(value=value, system=_str(ident.get("system")), type_code=_type_code(ident) or default_type)
        if item not in out:
            out.append(item)
    return out


def _type_code(ident: dict) -> str | None:
    codings = _get(ident, "type", "coding") or []
    code = next((c.get("code") for c in codings if isinstance(c, dict) and c.get("system") == V2_0203), None)
    return code or next((c.get("code") for c in codings if isinstance(c, dict) and c.get("code")), None)


def _orders(dr: dict, ctx: _Resolver, identifiers: list[Identifier], unmapped: list[str]) -> tuple[list[str], str | None]:
    """basedOn -> order references, the accession (typed ACSN) and the indication from the order's reason."""
    based_on: list[str] = []
    order_ids: list[Identifier] = []
    requisitions: list[Identifier] = []
    reasons: list[str] = []
    for i, ref in enumerate(dr.get("basedOn") or []):
        if not isinstance(ref, dict):
            continue
        where = f"DiagnosticReport.basedOn[{i}]"
        if _str(ref.get("reference")):
            based_on.append(ref["reference"])
        if isinstance(ref.get("identifier"), dict):  # logical reference: in radiology, the accession number
            order_ids.extend(_identifiers([ref["identifier"]], f"{where}.identifier", unmapped, default_type="ACSN"))
        hit = ctx.resolve(ref.get("reference"))
        if hit is None:
            continue
        rwhere, order = hit
        if order.get("resourceType") != "ServiceRequest":
            unmapped.append(f"{where} {_type_name(order.get('resourceType'))}: order type not read")
            continue
        if not _usable(order, rwhere, "ServiceRequest", unmapped):
            continue
        order_ids.extend(_identifiers(order.get("identifier"), f"{rwhere}.identifier", unmapped))
        if isinstance(order.get("requisition"), dict):
            requisitions.extend(_identifiers([order["requisition"]], f"{rwhere}.requisition", unmapped))
        reasons.extend(filter(None, (_concept_text(rc) for rc in order.get("reasonCode") or [])))
        for rr in order.get("reasonReference") or []:
            if not isinstance(rr, dict):
                continue
            target = ctx.resolve(rr.get("reference"))
            label = _concept_text(target[1].get("code")) if target else None
            label = label or _str(rr.get("display"))
            if label:
                reasons.append(label)
            else:
                unmapped.append(f"{rwhere}.reasonReference {_ref_name(rr.get('reference')) or ''}: no readable reason")
    have_accession = any(i.type_code == "ACSN" for i in identifiers + order_ids)
    if not have_accession:
        # The order's requisition (or its own identifier) is the accession when nothing is typed ACSN.
        candidate = (requisitions or [i for i in order_ids if i.type_code in (None, "PLAC", "FILL")])[:1]
        for ident in candidate:
            promoted = Identifier(ident.value, ident.system, "ACSN")
            order_ids = [promoted if i == ident else i for i in order_ids]
            requisitions = [promoted if i == ident else i for i in requisitions]
    for ident in order_ids + requisitions:
        if ident not in identifiers:
            identifiers.append(ident)
    return based_on, "\n".join(dict.fromkeys(reasons)) or None


def _patient(subject: Any, ctx: _Resolver, unmapped: list[str]) -> tuple[Identifier | None, str | None]:
    if not isinstance(subject, dict):
        return None, None
    ref = _str(subject.get("reference"))
    ident = subject.get("identifier")
    if isinstance(ident, dict) and _str(ident.get("value")):
        return Identifier(ident["value"], _str(ident.get("system")), _type_code(ident)), ref
    hit = ctx.resolve(ref)
    if hit is None:
        return None, ref
    where, patient = hit
    if patient.get("resourceType") != "Patient" or not _usable(patient, where, "Patient", unmapped):
        return None, ref
    ids = _identifiers(patient.get("identifier"), f"{where}.identifier", [])
    best = next((i for i in ids if i.type_code == "MR"), ids[0] if ids else None)
    return best, ref


# -- small helpers ----------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _model_class_cached(rtype: str):
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(rtype)


def _model_class(rtype: str, where: str, message_id: str | None):
    try:
        return _model_class_cached(rtype)
    except (ValueError, KeyError):
        raise MalformedMessage("unknown FHIR R4 resourceType", where=where, message_id=message_id) from None


def _validate(resource: dict, where: str, message_id: str | None) -> None:
    try:
        _model_class(resource["resourceType"], where, message_id).model_validate(resource)
    except MalformedMessage:
        raise
    except Exception as exc:
        loc, kind = _error_loc(exc)
        raise MalformedMessage(f"invalid {resource['resourceType']} ({kind})", where=f"{where}{loc}", message_id=message_id) from None


def _error_loc(exc: Exception) -> tuple[str, str]:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return "", type(exc).__name__
    first = errors(include_input=False, include_url=False)[0]
    kind = first.get("type", "invalid")
    parts = list(first.get("loc", ()))
    # pydantic walks only known elements, except an unknown key it refuses (the last part): a sender's text
    loc = "".join(
        f"[{p}]" if isinstance(p, int)
        else f".{p}" if _ELEMENT.fullmatch(str(p)) and not (kind == "extra_forbidden" and n == len(parts) - 1)
        else ".<unknown element>"
        for n, p in enumerate(parts)
    )
    return loc, kind


def _first_error(exc: Exception) -> str:
    loc, kind = _error_loc(exc)
    return f"{loc.lstrip('.')}: {kind}" if loc else kind


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _str(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    v = value.strip()
    if len(v) == 4:
        v += "-01-01"
    elif len(v) == 7:
        v += "-01"
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None


def _concept_text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    if _str(concept.get("text")):
        return concept["text"].strip()
    displays = [c["display"].strip() for c in concept.get("coding") or [] if isinstance(c, dict) and _str(c.get("display"))]
    return displays[0] if displays else None


_SYSTEM_NAMES = {LOINC: "LOINC", SNOMED: "SNOMED", V2_0074: "v2-0074", DICOM: "DICOM"}


def _coding_label(c: dict) -> str | None:
    """``LOINC 36643-5``: a system by our name (any other is "local"), a code only when standard-shaped."""
    if not c.get("code"):
        return None
    system = c.get("system")
    return f"{_SYSTEM_NAMES.get(system, 'local')} {safe_code(str(c['code']))}"


def _codes(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    return ", ".join(filter(None, (_coding_label(c) for c in concept.get("coding") or [] if isinstance(c, dict))))


def _ref_name(ref: Any) -> str | None:
    """A reference shortened to Type/id (or #id, urn:uuid:...) for naming in unmapped; a part that is not a FHIR
    type or id (a sender's text) is replaced by a placeholder."""
    if not isinstance(ref, str) or not ref:
        return None
    if ref.startswith("#"):
        return f"#{_id_name(ref[1:])}"
    if ref.startswith("urn:"):
        return ref if _URN.fullmatch(ref) else "urn:<non-standard>"
    parts = ref.split("/_history/", 1)[0].rsplit("/", 2)[-2:]
    if len(parts) < 2:
        return "<non-standard reference>"
    return f"{_type_name(parts[0])}/{_id_name(parts[1])}"


_ELEMENT = re.compile(r"_?[A-Za-z][A-Za-z0-9]{0,63}")  # an element name's shape (validation already knew it)
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_URN = re.compile(r"urn:uuid:[0-9A-Fa-f\-]{36}|urn:oid:[0-9.]{1,64}")


def _id_name(value: Any) -> str:
    return value if isinstance(value, str) and _FHIR_ID.fullmatch(value) else NON_STANDARD_ID


def _type_name(rtype: Any) -> str:
    """A resourceType for a note: the name of a FHIR R4 type, else a placeholder (the value is the sender's)."""
    if isinstance(rtype, str) and _ELEMENT.fullmatch(rtype):
        try:
            _model_class_cached(rtype)
            return rtype
        except (ValueError, KeyError):
            pass
    return "<unknown resourceType>"


def _count_types(indices, entries: list[dict]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for i in indices:
        res = entries[i].get("resource")
        if isinstance(res, dict):
            counts[_type_name(res["resourceType"])] += 1
    return ", ".join(f"{n} {t}" for t, n in counts.items())
