"""Golden files: message -> Report -> prompt -> FHIR Bundle, for real public messages and our own fixtures.

A change in any stage shows up as a diff of a readable JSON file. After an intended change, regenerate with
``RADBRIDGE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_golden.py`` and review the diff.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from radbridge.adapters.model.memory import InstantGenerator
from radbridge.pipeline import Drafter, Envelope, Mode
from radbridge.prompt import render

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "fixtures-ref"
GOLDEN = ROOT / "tests" / "fixtures" / "golden"
RECEIVED = datetime(2024, 3, 1, 8, 30, tzinfo=timezone.utc)

CASES = {
    "dcm4che_mesa_rad": SHARED / "hl7v2" / "dcm4che_ORU_R01_MESA_rad_v251.hl7",
    "uscore_chest_xray": SHARED / "fhir" / "uscore_DiagnosticReport-chest-xray-report.json",
    "r4spec_ultrasound": SHARED / "fhir" / "r4spec-ibm_diagnosticreport-example-ultrasound.json",
    "gcp_ct_head_neck": SHARED / "fhir" / "gcp_R4_DiagnosticReport-f201-ct-head-neck.json",
}
OWN = ROOT / "tests" / "fixtures"
for name in (
    "ct_abdomen_headings_crlf_v251.hl7",
    "cxr_gdt_suffix_lf_v23.hl7",
    "multi_obr_two_rad_one_lab_v251.hl7",
    "mri_knee_fnd_imp_mllp_bom_v24.hl7",
    "escapes_custom_delimiters_v251.hl7",
):
    CASES[f"own_{Path(name).stem}"] = OWN / "hl7v2" / name
for name in (
    "dr_plain_headings_preliminary.json",
    "bundle_message_two_reports.json",
    "dr_contained_observations.json",
    "bundle_collection_urn.json",
):
    CASES[f"own_{Path(name).stem}"] = OWN / "fhir" / name

def _jsonable(obj):
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(type(obj))


def snapshot(path: Path) -> dict:
    # replay: signed example reports are drafted too, so every case exercises the whole chain
    drafter = Drafter(InstantGenerator(), mode=Mode.REPLAY, clock=lambda: RECEIVED)  # the draft's own time, fixed
    data = path.read_bytes()
    [outcome] = drafter.process([Envelope(data, location=path.name, received_at=RECEIVED)])
    snap: dict = {"status": outcome.status, "format": outcome.format}
    if outcome.error is not None:
        snap["error"] = {"kind": outcome.error.kind, "reason": str(outcome.error)}
    snap["skipped"] = [{"index": s.source.index, "reason": s.reason.value, "detail": s.detail} for s in outcome.skipped]
    snap["reports"] = [dataclasses.asdict(d.report) for d in outcome.drafts]
    snap["prompts"] = [render(drafter.prompt_for(d.report)) for d in outcome.drafts]
    snap["bundles"] = list(outcome.bundles)
    return json.loads(json.dumps(snap, default=_jsonable))


# Messages from ../shared must not be copied into the repository, and their snapshots quote them: for those
# cases only a digest of the snapshot is committed (any change is still caught; regenerate locally to see the diff).
DIGESTS = GOLDEN / "shared_digests.json"


def _canonical(snap: dict) -> bytes:
    return json.dumps(snap, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    got = snapshot(CASES[name])
    update = bool(os.environ.get("RADBRIDGE_UPDATE_GOLDEN"))
    if CASES[name].is_relative_to(SHARED):
        digests = json.loads(DIGESTS.read_text()) if DIGESTS.exists() else {}
        digest = hashlib.sha256(_canonical(got)).hexdigest()
        if update:
            DIGESTS.write_text(json.dumps({**digests, name: digest}, indent=2, sort_keys=True) + "\n")
        else:
            assert digests.get(name) == digest, f"{name}: snapshot changed (write it out with RADBRIDGE_UPDATE_GOLDEN=1 to diff)"
        return
    path = GOLDEN / f"{name}.json"
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_canonical(got))
    assert path.exists(), f"golden file {path.name} is missing"
    assert got == json.loads(path.read_text())


def test_golden_cases_cover_both_formats_and_real_drafts():
    assert any("hl7v2" in str(p) for p in CASES.values()) and any(str(p).endswith(".json") for p in CASES.values())
    assert snapshot(CASES["dcm4che_mesa_rad"])["status"] == "drafted"
