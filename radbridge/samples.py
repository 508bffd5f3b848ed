"""Report records (the one JSONL reader), the OpenI reports, and OpenI wrapped into HL7 v2 and FHIR messages.

Used by evaluation, retrieval, training, the demo, the benchmarks and the tests. The OpenI data is licensed for
use, not redistribution, so it is read from ``../shared`` at run time and never copied into the repository.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Iterator

from .formats.hl7v2.er7 import escape

OPENI_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "openi"
OPENI_SPLIT = "split_trienes2023.json"  # the literature split (Trienes et al. 2023), beside reports.jsonl


def read_jsonl(path: str | Path) -> list[dict]:
    """Every record of a JSONL file, in file order (blank lines skipped). Callers filter explicitly."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def split_ids(split: str, folder: Path = OPENI_DIR) -> list[str]:
    """Report ids of one part (``train``/``valid``) of the literature split, in its own order."""
    return json.loads((folder / OPENI_SPLIT).read_text())[split]


def openi_reports(split: str | None = None, folder: Path = OPENI_DIR) -> list[dict]:
    """OpenI reports (all, or those of the literature split's ``train``/``valid`` part); [] when absent."""
    path = folder / "reports.jsonl"
    if not path.is_file():
        return []
    rows = read_jsonl(path)
    if split is not None:
        ids = set(split_ids(split, folder))
        rows = [r for r in rows if r["uid"] in ids]
    return rows


def to_hl7v2(report: dict, *, status: str = "P", with_impression: bool = True) -> bytes:
    """An ORU^R01 v2.5.1 for one OpenI report: findings and impression as LOINC-coded TX OBX lines."""
    uid = report["uid"]
    sections = [("18785-6", "Indications for study", report.get("indication"))]
    sections.append(("59776-5", "Procedure findings", report.get("findings")))
    if with_impression:
        sections.append(("19005-8", "Radiology Impression", report.get("impression")))
    obx = []
    for code, name, text in sections:
        if text:
            obx.append(f"OBX|{len(obx) + 1}|TX|{code}^{name}^LN||{escape(text)}||||||{status}")
    obr = [""] * 26
    obr[1], obr[2], obr[3] = "1", f"ORD{uid}", f"ACC{uid}"
    obr[4], obr[7], obr[18] = "71046^XR Chest 2 views^CPT", "20240101110000", f"ACC{uid}"
    obr[22], obr[24], obr[25] = "20240101115000", "RAD", status
    segments = [
        f"MSH|^~\\&|OPENI|IU|RADBRIDGE|HOSP|20240101120000||ORU^R01^ORU_R01|OPENI{uid}|P|2.5.1",
        f"PID|1||PAT{uid}^^^IU^MR||Doe^Pat",
        "OBR|" + "|".join(obr[1:]),
    ]
    return ("\r".join(segments + obx) + "\r").encode()


def to_fhir(report: dict, *, status: str = "preliminary", with_impression: bool = False) -> bytes:
    """A FHIR R4 DiagnosticReport for one OpenI report: findings as a base64 text/plain presentedForm."""
    uid = report["uid"]
    text = f"FINDINGS: {report.get('findings') or ''}"
    resource = {
        "resourceType": "DiagnosticReport",
        "id": f"openi-{uid}",
        "status": status,
        "identifier": [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
             "system": "urn:openi:accession", "value": f"ACC{uid}"}
        ],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5", "display": "XR Chest 2 Views"}]},
        "subject": {"identifier": {"system": "urn:openi:patient", "value": f"PAT{uid}"}},
        "effectiveDateTime": "2024-01-01T11:00:00Z",
        "issued": "2024-01-01T11:50:00Z",
        "presentedForm": [{"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}],
    }
    if with_impression and report.get("impression"):
        resource["conclusion"] = report["impression"]
    return json.dumps(resource).encode()


def sample_messages(limit: int, split: str | None = "valid") -> Iterator[tuple[str, bytes]]:
    """Alternating HL7 v2 and FHIR messages made from OpenI reports that have findings."""
    rows = [r for r in openi_reports(split) if r.get("findings")][:limit]
    for i, row in enumerate(rows):
        yield (f"openi-{row['uid']}.hl7", to_hl7v2(row, with_impression=False)) if i % 2 == 0 else (
            f"openi-{row['uid']}.json",
            to_fhir(row),
        )
