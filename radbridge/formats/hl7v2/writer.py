"""A draft impression as an HL7 v2.5.1 ORU^R01, for receivers that take results over v2 rather than FHIR.

One message per report: MSH, PID, ORC, OBR (result status ``P``), one OBX with LOINC 19005-8 "Impression"
(result status ``P``), and an NTE under it saying the text is AI-written and needs radiologist review.

Line breaks: HL7 v2 defines the ``\\.br\\`` formatting command for FT only; in TX a hard line break is a
repetition (``~``). So the OBX is FT with ``\\.br\\`` by default, or TX with one repetition per line
(``value_type="TX"``); both keep every character of the draft (delimiters escaped as ``\\F\\ \\S\\ \\T\\
\\R\\ \\E\\``, control characters as ``\\Xhh\\``).

Identifiers go where a radiology receiver looks for them: placer order number in OBR-2, filler order number
(else the accession) in OBR-3, the accession in OBR-18. MSH-10 is derived from the report key, so a
redelivered report yields the same message and receivers can drop the duplicate.

Written by hand rather than through hl7apy's element tree: building that tree costs milliseconds per message,
and the escaping rules needed here are few. The tests parse every message back with hl7apy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ...domain import Coding, Draft, Identifier
from ...ids import device_id, message_control_id
from .codes import CODING_SYSTEMS
from .er7 import escape

VERSION = "2.5.1"
IMPRESSION_CODE = "19005-8^Impression^LN"
REVIEW_NOTICE = "AI-generated draft; requires radiologist review."
# FHIR system URI -> HL7 v2 coding system name (table 0396); the first name listed per URI is the canonical one.
_V2_NAMES: dict[str, str] = {}
for _name, _uri in CODING_SYSTEMS.items():
    _V2_NAMES.setdefault(_uri, _name)


def build_oru(
    draft: Draft,
    *,
    recorded: datetime,
    sending_app: str = "RADBRIDGE",
    sending_facility: str = "",
    receiving_app: str = "",
    receiving_facility: str = "",
    processing_id: str = "P",
    value_type: Literal["FT", "TX"] = "FT",
) -> bytes:
    """The ORU^R01 carrying one draft impression, segments separated by ``\\r``, UTF-8."""
    report = draft.report
    ids = {i.type_code: i for i in report.identifiers if i.type_code}
    placer, filler, accession = ids.get("PLAC"), ids.get("FILL"), ids.get("ACSN")
    when = _dtm(recorded)
    effective = _dtm(report.effective) if report.effective else ""
    model = draft.model.base_model + (f" + {draft.model.adapter}" if draft.model.adapter else "")

    msh = [
        "MSH", "^~\\&", escape(sending_app), escape(sending_facility), escape(receiving_app),
        escape(receiving_facility), when, "", "ORU^R01^ORU_R01", message_control_id(report.source.key),
        processing_id, VERSION, "", "", "", "", "", "UNICODE UTF-8",
    ]
    pid = ["PID", "1", "", _cx(report.patient) if report.patient else ""]
    orc = ["ORC", "RE", _ei(placer), _ei(filler or accession)]
    obr = [""] * 26
    obr[0:5] = ["OBR", "1", _ei(placer), _ei(filler or accession), _ce(report.procedure)]
    obr[7] = effective
    obr[18] = escape(accession.value) if accession else ""
    obr[22] = when
    obr[24] = "RAD"
    obr[25] = "P"
    obx = [""] * 20
    obx[0:6] = ["OBX", "1", value_type, IMPRESSION_CODE, "1", _text_value(draft.impression.strip(), value_type)]
    obx[11] = "P"
    obx[14] = effective
    obx[18] = f"{device_id(draft.model)}^RADBRIDGE"
    obx[19] = when
    how = f"{REVIEW_NOTICE} Model: {model}; prompt {draft.prompt_version}."
    if draft.extra.get("wording") == "nearest-example":
        how += " Wording taken from the most similar prior report (the model found nothing abnormal)."
    elif draft.extra.get("wording") == "selected-example":
        how += (" Wording taken from a similar prior report: of the model's draft and the most similar prior reports,"
                " it agreed best with the others and with the findings.")
    nte = ["NTE", "1", "O", escape(how)]
    # Each problem the checker found, as its own note after the draft (NTE-4 comment type RE: remark): the
    # observation and sides only, never report text.
    flags = [
        ["NTE", str(i), "O", escape(f"CHECK {f.severity.upper()} {f.kind.value}: {f.detail}"), "RE"]
        for i, f in enumerate(draft.flags, start=2)
    ]
    segments = [msh, pid, orc, obr, obx, nte, *flags]
    return ("\r".join("|".join(s).rstrip("|") for s in segments) + "\r").encode("utf-8")


def _text_value(text: str, value_type: str) -> str:
    if value_type == "FT":
        return escape(text)
    if value_type == "TX":
        return "~".join(escape(line) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    raise ValueError(f"OBX value type must be FT or TX, not {value_type!r}")


def _dtm(value: datetime) -> str:
    stamp = value.strftime("%Y%m%d%H%M%S")
    offset = value.strftime("%z")  # empty for a naive datetime: v2 allows a time without offset
    return stamp + offset


def _ei(ident: Identifier | None) -> str:
    if ident is None:
        return ""
    if ident.system and ":" in ident.system:
        return f"{escape(ident.value)}^^{escape(ident.system)}^URI"
    return f"{escape(ident.value)}^{escape(ident.system or '')}".rstrip("^")


def _cx(ident: Identifier) -> str:
    if ident.system and ":" in ident.system:
        authority = f"&{escape(ident.system)}&URI"
    else:
        authority = escape(ident.system or "")
    return f"{escape(ident.value)}^^^{authority}^{escape(ident.type_code or '')}".rstrip("^")


def _ce(coding: Coding | None) -> str:
    if coding is None:
        return ""
    system = coding.system or ""
    system = _V2_NAMES.get(system, system if ":" not in system else "")
    return "^".join([escape(coding.code or ""), escape(coding.display or ""), escape(system)]).rstrip("^")
