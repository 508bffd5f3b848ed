"""No sender-controlled name or value comes back out (issue 12, item 6).

Every field a sender controls carries a distinctive marker ``ZZSECRET<TAG>`` followed by a space (so it is never
a code-shaped value); the messages go through ``radbridge draft`` (instant backend), the service loop (fake Kafka
clients) and ``radbridge audit``, and every log line, metric, header, skip or error record and output is searched.
A marker may appear only where the output carries source data by design (ALLOWED, each with its reason).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from typer.testing import CliRunner

from radbridge.adapters.model.memory import InstantGenerator
from radbridge.cli import app
from radbridge.formats.fhir.writer import bundle_bytes
from radbridge.logs import JsonFormatter
from radbridge.pipeline import Drafter, Mode
from radbridge.scope import Scope
from test_service_loop import T0, FakeConsumer, FakeProducer, _service, _stop_when_drained

MANIFEST = Path(__file__).resolve().parents[2] / "model" / "manifest.json"
MARK = re.compile(r"ZZSECRET([A-Z0-9]+)")


def m(tag: str) -> str:
    return f"ZZSECRET{tag} x"


# Where a marker may legitimately come back, and why. Everything else must never echo.
ALLOWED: dict[str, dict[str, str]] = {
    # The draft Bundle (and the audit's case rows, which describe a draft) carry the source's identifiers, subject,
    # procedure coding and report text on purpose: the EHR links the draft to its order and patient with them.
    "output": {
        "MRN": "subject identifier, copied so the EHR can file the draft",
        "MRNAUTH": "subject identifier system",
        "PLACER": "order identifier (placer)",
        "PLACERNS": "order identifier system",
        "FILLER": "accession / filler identifier",
        "ACSN": "accession identifier",
        "PROC": "procedure display, copied from the source coding",
        "PROCSYS": "procedure coding system, copied from the source coding",
        "FINDINGS": "report text: the prompt's findings; the instant backend echoes them into the draft",
        "INDICATION": "report text: the clinical indication is part of the draft's context",
        "IMPRESSION": "the signed impression (audit cases compare the draft with it)",
        "SUBJREF": "FHIR subject reference, copied",
        "SUBJDISP": "FHIR subject display, copied with the reference",
        "BASEDON": "FHIR order identifier, copied",
        "IDENT": "FHIR report identifier, copied",
        "CODEDISP": "FHIR procedure code display, copied",
        "CATDISP": "FHIR category display, copied",
        "STUDY": "FHIR imagingStudy reference, copied",
        "ENC": "FHIR encounter reference, copied",
        "MSGID": "the message control id names the source message in the Provenance",
        "SCOPECODE": "procedure code, copied", "SCOPENAME": "procedure display, copied",
        "SCOPESYS": "procedure coding system, copied", "LABCODE": "procedure code, copied",
        "LABNAME": "procedure display, copied", "LABSYS": "procedure coding system, copied",
        "CCDISP": "the signed conclusion's coded display is the signed impression (audit cases)",
    },
}
# Ids of a FHIR id's shape (letters, digits, '-', '.') may be printed anywhere, as codes may: an interface engineer
# finds the resource by them. The markers below are planted id-shaped on purpose; spaced ones must not come back.
ID_SHAPED = {"RID": "report id", "BID": "report id in a Bundle", "OBSREF": "contained Observation id",
             "MISSING": "referenced id", "MEDIA": "Media id", "UNUSED": "contained id", "SUBJREF": "Patient id",
             "ENC": "Encounter id", "STUDY": "ImagingStudy id", "PAT": "Patient id", "LONE": "Observation id"}
for _allowed in (ALLOWED.setdefault(c, {}) for c in ("output", "skip", "log", "header", "metrics", "source")):
    _allowed.update({k: v for k, v in ID_SHAPED.items() if k not in _allowed})
# The source location printed beside a skip or error record: the operator's own file name, needed to find the file.
ALLOWED["source"] = {"FILE": "the operator's own file path, printed beside its record so the file can be found"}


# ---------------------------------------------------------------------------------------------------------------
# Messages with a marker in every field a sender controls


def _hl7(*segments: str) -> bytes:
    return ("\r".join(segments) + "\r").encode()


MSH = f"MSH|^~\\&|{m('APP')}|{m('FAC')}|{m('RAPP')}|{m('RFAC')}|20240102100000||ORU^R01|{m('MSGID')}|P|2.5.1||||||{m('CHARSET')}"
PID = f"PID|1||{m('MRN')}^^^{m('MRNAUTH')}^MR||{m('NAME')}^{m('GIVEN')}||19600101|F|||{m('ADDR')}"
OBX_FINDINGS = f"OBX|1|TX|{m('OBX3CODE')}^{m('OBX3NAME')}^{m('OBX3SYS')}||Findings: Heart size normal. Lungs clear. {m('FINDINGS')}||||||P"


def _obr(code: str, section: str, status: str = "P", **more: str) -> str:
    fields = {1: "1", 2: "P1", 3: "F1", 4: code, 7: "20240102", 24: section, 25: status,
              **{int(k[1:]): v for k, v in more.items()}}
    return "OBR|" + "|".join(fields.get(i, "") for i in range(1, 33))


def hl7_messages() -> dict[str, bytes]:
    obr = _obr(f"71046^{m('PROC')} XR CHEST^{m('PROCSYS')}", "DX", f2=f"{m('PLACER')}^{m('PLACERNS')}",
               f3=m("FILLER"), f13=m("INDICATION"), f18=m("ACSN"), f31=f"^{m('REASON')}",
               f32=f"{m('READERID')}&{m('READERNAME')}")
    return {
        "hl7_drafted": _hl7(
            MSH, PID, f"PV1|1|{m('PV1')}", f"ORC|NW|{m('ORC')}", obr,
            OBX_FINDINGS,
            f"OBX|2|NM|{m('NMCODE')}^{m('NMNAME')}^{m('NMSYS')}||5|{m('UNITS')}|||||P",
            f"OBX|3|CE|{m('CECODE')}^{m('CENAME')}||{m('CEVAL')}^{m('CEVALNAME')}||||||P",
            f"OBX|4|ED|{m('EDCODE')}^{m('EDNAME')}||^TEXT^{m('EDSUB')}^A^hello||||||P",
            f"OBX|5|ED|99^Report||^TEXT^PDF^{m('EDENC')}^abc||||||P",
            f"OBX|6|ED|99^Report||^AP^PDF^Base64^{m('EDDATA')}||||||P",
            f"OBX|7|RP|{m('RPCODE')}^{m('RPNAME')}||{m('RPVAL')}^{m('RPAPP')}||||||P",
            f"OBX|8|{m('VTYPE')}|{m('VTCODE')}^{m('VTNAME')}||{m('VTVAL')}||||||P",
            f"OBX|9|TX|{m('DELCODE')}^{m('DELNAME')}||deleted||||||D",
            f"NTE|1||{m('NTE')}", f"ZPI|{m('ZSEG')}",
        ),
        "hl7_not_radiology": _hl7(
            MSH, PID, _obr(f"{m('LABCODE')}^{m('LABNAME')}^L", m("SECTION"), "F"),
            f"OBX|1|NM|{m('NMCODE')}^{m('NMNAME')}||5||||||F",
        ),
        "hl7_lab": _hl7(MSH, PID, _obr(f"{m('LABCODE')}^{m('LABNAME')}", "CH", "F"), OBX_FINDINGS),
        "hl7_cardiology": _hl7(MSH, PID, _obr(f"{m('CARDCODE')}^ECHO {m('CARDNAME')}", "CT"),
                               OBX_FINDINGS),
        "hl7_out_of_scope": _hl7(MSH, PID, _obr(f"{m('SCOPECODE')}^CT HEAD {m('SCOPENAME')}^{m('SCOPESYS')}", m("MODALITY")), OBX_FINDINGS),
        "hl7_out_of_scope_modality": _hl7(MSH, PID, _obr("", "CT"), OBX_FINDINGS),
        "hl7_no_findings": _hl7(MSH, PID, obr, f"OBX|1|ED|{m('EDCODE')}^{m('EDNAME')}||^TEXT^{m('EDSUB')}^A^hello||||||P"),
        "hl7_message_type": _hl7(MSH.replace("ORU^R01", f"{m('MSGTYPE')}^{m('TRIGGER')}"), PID),
        "hl7_version": _hl7(MSH.replace("|2.5.1|", f"|{m('VERSION')}|"), PID, obr, OBX_FINDINGS),
        "hl7_old_version": _hl7(MSH.replace("|2.5.1|", f"|2.5.1.{m('MINOR')}|"), PID, obr, OBX_FINDINGS),
        "hl7_segment_name": _hl7(MSH, PID, obr, OBX_FINDINGS, f"{m('SEGNAME')}|{m('SEGVAL')}"),
        "hl7_no_obr": _hl7(MSH, PID, f"OBX|1|TX|{m('OBX3CODE')}||{m('FINDINGS')}"),
        "hl7_bad_delims": f"MSH{m('DELIMS')}".encode(),
        "hl7_charset_contradicted": _hl7(MSH.replace(m("CHARSET"), "UNICODE UTF-8"), PID, obr, OBX_FINDINGS)[:-1] + b"\xe9\r",
    }


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def fhir_report(**extra) -> dict:
    report = {
        "resourceType": "DiagnosticReport", "id": "ZZSECRETRID", "status": "preliminary",
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                        "system": "urn:x", "value": m("IDENT")}],
        "extension": [{"url": f"http://example.org/{m('EXTURL')}", "valueString": m("EXTVAL")}],
        "category": [{"coding": [{"system": f"urn:{m('CATSYS')}", "code": m("CATCODE"), "display": m("CATDISP")}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5", "display": f"XR Chest {m('CODEDISP')}"}],
                 "text": m("CODETEXT")},
        "subject": {"reference": "Patient/ZZSECRETSUBJREF", "display": m("SUBJDISP")},
        "encounter": {"reference": "Encounter/ZZSECRETENC"},
        "basedOn": [{"identifier": {"system": "urn:acc", "value": m("BASEDON")}}],
        "imagingStudy": [{"reference": "ImagingStudy/ZZSECRETSTUDY"}, {"display": m("STUDYDISP")}],
        "performer": [{"display": m("PERFORMER")}],
        "resultsInterpreter": [{"display": m("INTERP"), "identifier": {"value": m("INTERPID")}}],
        "conclusionCode": [{"coding": [{"system": f"urn:{m('CCSYS')}", "code": m("CCCODE"), "display": m("CCDISP")}]}],
        "media": [{"link": {"reference": "Media/ZZSECRETMEDIA", "display": m("MEDIADISP")}},
                  {"link": {"reference": f"Media/{m('MEDIAREF')}"}}, {"link": {"reference": f"{m('MEDIATYPE')}/1"}}],
        "result": [{"reference": "#ZZSECRETOBSREF"}, {"reference": "Observation/ZZSECRETMISSING"},
                   {"reference": f"Observation/{m('RESREF')}"}, {"reference": f"urn:{m('URN')}"},
                   {"reference": f"#{m('HASHREF')}"}],
        "contained": [
            {"resourceType": "Observation", "id": "ZZSECRETOBSREF", "status": "final",
             "code": {"coding": [{"system": f"urn:{m('OBSSYS')}", "code": m("OBSCODE"), "display": m("OBSDISP")}],
                      "text": m("OBSTEXT")},
             "valueString": m("OBSVAL")},
            {"resourceType": "Observation", "id": "ZZSECRETUNUSED", "status": "final", "code": {"text": m("UNUSED")}},
        ],
        "presentedForm": [
            {"contentType": "text/plain", "title": m("TITLE"),
             "data": _b64(f"FINDINGS: Heart size normal. Lungs clear. {m('FINDINGS')}\n{m('HEADING')}: more\n")},
            {"contentType": f"application/{m('CT')}", "data": _b64("x")},
            {"contentType": "application/pdf", "url": f"http://example.org/{m('URL')}"},
        ],
    }
    report.update(extra)
    return report


def fhir_messages() -> dict[str, bytes]:
    def dump(doc) -> bytes:
        return json.dumps(doc).encode()

    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"urn:uuid:{m('FULLURL')}", "resource": fhir_report(id="ZZSECRETBID")},
        {"resource": {"resourceType": "Patient", "id": "ZZSECRETPAT", "name": [{"family": m("NAME")}],
                      "identifier": [{"value": m("MRN")}]}},
        {"resource": {"resourceType": "Observation", "id": "ZZSECRETLONE", "status": "final", "code": {"text": m("LONE")}}},
    ]}
    return {
        "fhir_drafted": dump(fhir_report()),
        "fhir_unknown_key": dump(fhir_report(ZZSECRETKEY={"a": 1}, **{f"{m('SPACEKEY')}": 1})),
        "fhir_unknown_nested_key": dump(fhir_report(code={"coding": [{"code": "36643-5", "ZZSECRETNESTED": 1}]})),
        "fhir_bad_status": dump(fhir_report(status=m("STATUS"))),
        "fhir_bad_type": dump(fhir_report(effectiveDateTime=m("DATE"))),
        "fhir_resource_type": dump({"resourceType": m("RTYPE"), "id": "x"}),
        "fhir_resource_type_word": dump({"resourceType": "ZZSECRETRTWORD", "id": "x"}),
        "fhir_lone": dump({"resourceType": "Observation", "id": "x", "status": "final", "code": {"text": m("LONE")}}),
        "fhir_bundle": dump(bundle),
        "fhir_bundle_type": dump({**bundle, "type": m("BTYPE")}),
        "fhir_bundle_no_report": dump({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "ZZSECRETENTRYTYPE", "id": "x"}},
            {"resource": {"resourceType": "Patient", "id": "p", "name": [{"family": m("NAME")}]}}]}),
        "fhir_not_radiology": dump(fhir_report(
            category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB", "display": m("LABDISP")}]}],
            code={"coding": [{"system": f"urn:{m('LABSYS')}", "code": m("LABCODE"), "display": m("LABNAME")}], "text": m("LABTEXT")})),
        "fhir_out_of_scope": dump(fhir_report(code={"coding": [{"system": "http://loinc.org", "code": "24725-4",
                                                                "display": f"CT Head {m('SCOPENAME')}"}]})),
        "fhir_no_findings": dump(fhir_report(presentedForm=[{"contentType": f"image/{m('IMGCT')}", "data": _b64("x")}])),
        "fhir_invalid_json": f'{{"resourceType": "DiagnosticReport", "{m("JSONKEY")}": [1,}}'.encode(),
    }


# ---------------------------------------------------------------------------------------------------------------
# Capture and search


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def logs():
    handler = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(old_level)


def echoes(channel: str, text: str) -> list[str]:
    """Markers found in ``text`` that ``channel`` may not carry."""
    allowed = ALLOWED.get(channel, {})
    return sorted({tag for tag in MARK.findall(text) if tag not in allowed})


def check(found: dict[str, list[str]]) -> None:
    leaks = {where: tags for where, tags in found.items() if tags}
    assert not leaks, f"sender-controlled values echoed: {leaks}"


def chest_scope() -> Scope:
    return Scope.from_manifest(json.loads(MANIFEST.read_text())["scope"])


def all_messages() -> dict[str, bytes]:
    return {**hl7_messages(), **fhir_messages()}


# ---------------------------------------------------------------------------------------------------------------


def test_the_markers_reach_the_readers():
    """No test that cannot fail: the planted values do come back where a draft carries source data by design."""
    drafter = Drafter(InstantGenerator(), scope=chest_scope(), mode=Mode.REPLAY)
    from radbridge.pipeline import Envelope

    outcomes = drafter.process([Envelope(all_messages()["hl7_drafted"]), Envelope(all_messages()["fhir_drafted"])])
    assert [o.status for o in outcomes] == ["drafted", "drafted"]
    text = json.dumps([o.bundles for o in outcomes])
    assert {"MRN", "FILLER", "PROC", "IDENT", "SUBJREF"} <= set(MARK.findall(text))


def test_reader_notes_and_errors_echo_no_sender_value():
    """``Report.unmapped``, skip details and error texts: what an interface engineer reads, by position and code."""
    from radbridge.errors import PermanentError
    from radbridge.reading import read_message, split_payload

    found: dict[str, list[str]] = {}
    for name, data in all_messages().items():
        try:
            payload = split_payload(data)
            items = [item for message in payload.messages for item in read_message(message, payload.format)]
        except PermanentError as exc:
            found[f"{name} error"] = echoes("skip", str(exc))
            continue
        for item in items:
            text = json.dumps(list(getattr(item, "unmapped", ())) + [getattr(item, "detail", "")])
            found[f"{name}[{item.source.index}]"] = echoes("skip", text)
    check(found)


def test_draft_command_echoes_no_sender_value(tmp_path, logs):
    paths = []
    for name, data in all_messages().items():
        path = tmp_path / f"{name}-{m('FILE').strip()}.msg"
        path.write_bytes(data)
        paths.append(path)
    result = CliRunner().invoke(app, ["draft", "--backend", "instant", "--oru", *map(str, paths)])
    assert result.exit_code in (0, 1), result.output
    found: dict[str, list[str]] = {}
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) >= len(paths)
    for i, record in enumerate(lines):
        if record.get("resourceType") == "Bundle" or record.get("status") == "oru":
            found[f"stdout[{i}] output"] = echoes("output", json.dumps({k: v for k, v in record.items() if k != "source"}))
        else:
            found[f"stdout[{i}] {record.get('status')}"] = echoes("skip", json.dumps({k: v for k, v in record.items() if k != "source"}))
        found[f"stdout[{i}] source"] = echoes("source", str(record.get("source", "")))
    found["stderr"] = echoes("log", result.stderr if result.stderr_bytes is not None else "")
    found["logs"] = echoes("log", "\n".join(logs))
    check(found)
    statuses = {r.get("status") for r in lines}
    assert {"skipped", "error"} <= statuses  # the skip and error paths did run


def test_service_loop_echoes_no_sender_value(logs):
    messages = list(all_messages().values())
    consumer = FakeConsumer({T0: messages})
    producer = FakeProducer()
    service = _service(consumer, producer)
    service.drafter = Drafter(InstantGenerator(), scope=chest_scope())
    consumer.on_poll = _stop_when_drained(service)
    service.run()

    found: dict[str, list[str]] = {}
    dead = 0
    for i, (topic, key, value, headers) in enumerate(producer.acked):
        for name, raw in headers or []:
            found[f"{topic}[{i}] header {name}"] = echoes("header", raw.decode("utf-8", "replace"))
        found[f"{topic}[{i}] key"] = echoes("header", (key or b"").decode("utf-8", "replace"))
        if topic == "dlq":
            dead += 1  # the value is the original bytes, untouched by design
        else:
            found[f"{topic}[{i}] value"] = echoes("output", value.decode("utf-8", "replace"))
    assert dead >= 3 and len(producer.acked) > dead
    found["metrics"] = echoes("metrics", generate_latest(service.metrics.registry).decode())
    found["logs"] = echoes("log", "\n".join(logs))
    check(found)


def test_audit_echoes_no_sender_value(tmp_path, logs):
    history = tmp_path / "history"
    history.mkdir()
    for name, data in all_messages().items():
        data = data.replace(b"|P\r", b"|F\r").replace(b"||||||P", b"||||||F").replace(b'"preliminary"', b'"final"')
        (history / f"{name}.msg").write_bytes(data)
    out = tmp_path / "audit"
    result = CliRunner().invoke(app, ["audit", "--backend", "instant", str(history), "--out", str(out)])
    assert result.exit_code in (0, 1, 2), result.output
    found: dict[str, list[str]] = {"stdout": echoes("log", result.output), "logs": echoes("log", "\n".join(logs))}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            channel = "output" if path.name.startswith("cases") or path.parent.name == "bundles" else "skip"
            if path.name == "report.html":
                channel = "output"  # the report shows each case: draft, signed impression and its accession
            found[str(path.relative_to(out))] = echoes(channel, path.read_text(errors="replace"))
    assert (out / "skipped.jsonl").is_file()
    check(found)
