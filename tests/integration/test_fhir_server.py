"""The transaction Bundle against a real FHIR R4 server (sekmet-fhir, started by the fixture on 127.0.0.1)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from radbridge.adapters.fhir_server.store import HttpFhirStore
from radbridge.formats.fhir.writer import build_bundle
from radbridge.domain import Coding, Draft, GenerationParams, Identifier, ModelInfo, Report, SourceRef
from radbridge.errors import PermanentError, StoreRejected
from radbridge.ids import DRAFT_SYSTEM
from radbridge.reading import read_message

pytestmark = pytest.mark.integration

RECORDED = datetime(2025, 3, 4, 10, 30, tzinfo=timezone.utc)
MODEL = ModelInfo(
    backend="local",
    base_model="SmolLM2-135M-Instruct",
    base_model_sha256="1" * 64,
    adapter="radiology-lora",
    adapter_sha256="2" * 64,
)


def draft(seed: str, *, index: int = 0, impression: str = "No acute cardiopulmonary process.") -> Draft:
    source = SourceRef(format="hl7v2", sha256=hashlib.sha256(seed.encode()).hexdigest(), message_id=f"CTRL-{seed}", index=index)
    report = Report(
        source=source,
        status="preliminary",
        procedure=Coding("http://loinc.org", "36643-5", "XR Chest 2 Views"),
        patient=Identifier("MRN-7", "urn:oid:1.2.3.4.5.1", "MR"),
        identifiers=(Identifier(f"ACC-{seed}-{index}", "urn:oid:1.2.3.4.5.11", "ACSN"),),
        effective=datetime(2025, 3, 4, 9, 0, tzinfo=timezone.utc),
        findings="(not written to FHIR)",
    )
    return Draft(report=report, impression=impression, prompt_version="paper-v1", model=MODEL, params=GenerationParams())


@pytest.fixture()
def store(sekmet_fhir):
    with HttpFhirStore(sekmet_fhir.base_url, timeout=10.0) as s:
        yield s


def _ids(response: dict) -> list[tuple[str, str, str]]:
    """(status, type, id) per response entry, from the location header."""
    out = []
    for entry in response["entry"]:
        r = entry["response"]
        rtype, rid = r["location"].split("/_history")[0].split("/")[-2:]
        out.append((r["status"].split()[0], rtype, rid))
    return out


def _drafts_by_key(store: HttpFhirStore, key: str) -> list[dict]:
    return store.search("DiagnosticReport", {"identifier": f"{DRAFT_SYSTEM}|{key}"})


def test_transaction_is_stored_and_reads_back(store):
    d = draft("read-back")
    response = store.transact(build_bundle(d, recorded=RECORDED))
    assert response["type"] == "transaction-response"
    (dr_status, _, dr_id), (prov_status, _, prov_id), (dev_status, _, dev_id) = _ids(response)
    assert dr_status == prov_status == "201"

    dr = store.read("DiagnosticReport", dr_id)
    assert dr["status"] == "preliminary"
    assert dr["conclusion"] == "No acute cardiopulmonary process."
    assert dr["meta"]["security"][0]["code"] == "AIAST"
    assert {"system": DRAFT_SYSTEM, "value": d.report.source.key} in dr["identifier"]
    assert dr["subject"]["identifier"]["value"] == "MRN-7"  # logical reference kept as such

    prov = store.read("Provenance", prov_id)
    # urn:uuid references were rewritten by the server to the ids it assigned
    assert prov["target"][0]["reference"].endswith(f"DiagnosticReport/{dr_id}")
    assert prov["agent"][0]["who"]["reference"].endswith(f"Device/{dev_id}")
    assert prov["policy"] == ["urn:radbridge:prompt-template:paper-v1"]
    assert prov["entity"][0]["what"]["identifier"]["value"] == d.report.source.sha256

    device = store.read("Device", dev_id)
    assert [n["name"] for n in device["deviceName"]] == ["SmolLM2-135M-Instruct", "radiology-lora"]
    assert {v["value"] for v in device["version"]} == {"1" * 64, "2" * 64}


def test_redelivery_does_not_duplicate(store):
    d = draft("redeliver")
    bundle = build_bundle(d, recorded=RECORDED)
    first = _ids(store.transact(bundle))
    second = _ids(store.transact(bundle))
    # conditional create matched: 200, same ids, nothing new
    assert [s for s, _, _ in second[:2]] == ["200", "200"]
    assert [i for _, _, i in second] == [i for _, _, i in first]
    assert len(_drafts_by_key(store, d.report.source.key)) == 1
    assert len(store.search("Provenance", {"_tag": f"{DRAFT_SYSTEM}|{d.report.source.key}"})) == 1


def test_signed_report_is_never_modified_by_redelivery(store):
    d = draft("signed")
    (_, _, dr_id), (_, _, prov_id), _ = _ids(store.transact(build_bundle(d, recorded=RECORDED)))
    provenance_before = store.read("Provenance", prov_id)
    signed = store.read("DiagnosticReport", dr_id)
    signed.update(status="final", conclusion="Signed by the radiologist: clear lungs.")
    signed.pop("meta", None)
    put = httpx.put(f"{store.base_url}/DiagnosticReport/{dr_id}", json=signed, timeout=10.0)
    assert put.status_code == 200, put.text
    version_after_signing = store.read("DiagnosticReport", dr_id)["meta"]["versionId"]

    # redelivery, even with a different draft (another model run), must leave the signed report alone
    again = draft("signed", impression="A different machine draft.")
    store.transact(build_bundle(again, recorded=datetime(2025, 3, 5, tzinfo=timezone.utc)))
    after = store.read("DiagnosticReport", dr_id)
    assert after["status"] == "final"
    assert after["conclusion"] == "Signed by the radiologist: clear lungs."
    assert after["meta"]["versionId"] == version_after_signing
    assert len(_drafts_by_key(store, d.report.source.key)) == 1
    # nor its Provenance: it still names the run that wrote the draft, not the redelivered one
    assert store.read("Provenance", prov_id) == provenance_before


def test_reports_of_one_message_are_one_transaction_each_and_share_the_device(store):
    drafts = [draft("multi", index=0), draft("multi", index=1, impression="Small left effusion.")]
    ids = [_ids(store.transact(build_bundle(d, recorded=RECORDED))) for d in drafts]
    assert [[t for _, t, _ in one] for one in ids] == [["DiagnosticReport", "Provenance", "Device"]] * 2
    conclusions = {store.read("DiagnosticReport", i)["conclusion"] for one in ids for _, t, i in one if t == "DiagnosticReport"}
    assert conclusions == {"No acute cardiopulmonary process.", "Small left effusion."}
    # both transactions PUT the same Device id: one Device for the model
    (first_device,), (second_device,) = ([i for _, t, i in one if t == "Device"] for one in ids)
    assert first_device == second_device


def test_invalid_resource_is_rejected_with_server_diagnostics(store):
    bundle = build_bundle(draft("invalid"), recorded=RECORDED)
    del bundle["entry"][0]["resource"]["code"]  # required 1..1
    with pytest.raises(StoreRejected) as exc:
        store.transact(bundle)
    assert "HTTP 400" in str(exc.value)
    assert "DiagnosticReport.code" in str(exc.value)  # the server's OperationOutcome diagnostics
    assert "No acute cardiopulmonary process" not in str(exc.value)
    assert "MRN-7" not in str(exc.value)



FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _reports(path: Path) -> list[Report]:
    try:
        items = read_message(path.read_bytes(), location=path.name)
    except PermanentError:
        return []  # malformed on purpose; the readers' tests cover the rejection
    return [r for r in items if isinstance(r, Report)]


SOURCES = [
    p for p in sorted((FIXTURES / "hl7v2").glob("*.hl7")) + sorted((FIXTURES / "fhir").glob("*.json")) if _reports(p)
]


def test_fixture_sources_cover_both_formats():
    assert sum(p.suffix == ".hl7" for p in SOURCES) >= 5 and sum(p.suffix == ".json" for p in SOURCES) >= 3


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_reports_from_the_readers_are_accepted_by_the_server(store, path):
    """Every report shape the readers produce (identifier systems, references, dates) becomes a storable Bundle."""
    reports = _reports(path)
    drafts = [replace(draft("unused"), report=r, impression=f"Draft {i}.") for i, r in enumerate(reports)]
    ids = [i for d in drafts for i in _ids(store.transact(build_bundle(d, recorded=RECORDED, validate=True)))]
    stored = [store.read(t, i) for _, t, i in ids if t == "DiagnosticReport"]
    assert [dr["conclusion"] for dr in stored] == [f"Draft {i}." for i in range(len(reports))]
    assert all(dr["status"] == "preliminary" for dr in stored)


def test_checker_flags_are_stored_as_detected_issues_implicating_the_stored_draft(store):
    from radbridge.ids import CHECK_SYSTEM
    from radbridge.verify import check

    d = draft("flagged", impression="Right pleural effusion.")
    d = replace(d, flags=check(d.impression, "Large left pleural effusion.").flags)
    bundle = build_bundle(d, recorded=RECORDED)
    first = _ids(store.transact(bundle))
    dr_id = next(rid for status, rtype, rid in first if rtype == "DiagnosticReport")
    (issue_id,) = [rid for status, rtype, rid in first if rtype == "DetectedIssue"]
    issue = store.read("DetectedIssue", issue_id)
    assert issue["code"]["coding"][0] == {"system": CHECK_SYSTEM, "code": "laterality", "display": "Laterality conflict"}
    assert issue["severity"] == "high" and issue["status"] == "preliminary"
    assert issue["implicated"] == [{"reference": f"DiagnosticReport/{dr_id}"}]  # the server resolved our urn:uuid
    # a redelivery of the same Bundle creates no second issue (conditional create on the issue's identifier)
    store.transact(bundle)
    tag = issue["meta"]["tag"][0]
    assert len(store.search("DetectedIssue", {"_tag": f"{tag['system']}|{tag['code']}"})) == 1
