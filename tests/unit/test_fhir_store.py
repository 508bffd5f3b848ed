"""FHIR stores: in-memory transaction semantics, and HTTP error mapping against a scripted transport."""

from __future__ import annotations

import hashlib
import json
import socket
from datetime import datetime, timezone

import httpx
import pytest
from pydantic import SecretStr

from radbridge.adapters.fhir_server.store import HttpFhirStore, MemoryFhirStore
from radbridge.formats.fhir.writer import build_bundle
from radbridge.domain import Draft, GenerationParams, Identifier, ModelInfo, Report, SourceRef
from radbridge.errors import StoreRejected, StoreUnavailable
from radbridge.ids import DRAFT_SYSTEM

RECORDED = datetime(2025, 1, 1, tzinfo=timezone.utc)
IMPRESSION = "Right lower lobe pneumonia."


def draft(seed: str = "m1", impression: str = IMPRESSION, index: int = 0) -> Draft:
    source = SourceRef(format="fhir", sha256=hashlib.sha256(seed.encode()).hexdigest(), message_id=seed, index=index)
    report = Report(
        source=source,
        status="preliminary",
        patient=Identifier("PAT-31337", "urn:oid:1.2.3", "MR"),
        identifiers=(Identifier("ACC-1", "urn:oid:1.2.4", "ACSN"),),
        findings="x",
    )
    return Draft(
        report=report,
        impression=impression,
        prompt_version="paper-v1",
        model=ModelInfo(backend="echo", base_model="m"),
        params=GenerationParams(),
    )


# ---------------------------------------------------------------- memory


def test_memory_transaction_rewrites_references():
    store = MemoryFhirStore()
    response = store.transact(build_bundle(draft(), recorded=RECORDED))
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["201 Created", "201 Created", "201 Created"]
    (dr,) = store.all("DiagnosticReport")
    (prov,) = store.all("Provenance")
    (device,) = store.all("Device")
    assert prov["target"] == [{"reference": f"DiagnosticReport/{dr['id']}"}]
    assert prov["agent"][0]["who"]["reference"] == f"Device/{device['id']}"


def test_memory_redelivery_is_idempotent():
    store = MemoryFhirStore()
    bundle = build_bundle(draft(), recorded=RECORDED)
    store.transact(bundle)
    response = store.transact(bundle)
    assert [e["response"]["status"] for e in response["entry"][:2]] == ["200 OK", "200 OK"]
    assert len(store.search("DiagnosticReport", {"identifier": f"{DRAFT_SYSTEM}|{draft().report.source.key}"})) == 1
    assert len(store.all("Provenance")) == 1


def test_memory_signed_report_is_not_modified():
    store = MemoryFhirStore()
    store.transact(build_bundle(draft(), recorded=RECORDED))
    (dr,) = store.all("DiagnosticReport")
    store.update({**dr, "status": "final", "conclusion": "Signed text."})
    store.transact(build_bundle(draft(impression="Other machine text."), recorded=RECORDED))
    (after,) = store.all("DiagnosticReport")
    assert (after["status"], after["conclusion"], after["meta"]["versionId"]) == ("final", "Signed text.", "2")


def test_memory_transaction_is_atomic():
    store = MemoryFhirStore()
    bundle = build_bundle(draft(), recorded=RECORDED)
    bundle["entry"][1]["resource"]["target"] = [{"reference": "urn:uuid:00000000-0000-0000-0000-000000000000"}]
    with pytest.raises(StoreRejected):
        store.transact(bundle)
    assert store.all("DiagnosticReport") == [] and store.all("Device") == []


def test_memory_search_refuses_unknown_parameters():
    with pytest.raises(ValueError):
        MemoryFhirStore().search("DiagnosticReport", {"subject": "Patient/1"})


def test_memory_token_search_forms():
    store = MemoryFhirStore()
    for d in (draft("a"), draft("a", index=1)):
        store.transact(build_bundle(d, recorded=RECORDED))
    assert len(store.search("DiagnosticReport", {"identifier": "ACC-1"})) == 2
    assert len(store.search("DiagnosticReport", {"identifier": "urn:oid:1.2.4|ACC-1"})) == 2
    assert store.search("DiagnosticReport", {"identifier": "urn:oid:9|ACC-1"}) == []
    assert len(store.search("DiagnosticReport", [("_security", "AIAST"), ("status", "preliminary")])) == 2


# ---------------------------------------------------------------- http


def scripted(handler) -> HttpFhirStore:
    return HttpFhirStore("https://fhir.example/r4/", token=SecretStr("s3cret"), transport=httpx.MockTransport(handler))


def outcome(status: int, diagnostics: str) -> httpx.Response:
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid", "diagnostics": diagnostics}]}
    return httpx.Response(status, json=body)


def test_http_transact_posts_canonical_json_with_token():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["auth"] = request.headers["authorization"]
        seen["type"] = request.headers["content-type"]
        seen["body"] = json.loads(request.content)
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []})

    store = scripted(handler)
    bundle = build_bundle(draft(), recorded=RECORDED)
    assert store.transact(bundle)["type"] == "transaction-response"
    assert seen == {"url": "https://fhir.example/r4", "auth": "Bearer s3cret", "type": "application/fhir+json", "body": bundle}
    assert "s3cret" not in repr(store)


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_http_retryable_statuses(status):
    store = scripted(lambda request: outcome(status, "busy"))
    with pytest.raises(StoreUnavailable, match=f"HTTP {status}.*busy"):
        store.transact(build_bundle(draft(), recorded=RECORDED))


@pytest.mark.parametrize("status", [400, 404, 409, 412, 422])  # 401/403: AuthFailed (test_auth.py)
def test_http_permanent_statuses_never_echo_the_payload(status):
    def handler(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        dr = sent["entry"][0]["resource"]
        # a server that quotes our content back in its diagnostics
        return outcome(status, f"bad conclusion '{dr['conclusion']}' for patient {dr['subject']['identifier']['value']}")

    store = scripted(handler)
    with pytest.raises(StoreRejected) as exc:
        store.transact(build_bundle(draft(), recorded=RECORDED))
    message = str(exc.value)
    assert f"HTTP {status}" in message and "bad conclusion" in message
    assert IMPRESSION not in message and "PAT-31337" not in message


def test_http_timeout_is_retryable():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(StoreUnavailable, match="timed out"):
        scripted(handler).read("DiagnosticReport", "1")


def test_http_connection_refused_is_retryable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    with HttpFhirStore(f"http://127.0.0.1:{port}/fhir", timeout=2.0) as store:
        with pytest.raises(StoreUnavailable, match="unreachable"):
            store.transact(build_bundle(draft(), recorded=RECORDED))


def test_http_non_bundle_success_is_not_taken_as_stored():
    store = scripted(lambda request: httpx.Response(200, text="<html>proxy login</html>"))
    with pytest.raises(StoreUnavailable):
        store.transact(build_bundle(draft(), recorded=RECORDED))


def test_http_read_missing_is_none():
    store = scripted(lambda request: outcome(404, "gone"))
    assert store.read("DiagnosticReport", "nope") is None


def test_http_search_follows_next_links_on_the_same_server_only():
    def page(ids, next_url=None):
        body = {"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": "DiagnosticReport", "id": i}, "search": {"mode": "match"}} for i in ids
        ] + [{"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}}]}
        body["link"] = [{"relation": "next", "url": next_url}] if next_url else []
        return httpx.Response(200, json=body)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("page") == "2":
            return page(["c"])
        assert request.url.params["identifier"] == "urn:radbridge:draft|k"
        return page(["a", "b"], "https://fhir.example/r4/DiagnosticReport?page=2")

    found = scripted(handler).search("DiagnosticReport", {"identifier": "urn:radbridge:draft|k"})
    assert [r["id"] for r in found] == ["a", "b", "c"]

    evil = scripted(lambda request: page(["a"], "https://elsewhere.example/steal"))
    with pytest.raises(StoreRejected):
        evil.search("DiagnosticReport", {"identifier": "x"})
