"""Draft lifecycle against a real FHIR R4 server (sekmet-fhir, strict validation): a signed report retires the draft."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from report_messages import cxr_report
from radbridge.adapters.fhir_server.store import HttpFhirStore
from radbridge.adapters.model.memory import InstantGenerator
from radbridge.errors import VersionConflict
from radbridge.formats.fhir.retire import RETIRED_SYSTEM, retirement_bundle
from radbridge.ids import DRAFT_SYSTEM
from radbridge.pipeline import Drafter, Envelope
from radbridge.service.retire import retire_drafts

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _message(acc: str, status: str) -> bytes:
    return cxr_report(acc, status, f"{status[:1]}-{acc}", None if status == "preliminary" else "No acute disease.",
                      findings="Lungs are clear. No effusion.", acc_system="urn:oid:1.2.3.4.5.11",
                      mrn=("urn:oid:1.2.3.4.5.1", "MRN-7"))


@pytest.fixture()
def store(sekmet_fhir):
    with HttpFhirStore(sekmet_fhir.base_url, timeout=10.0) as s:
        yield s


@pytest.fixture()
def acc() -> str:
    return f"ACC-{uuid.uuid4().hex[:12]}"  # the server is shared by the session: one study per test


def _draft_on_server(store, acc: str) -> dict:
    (outcome,) = Drafter(InstantGenerator()).process([Envelope(_message(acc, "preliminary"))])
    store.transact(outcome.bundles[0])
    (draft,) = [r for r in store.search("DiagnosticReport", {"identifier": acc})
                if any(i.get("system") == DRAFT_SYSTEM for i in r["identifier"])]
    return draft


def _retirement(acc: str, status: str = "final"):
    (outcome,) = Drafter(InstantGenerator()).process([Envelope(_message(acc, status))])
    (retirement,) = outcome.retire
    return retirement


def _retire_provenances(store, draft: dict) -> list[dict]:
    key = next(i["value"] for i in draft["identifier"] if i["system"] == DRAFT_SYSTEM)
    return store.search("Provenance", {"_tag": f"{RETIRED_SYSTEM}|{key}"})


def test_signed_report_retires_the_draft_with_its_provenance_and_a_redelivery_changes_nothing(store, acc):
    draft = _draft_on_server(store, acc)
    (done,) = retire_drafts(store, _retirement(acc), clock=lambda: WHEN)
    assert done.result == "retired" and done.notice["status"] == "cancelled"

    retired = store.read("DiagnosticReport", draft["id"])
    assert retired["status"] == "cancelled" and retired["meta"]["versionId"] == "2"
    assert retired["conclusion"] == draft["conclusion"]  # the draft's content is kept, only its status changes
    (prov,) = _retire_provenances(store, draft)
    assert prov["activity"]["coding"][0]["code"] == "UPDATE"
    assert prov["reason"] == [{"text": "superseded by the signed report"}]
    assert prov["target"][0]["reference"].endswith(f"DiagnosticReport/{draft['id']}")
    assert prov["entity"][0]["what"] == {"reference": f"DiagnosticReport/f-{acc}"}
    assert prov["recorded"].startswith("2026-01-02T03:04:05")

    (again,) = retire_drafts(store, _retirement(acc), clock=lambda: WHEN)
    assert again.result == "already_retired" and again.notice == done.notice
    assert store.read("DiagnosticReport", draft["id"])["meta"]["versionId"] == "2"
    assert len(_retire_provenances(store, draft)) == 1


def test_a_draft_a_radiologist_already_finalised_is_left_alone(store, acc):
    draft = _draft_on_server(store, acc)
    signed_by_hand = {k: v for k, v in draft.items() if k != "meta"} | {"status": "final", "conclusion": "Signed by Dr X."}
    store._client.put(f"{store.base_url}/DiagnosticReport/{draft['id']}", json=signed_by_hand,
                      headers={"Content-Type": "application/fhir+json"}).raise_for_status()
    before = store.read("DiagnosticReport", draft["id"])

    (done,) = retire_drafts(store, _retirement(acc))
    assert done.result == "already_final" and done.notice is None
    assert store.read("DiagnosticReport", draft["id"]) == before
    assert _retire_provenances(store, draft) == []


def test_an_edit_after_the_read_makes_the_server_refuse_the_whole_retirement(store, acc):
    draft = _draft_on_server(store, acc)
    stale = retirement_bundle(draft, _retirement(acc).signed, recorded=WHEN)  # built on version 1
    edited = {k: v for k, v in draft.items() if k != "meta"} | {"status": "final"}
    store._client.put(f"{store.base_url}/DiagnosticReport/{draft['id']}", json=edited,
                      headers={"Content-Type": "application/fhir+json", "If-Match": 'W/"1"'}).raise_for_status()

    with pytest.raises(VersionConflict):
        store.transact(stale)
    after = store.read("DiagnosticReport", draft["id"])
    assert after["status"] == "final" and after["meta"]["versionId"] == "2"
    assert _retire_provenances(store, draft) == []  # rolled back: no Provenance without its status change


def test_a_study_radbridge_never_drafted_finds_nothing(store, acc):
    assert [r.result for r in retire_drafts(store, _retirement(acc))] == ["not_found"]
