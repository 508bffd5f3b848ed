"""Signed chest X-ray reports written for the audit tests (the project's own text, no shared data)."""

from __future__ import annotations

import json
from pathlib import Path

# (findings, impression): normal and abnormal, some with a side, so every score and plot has something to show
CASES = [
    ("Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax.", "No acute cardiopulmonary process."),
    ("Small right pleural effusion. Heart size normal. No pneumothorax.", "Small right pleural effusion."),
    ("Left lower lobe opacity consistent with pneumonia. No effusion.", "Left lower lobe pneumonia."),
    ("The heart is enlarged. Mild pulmonary edema. No focal consolidation.", "Cardiomegaly with mild pulmonary edema."),
    ("Lungs are clear. Normal cardiomediastinal silhouette.", "Normal chest."),
    ("Right apical pneumothorax, small. Lungs otherwise clear.", "Small right pneumothorax."),
    ("Bibasilar atelectasis. No pleural effusion.", "Bibasilar atelectasis."),
    ("No acute osseous abnormality. Lungs clear. Heart normal.", "No active disease."),
]


def cxr_oru(i: int, findings: str, impression: str | None, *, status: str = "F", code: str = "71046",
            name: str = "XR CHEST 2 VIEWS", section: str = "DX") -> bytes:
    segs = [
        f"MSH|^~\\&|RIS|AUDIT|EHR|AUDIT|20240102{i % 24:02d}00||ORU^R01|AUD-{i}|P|2.5.1",
        f"PID|1||PAT{i:05d}^^^AUDIT^MR||Testperson^Audit{i}||19600101|F",
        f"OBR|1|ORD{i}|ACC{i:05d}|{code}^{name}^C4|||20240102{i % 24:02d}00|||||||||||||||||{section}|{status}",
        f"OBX|1|TX|{code}&GDT^Report||Findings: {findings}||||||{status}",
    ]
    if impression is not None:
        segs.append(f"OBX|2|TX|{code}&GDT^Report||Impression: {impression}||||||{status}")
    return ("\r".join(segs) + "\r").encode()


def cxr_fhir(i: int, findings: str, impression: str, *, status: str = "final") -> bytes:
    return json.dumps({
        "resourceType": "DiagnosticReport", "id": f"aud-{i}", "status": status,
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                        "value": f"FACC{i:05d}"}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5", "display": "XR Chest 2 Views"}]},
        "subject": {"reference": f"Patient/pat-{i}"},
        "effectiveDateTime": "2024-02-03T10:00:00Z",
        "presentedForm": [{"contentType": "text/plain", "data": __import__("base64").b64encode(
            f"FINDINGS: {findings}\nIMPRESSION: {impression}".encode()).decode()}],
        "conclusion": impression,
    }).encode()


def write_history(folder: Path, n: int = 12) -> dict:
    """n signed chest X-rays (HL7 v2 and FHIR), plus one of every kind of report an audit must not score.

    Returns the expected counts."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        f, imp = CASES[i % len(CASES)]
        if i % 3 == 2:
            (folder / f"cxr_{i:03d}.json").write_bytes(cxr_fhir(i, f, imp))
        else:
            (folder / f"cxr_{i:03d}.hl7").write_bytes(cxr_oru(i, f, imp))
    (folder / "x_ct_head.hl7").write_bytes(cxr_oru(900, "No hemorrhage.", "Normal head CT.", code="70450",
                                                  name="CT HEAD WO CONTRAST", section="CT"))
    (folder / "x_prelim.hl7").write_bytes(cxr_oru(901, "Lungs clear.", "Normal.", status="P"))
    (folder / "x_no_impression.hl7").write_bytes(cxr_oru(902, "Lungs clear. Heart normal.", None))
    (folder / "x_malformed.hl7").write_bytes(b"this is not an HL7 message\r")
    return {"audited": n, "skipped_by_reason": {"no_signed_impression": 1, "not_signed": 1, "out_of_scope": 1,
                                                 "unreadable": 1}}
