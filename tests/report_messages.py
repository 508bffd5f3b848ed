"""A FHIR chest X-ray DiagnosticReport for the lifecycle and sign-off tests (the project's own text, no OpenI)."""

from __future__ import annotations

import base64
import json

ACSN_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}
FINDINGS = "Lungs are clear. No effusion. Distinctive-Findings-Text."


def cxr_report(
    acc: str,
    status: str,
    rid: str,
    impression: str | None = None,
    *,
    findings: str = FINDINGS,
    acc_system: str = "urn:acc",
    mrn: tuple[str, str] = ("urn:mrn", "PATIENT-ID-77"),
    issued: str | None = None,
    reader: str | None = None,
) -> bytes:
    """One report of study ``acc``: findings and, when given, the signed impression, as a text presentedForm."""
    text = f"FINDINGS: {findings}" + (f"\nIMPRESSION: {impression}" if impression else "")
    doc: dict = {
        "resourceType": "DiagnosticReport", "id": rid, "status": status,
        "identifier": [{"system": acc_system, "value": acc, "type": ACSN_TYPE}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5", "display": "XR Chest 2 Views"}]},
        "subject": {"identifier": {"system": mrn[0], "value": mrn[1]}},
        "presentedForm": [{"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}],
    }
    if issued:
        doc["issued"] = issued
    if reader:
        doc["resultsInterpreter"] = [{"reference": reader}]
    return json.dumps(doc).encode()
