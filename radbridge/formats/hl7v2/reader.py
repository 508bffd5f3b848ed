"""HL7 v2 ORU^R01 -> radbridge Reports (one per radiology OBR group) or Skipped, each with its reason.

Reading rules worth knowing (details in hl7v2_codes for vocabulary, hl7v2_er7 for the encoding):
- Report text is every textual OBX (TX/FT/ST, and ED documents: PDF, RTF, HTML or plain text, read by
  radbridge.attachments) of the group, joined in OBX order whatever its type. OBX-3
  names its section (LOINC, ``&IMP``-style suffixes, or the code's name); uncoded or whole-report text is
  split by its headings, and with no heading at all it is the findings.
- Short coded text results (a measurement such as "Liver Mass: 4mmx6mm") join the findings with their
  name as a label; coded values (CE/CWE), numbers, images, RP pointers (never fetched) and unreadable ED
  documents are named in ``unmapped``, and in the skip reason when the report had no other text.
- Every segment and OBX that does not land in a Report field is named in ``Report.unmapped`` by position and
  code. Errors, skip details and notes never quote what the sender wrote (names, displays, free text): only
  positions, our own vocabulary and code values of a standard shape (``radbridge.redact.safe_code``).
- Accession number: IPC-1 when present, else OBR-18 (IHE placer field 1), else the filler order number
  OBR-3, which most RIS use as the accession.
- Character set: MSH-18 (table 0211: ASCII, ISO 8859 parts, UTF-8, ISO IR87, GB 18030, KS X 1001, BIG-5)
  when the bytes agree with it, else the bytes decide (UTF-8, else Windows-1252). Every fallback is named
  in ``unmapped``. UTF-16/32 are not read.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime

from ..attachments import UnreadableAttachment, read_attachment
from ...domain import Coding, Identifier, Report, SkipReason, Skipped, SourceRef, sha256_of
from ...errors import MalformedMessage
from ...limits import DEFAULT_LIMITS, Limits, on_time
from ...redact import safe_code
from ...sections import split_sections
from ..framing import unframe
from . import codes
from .er7 import (
    Delimiters,
    Segment,
    first_version_defining,
    parse_dtm,
    read_delimiters,
    repetitions,
    resolve_version,
    segments_of,
    split_segments,
    split_stream,
    unescape,
)

__all__ = ["Message", "parse", "read_hl7v2", "split_hl7_stream"]

# Segments that begin a new order group or a new patient, closing the current OBR group.
_PATIENT_LEVEL = {"PID", "PD1", "PV1", "PV2", "NK1", "GT1", "IN1", "AL1", "DG1"}
_LABEL_MAX = 60  # a coded text result this short reads as "Name: value" inside the findings


def split_hl7_stream(data: bytes) -> list[bytes]:
    """One file or payload -> the bytes of each HL7 v2 message in it (MLLP, BOM and FHS/BHS batches undone)."""
    return split_stream(data)


# ---------------------------------------------------------------------------------------------------------
# Parsed structure


@dataclass
class Group:
    """One OBR with what follows it (ORC before it, OBX/NTE/... after it) and the patient it is about."""

    index: int
    obr: Segment
    pid: Segment | None
    orc: Segment | None = None
    members: list[Segment] = field(default_factory=list)  # everything after the OBR, in order


@dataclass
class Message:
    delims: Delimiters
    segments: list[Segment]
    message_id: str | None
    message_type: str  # MSH-9.1
    trigger: str  # MSH-9.2
    declared_version: str
    version: str  # the hl7apy version whose tables were used
    charset: str
    header: list[Segment]  # segments not inside any OBR group, in order
    groups: list[Group]
    notes: list[str]  # message-level remarks for `unmapped` (version fallback, unknown segments)

    def text(self, value: str) -> str:
        return unescape(value, self.delims, charset=self.charset)

    def comp(self, value: str, n: int) -> str:
        """Component n of the first repetition, unescaped."""
        first = value.split(self.delims.repetition, 1)[0]
        parts = first.split(self.delims.component)
        return self.text(parts[n - 1]) if n <= len(parts) else ""


def _declared_charset(body: bytes) -> str:
    """MSH-18's first repetition (the message's character set), read from the ASCII-compatible first line."""
    first_line = body.split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    if not first_line.startswith("MSH") or len(first_line) < 8:
        return ""
    fields = first_line.split(first_line[3])
    if len(fields) < 18:
        return ""
    return fields[17].split(first_line[5], 1)[0].strip().upper()  # MSH-2's second character: repetition


def _decode(data: bytes) -> tuple[str, str, list[str]]:
    """The message's text, the codec that read it, and remarks for `unmapped`.

    MSH-18 decides when it names a character set we can read and the bytes agree with it; otherwise the
    bytes decide (UTF-8 when they are valid UTF-8, else Windows-1252), and the reader says so. A wrong or
    missing MSH-18 is common, so it never makes a message unreadable.
    """
    body = data  # already unframed: no BOM
    declared = _declared_charset(body)
    codec = codes.CHARSETS.get(declared)
    if codec:
        try:
            return body.decode(codec), codec, []
        except UnicodeDecodeError:
            pass
    try:
        text, used = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        # Pre-Unicode senders (MSH-18 8859/1 or nothing) send Latin-1/Windows-1252; decoding that way
        # never fails, so a stray byte cannot make a whole report unreadable.
        text, used = body.decode("cp1252", errors="replace"), "cp1252"
    if codec:
        notes = [f"bytes do not match MSH-18 {declared}: read as {used}"]  # declared is one of ours (CHARSETS)
    elif declared in codes.TABLE_0211:
        notes = [f"MSH-18 character set {declared} not supported: read as {used}"]
    elif declared:
        notes = [f"MSH-18 character set not in HL7 table 0211: read as {used}"]
    elif used != "utf-8":
        notes = [f"bytes are not UTF-8: read as {used}"]
    else:
        notes = []
    return text, used, notes


def parse(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Tokenise one message and group its segments. Raises MalformedMessage or LimitExceeded."""
    limits.check("max_message_bytes", len(data))
    text, charset, charset_notes = _decode(unframe(data))
    text = text.strip().lstrip("\ufeff")
    if not text:
        raise MalformedMessage("empty message", where="segment 1")
    if not text.startswith("MSH"):
        raise MalformedMessage("message does not start with an MSH segment", where="segment 1")
    first_line = text.replace("\n", "\r").split("\r", 1)[0]
    delims = read_delimiters(first_line)
    msh_fields = ["MSH", delims.field, *first_line.split(delims.field)[1:]]
    message_id = msh_fields[10].strip() if len(msh_fields) > 10 and msh_fields[10].strip() else None
    segments = split_segments(text, delims, message_id=message_id, max_segments=limits.max_segments)
    msh = segments[0]

    msh9 = msh[9]
    mtype = msh9.split(delims.component)
    message_type = mtype[0].strip().upper()
    trigger = mtype[1].strip().upper() if len(mtype) > 1 else ""
    if not message_type:
        raise MalformedMessage("missing message type", message_id=message_id, where="MSH-9")

    notes: list[str] = []
    declared = msh[12].split(delims.component)[0].strip()
    if not declared:
        version = "2.5.1"
        notes.append("MSH-12 empty: read with HL7 2.5.1 tables")
    else:
        resolved = resolve_version(declared)
        if resolved is None:
            raise MalformedMessage("not an HL7 v2 version", message_id=message_id, where="MSH-12")
        version = resolved
        if resolved != declared:
            notes.append(f"MSH-12 version {safe_code(declared)} read with HL7 {resolved} tables")
    notes.extend(charset_notes)

    header, groups = _group(segments)
    return Message(
        delims=delims,
        segments=segments,
        message_id=message_id,
        message_type=message_type,
        trigger=trigger,
        declared_version=declared,
        version=version,
        charset=charset,
        header=header,
        groups=groups,
        notes=notes,
    )


def _group(segments: list[Segment]) -> tuple[list[Segment], list[Group]]:
    header: list[Segment] = []
    groups: list[Group] = []
    pid: Segment | None = None
    pending_orc: Segment | None = None
    current: Group | None = None
    for seg in segments:
        on_time()
        name = seg.name
        if name == "OBR":
            current = Group(index=len(groups), obr=seg, pid=pid, orc=pending_orc)
            pending_orc = None
            groups.append(current)
        elif name == "ORC":
            if pending_orc is not None:
                header.append(pending_orc)  # an ORC with no OBR of its own
            pending_orc = seg
            current = None
        elif name in _PATIENT_LEVEL:
            if name == "PID":
                pid = seg
            current = None
            header.append(seg)
        elif current is not None:
            current.members.append(seg)
        else:
            header.append(seg)
    if pending_orc is not None:
        header.append(pending_orc)
    return header, groups


# ---------------------------------------------------------------------------------------------------------
# Reading


def read_hl7v2(
    data: bytes, *, location: str | None = None, received_at: datetime | None = None, limits: Limits = DEFAULT_LIMITS
) -> list[Report | Skipped]:
    """One HL7 v2 message -> a Report per radiology OBR group, or Skipped with the reason. Never empty.

    Raises MalformedMessage, or LimitExceeded when the message is over one of ``limits``."""
    msg = parse(data, limits)
    msh = msg.segments[0]
    message_time = parse_dtm(msh[7]) or received_at
    sha = sha256_of(data)

    def source(index: int) -> SourceRef:
        return SourceRef(
            format="hl7v2",
            sha256=sha,
            message_id=msg.message_id,
            index=index,
            location=location,
            message_time=message_time,
        )

    if msg.message_type != "ORU":
        kind = f"{safe_code(msg.message_type)}^{safe_code(msg.trigger)}" if msg.trigger else safe_code(msg.message_type)
        return [Skipped(source(0), SkipReason.NOT_A_RESULT, f"message type {kind} at MSH-9 is not an ORU result")]
    if not msg.groups:
        raise MalformedMessage("ORU message without an OBR segment", message_id=msg.message_id, where="OBR")
    limits.check("max_reports", len(msg.groups), where=f"OBR[{len(msg.groups)}]")

    header_unmapped = list(msg.notes) + _name_segments(msg, [s for s in msg.header if s.name not in ("MSH", "PID")])
    out: list[Report | Skipped] = []
    for group in msg.groups:
        out.append(_read_group(msg, group, source(group.index), header_unmapped, limits))
    return out


def _code_summary(msg: Message, value: str) -> str:
    """code^system of a CE/CWE for `unmapped`: standard-shaped values only, never the code's name (a display is
    free text a sender controls)."""
    code, name, system = msg.comp(value, 1), msg.comp(value, 2), msg.comp(value, 3)
    if not code.strip():
        return "(name only)" if name.strip() else ""
    return safe_code(code) + (f"^{safe_code(system)}" if system.strip() else "")


def _name_segments(msg: Message, segments: list[Segment]) -> list[str]:
    counts: dict[str, int] = {}
    names: list[str] = []
    known = segments_of(msg.version)
    for seg in segments:  # segment names are three letters or digits (split_segments refuses others)
        counts[seg.name] = counts.get(seg.name, 0) + 1
        label = f"{seg.name}[{counts[seg.name]}]"
        if seg.name not in known:
            if seg.name.startswith("Z"):
                label += " (Z-segment)"
            else:
                defined_in = first_version_defining(seg.name)
                if defined_in:
                    label += f" (HL7 {defined_in} segment, not in {msg.version}; kept unparsed)"
                else:
                    label += " (segment unknown to every HL7 version; kept unparsed)"
        names.append(label)
    return names


@dataclass
class _Text:
    kind: str  # a section kind from hl7v2_codes, or REPORT for text to split by headings
    text: str


class _LazyLabel:
    """An OBX's name for `unmapped`, built only if it is needed (most OBX land in the report)."""

    __slots__ = ("msg", "obx", "ordinal")

    def __init__(self, msg: Message, obx: Segment, ordinal: int):
        self.msg, self.obx, self.ordinal = msg, obx, ordinal

    def __format__(self, spec: str) -> str:
        summary = _code_summary(self.msg, self.obx[3])
        vtype = self.obx[2].strip()
        return f"OBX[{self.ordinal}] {safe_code(vtype) if vtype else '?'}" + (f" {summary}" if summary else "")


def _read_group(
    msg: Message, group: Group, src: SourceRef, header_unmapped: list[str], limits: Limits
) -> Report | Skipped:
    obr = group.obr
    where = f"OBR[{group.index + 1}]"
    obxs = [s for s in group.members if s.name == "OBX"]

    verdict = _classify(msg, obr, obxs)
    if verdict is not None:
        return Skipped(src, SkipReason.NOT_RADIOLOGY, f"{where}: {verdict}")

    unmapped: list[str] = list(header_unmapped)
    if obr[24].strip() and _modality(msg, obr) is None:
        unmapped.append("OBR-24 (not a radiology service section code)")
    if group.orc is not None and not _orc_used(group):
        unmapped.append(f"ORC[{group.index + 1}]")
    texts: list[_Text] = []
    obx_statuses: list[str] = []
    unread: list[str] = []  # attachments that could not be read, named by kind
    for ordinal, obx in enumerate(obxs, start=1):
        vtype = obx[2].strip().upper()
        code, name = msg.comp(obx[3], 1), msg.comp(obx[3], 2)
        status = obx[11].strip().upper()
        label = _LazyLabel(msg, obx, ordinal)
        if status in codes.EXCLUDED_OBX_STATUSES:
            unmapped.append(f"{label} (result status {status}: not used)")
            continue
        if status:
            obx_statuses.append(status)
        if vtype in ("ED", "RP"):
            value = _attachment_text(msg, vtype, obx[5], label, unread, limits)
            if value is None:
                continue
        elif vtype in codes.TEXT_TYPES:
            value = "\n".join(msg.text(rep) for rep in repetitions(obx[5], msg.delims))
        else:
            what = "coded value" if vtype in ("CE", "CWE", "CNE", "CF") else "value"
            if obx[5].strip():
                unmapped.append(f"{label} ({what})")
            continue
        kind = codes.section_of(code, name)
        if kind in (codes.REFERENCE, codes.RECOMMENDATION, codes.ADDENDUM):
            if value.strip():
                unmapped.append(f"{label} ({kind})")
            continue
        if kind is None and (code or name):
            # A coded text observation that is not a report section, e.g. a measurement.
            units = msg.comp(obx[6], 1)
            short = "\n" not in value and len(value) <= _LABEL_MAX
            if name and short and value.strip():
                value = f"{name}: {value.strip()}" + (f" {units}" if units and units not in value else "")
            kind = codes.REPORT
        texts.append(_Text(kind or codes.REPORT, value))

    unmapped.extend(unread)
    other = [s for s in group.members if s.name != "OBX"]
    if not any(t.text.strip() for t in texts):
        # Some RIS send the report as NTE comments under the OBR; use them only when there is no OBX text.
        notes = [msg.text(s[3]) for s in other if s.name == "NTE"]
        if any(n.strip() for n in notes):
            texts.append(_Text(codes.REPORT, "\n".join(notes)))
            other = [s for s in other if s.name != "NTE"]
    unmapped.extend(_name_segments(msg, other))
    # before the section split and long before any prompt: a 20 MB OBX is refused, not drafted
    limits.check("max_text_chars", sum(len(t.text) for t in texts), where=where)

    sections = _assemble(texts, unmapped)
    indication = sections.get(codes.INDICATION) or _obr_indication(msg, obr)
    if not sections.get(codes.FINDINGS):
        # Say why when the report was an attachment that could not be read (named by kind, never quoted).
        return Skipped(src, SkipReason.NO_FINDINGS, f"{where}: radiology report without findings text" + "".join(f"; {u}" for u in unread))

    return Report(
        source=src,
        status=_status(obr[25], obx_statuses),
        procedure=_coding(msg, obr[4]),
        patient=_patient(msg, group.pid),
        identifiers=_identifiers(msg, group),
        effective=parse_dtm(obr[7]) or parse_dtm(obr[8]),
        modality=_modality(msg, obr),
        indication=indication,
        comparison=sections.get(codes.COMPARISON),
        technique=sections.get(codes.TECHNIQUE),
        findings=sections.get(codes.FINDINGS),
        impression=sections.get(codes.IMPRESSION),
        interpreter=msg.comp(obr[32], 1).split(msg.delims.subcomponent)[0].strip() or None,  # OBR-32.1.1: the id
        unmapped=tuple(unmapped),
    )


def _modality(msg: Message, obr: Segment) -> str | None:
    section = obr[24].split(msg.delims.component)[0].strip()
    return section if section.upper() in codes.RADIOLOGY_SECTIONS else None


def _orc_used(group: Group) -> bool:
    # ORC-2/ORC-3 stand in for empty OBR-2/OBR-3.
    return bool(group.orc and ((not group.obr[2] and group.orc[2]) or (not group.obr[3] and group.orc[3])))


_SECTION_FIELDS = (codes.FINDINGS, codes.IMPRESSION, codes.INDICATION, codes.COMPARISON, codes.TECHNIQUE)


def _assemble(texts: list[_Text], unmapped: list[str]) -> dict[str, str]:
    """Turn OBX texts (in OBX order) into sections.

    Consecutive whole-report texts are joined and split by their headings (no heading: all findings).
    Text coded as a section is still searched for headings, so "IMPRESSION:" inside a findings OBX starts
    the impression; text before its first heading belongs to the coded section.
    """
    parts: dict[str, list[str]] = {}
    blocks: list[_Text] = []
    for t in texts:
        if blocks and blocks[-1].kind == t.kind:
            blocks[-1] = _Text(t.kind, blocks[-1].text + "\n" + t.text)
        else:
            blocks.append(_Text(t.kind, t.text))
    for block in blocks:
        sec = split_sections(block.text)
        default = codes.FINDINGS if block.kind == codes.REPORT else block.kind
        if sec.preamble:
            parts.setdefault(default, []).append(sec.preamble)
        for name in _SECTION_FIELDS:
            value = getattr(sec, name)
            if value:
                parts.setdefault(name, []).append(value)
        if sec.recommendation:
            unmapped.append("recommendation text (under a heading)")
    return {k: "\n".join(v) for k, v in parts.items()}


def _obr_indication(msg: Message, obr: Segment) -> str | None:
    reasons = []
    for rep in repetitions(obr[31], msg.delims):
        parts = rep.split(msg.delims.component)
        text = msg.text(parts[1] if len(parts) > 1 and parts[1] else parts[0])
        if text.strip():
            reasons.append(text.strip())
    clinical = msg.text(obr[13]).strip()
    if clinical:
        reasons.append(clinical)
    return "\n".join(reasons) or None


def _attachment_text(
    msg: Message, vtype: str, value: str, label: _LazyLabel, unread: list[str], limits: Limits
) -> str | None:
    """Text of an ED observation (a report sent as a PDF, RTF, HTML or plain-text document), or None when there
    is none; what is not read is named in ``unread``. An RP (a pointer to a document elsewhere) is never
    fetched: radbridge reads what the message carries.

    ED components: 1 source application, 2 type of data (TEXT, AP, ...), 3 subtype (PDF, RTF, HTML, PLAIN or a
    MIME type), 4 encoding (Base64, Hex, A for ASCII text), 5 the data.
    """
    if not value.strip():
        return None
    if vtype == "RP":
        unread.append(f"{label} (reference pointer: the document is elsewhere, not fetched)")
        return None
    parts = value.split(msg.delims.repetition, 1)[0].split(msg.delims.component)
    parts += [""] * (5 - len(parts))
    subtype, encoding = parts[2].strip(), parts[3].strip().upper()
    data = msg.text(parts[4]) if encoding in ("A", "") else "".join(parts[4].split())
    if "/" in subtype:
        media_type = subtype.lower()
    elif subtype:
        media_type = codes.ED_SUBTYPES.get(subtype.upper(), "")
        if not media_type:
            unread.append(f"{label} (attachment subtype {safe_code(subtype.upper())} at ED-3 cannot be read)")
            return None
    else:  # no subtype: text when ED-2 or the encoding says so, a PDF when the bytes are one, else not read
        media_type = "text/plain" if parts[1].strip().upper() == "TEXT" else ""
    try:
        if encoding == "BASE64":
            raw = base64.b64decode(data, validate=True)
        elif encoding == "HEX":
            raw = bytes.fromhex(data)
        elif encoding in ("A", ""):
            raw = data.encode("utf-8")
            media_type = media_type or "text/plain"
        else:
            unread.append(f"{label} (attachment encoding {safe_code(encoding)} at ED-4 not known)")
            return None
    except (binascii.Error, ValueError):
        unread.append(f"{label} (attachment data is not valid {encoding.title()})")
        return None
    if not media_type and raw[:5] != b"%PDF-":
        unread.append(f"{label} (attachment without a data subtype)")
        return None
    try:
        _, text = read_attachment(raw, media_type, "utf-8" if encoding in ("A", "") else None, limits=limits)
    except UnreadableAttachment as exc:
        unread.append(f"{label} ({exc})")
        return None
    return text


def _status(obr25: str, obx_statuses: list[str]) -> str:
    code = obr25.strip().upper()[:1]
    if code in codes.RESULT_STATUS:
        return codes.RESULT_STATUS[code]
    # No report status: the OBX statuses decide; any unfinished line makes the report not final.
    mapped = {codes.RESULT_STATUS.get(s[:1], "unknown") for s in obx_statuses}
    for status in ("preliminary", "partial", "registered", "corrected", "amended", "final"):
        if status in mapped:
            return status
    return "unknown"


def _coding(msg: Message, value: str) -> Coding | None:
    code, display, system = msg.comp(value, 1), msg.comp(value, 2), msg.comp(value, 3)
    if not code and not display:
        code, display, system = msg.comp(value, 4), msg.comp(value, 5), msg.comp(value, 6)
    if not code and not display:
        return None
    return Coding(system=codes.coding_system_uri(system), code=code or None, display=display or None)


def _authority(msg: Message, hd: str) -> str | None:
    """An HD (namespace&universal id&type) as a system: urn:oid for ISO OIDs, else the namespace."""
    parts = [msg.text(p) for p in hd.split(msg.delims.subcomponent)]
    namespace = parts[0].strip() if parts else ""
    universal = parts[1].strip() if len(parts) > 1 else ""
    utype = parts[2].strip().upper() if len(parts) > 2 else ""
    if universal and utype == "ISO":
        return f"urn:oid:{universal}"
    if universal and utype in ("URI", "URL"):
        return universal
    return namespace or universal or None


def _patient(msg: Message, pid: Segment | None) -> Identifier | None:
    if pid is None:
        return None
    for n in (3, 2, 4):  # PID-2/PID-4 carried the MRN in some pre-2.5 feeds
        first = pid[n].split(msg.delims.repetition, 1)[0]
        parts = first.split(msg.delims.component)
        value = msg.text(parts[0]).strip()
        if value:
            authority = _authority(msg, parts[3]) if len(parts) > 3 else None
            type_code = msg.text(parts[4]).strip() if len(parts) > 4 else ""
            return Identifier(value=value, system=authority, type_code=type_code or ("MR" if n != 4 else None))
    return None


def _ei(msg: Message, value: str, type_code: str) -> Identifier | None:
    """An EI (entity id^namespace^universal id^type) as an Identifier."""
    parts = value.split(msg.delims.repetition, 1)[0].split(msg.delims.component)
    entity = msg.text(parts[0]).strip()
    if not entity:
        return None
    system = None
    if len(parts) > 2 and parts[2].strip() and len(parts) > 3 and parts[3].strip().upper() == "ISO":
        system = f"urn:oid:{msg.text(parts[2]).strip()}"
    elif len(parts) > 1 and parts[1].strip():
        system = msg.text(parts[1]).strip()
    return Identifier(value=entity, system=system, type_code=type_code)


def _identifiers(msg: Message, group: Group) -> tuple[Identifier, ...]:
    obr, orc = group.obr, group.orc
    placer = _ei(msg, obr[2] or (orc[2] if orc else ""), "PLAC")
    filler = _ei(msg, obr[3] or (orc[3] if orc else ""), "FILL")
    accession = None
    ipc = next((s for s in group.members if s.name == "IPC"), None)
    if ipc is not None:
        accession = _ei(msg, ipc[1], "ACSN")
    if accession is None and obr[18].strip():
        accession = Identifier(value=msg.comp(obr[18], 1).strip(), type_code="ACSN")
    if accession is None and filler is not None:
        accession = Identifier(value=filler.value, system=filler.system, type_code="ACSN")
    return tuple(i for i in (accession, placer, filler) if i is not None)


def _classify(msg: Message, obr: Segment, obxs: list[Segment]) -> str | None:
    """None for a radiology report, else why not (codes only, never report text)."""
    section = obr[24].split(msg.delims.component)[0].strip().upper()
    proc_code, proc_text = msg.comp(obr[4], 1), msg.comp(obr[4], 2)
    proc_alt = msg.comp(obr[4], 5)
    procedure_words = " ".join(p for p in (proc_text, proc_alt) if p)
    shown = f"OBR-24 {safe_code(section) if section else 'empty'}, OBR-4 code {safe_code(proc_code) if proc_code.strip() else 'empty'}"
    if section in codes.LAB_SECTIONS:
        return f"laboratory service section ({shown})"
    if section in codes.CARDIOLOGY_SECTIONS or codes.is_cardiology_procedure_text(procedure_words):
        return f"cardiology procedure, not radiology ({shown})"
    if section in codes.RADIOLOGY_SECTIONS:
        return None
    if codes.is_radiology_procedure_text(procedure_words):
        return None
    for obx in obxs:
        code = msg.comp(obx[3], 1).strip()
        kind = codes.LOINC_SECTIONS.get(code)
        if kind is not None and kind != codes.REFERENCE and code not in ("11329-0", "55752-0"):
            return None
        if "&" in code and code.rsplit("&", 1)[1].upper() in codes.SUFFIX_SECTIONS:
            return None
        if codes.is_radiology_procedure_text(msg.comp(obx[3], 2)):
            return None
    return f"no radiology service section, procedure or report-section code ({shown})"
