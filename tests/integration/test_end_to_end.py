"""The whole chain on real parts: real messages -> `radbridge draft --backend tgi` against the TGI-protocol model
server (real SmolLM2 + a LoRA adapter) -> transaction Bundle -> a real FHIR server -> read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radbridge import samples
from radbridge.adapters.fhir_server.store import HttpFhirStore
from radbridge.adapters.model.server import ServerConfig, create_app
from tgi_contract import load_contract
from radbridge.cli import app

from server_helpers import Recorder, ThreadedServer, check_exchange

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_server(radiology_model):
    recorder = Recorder(create_app(model=radiology_model, config=ServerConfig(max_batch_size=4, batch_wait_ms=20)))
    with ThreadedServer(recorder) as srv:
        srv.recorder = recorder
        yield srv


def test_real_messages_drafted_by_the_model_server_land_in_a_fhir_server(model_server, sekmet_fhir, tmp_path):
    # OpenI reports, not the project's fixtures: the FHIR server is shared by the session, and the fixtures'
    # drafts are stored by another test under the same deterministic identifiers
    with_findings = [r for r in samples.openi_reports("valid") if r.get("findings") and "effusion" in r["findings"]]
    hl7, fhir = tmp_path / "openi.hl7", tmp_path / "openi.json"
    hl7.write_bytes(samples.to_hl7v2(with_findings[0], with_impression=False))
    fhir.write_bytes(samples.to_fhir(with_findings[1]))
    inputs = [
        hl7,
        fhir,
        ROOT.parent / "shared" / "fixtures-ref" / "hl7v2" / "dcm4che_ORU_R01_MESA_rad_v251.hl7",  # final: skipped live
    ]
    result = CliRunner().invoke(
        app,
        ["draft", "--backend", "tgi", "--url", model_server.url, "--adapter", "radiology", *map(str, inputs)],
        # generous timeout: CI machines have 2 cores and the model server shares them with the test
        env={"RADBRIDGE_MAX_NEW_TOKENS": "24", "RADBRIDGE_REQUEST_TIMEOUT_S": "600"},
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("resourceType") or line["status"] for line in lines] == ["Bundle", "Bundle", "skipped"]

    store = HttpFhirStore(sekmet_fhir.base_url, timeout=30)
    for bundle in lines[:2]:
        response = store.transact(bundle)
        assert response["type"] == "transaction-response"
        drafted = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
        key = next(i["value"] for i in drafted["identifier"] if i["system"] == "urn:radbridge:draft")
        [stored] = store.search("DiagnosticReport", {"identifier": f"urn:radbridge:draft|{key}"})
        assert stored["status"] == "preliminary"
        assert stored["conclusion"] == drafted["conclusion"] and stored["conclusion"].strip()
        assert any(s["code"] == "AIAST" for s in stored["meta"]["security"])
        [prov] = store.search("Provenance", {"target": f"DiagnosticReport/{stored['id']}"})
        device_ref = prov["agent"][0]["who"]["reference"]
        device = store.read(*device_ref.split("/"))
        assert "radiology" in json.dumps(device)  # the adapter that wrote the draft is named

    # every request the tgi backend sent, and every answer, follows TGI's published OpenAPI contract
    contract = load_contract()
    generate_calls = [ex for ex in model_server.recorder.exchanges if ex.path == "/generate"]
    assert generate_calls
    for ex in model_server.recorder.exchanges:
        check_exchange(contract, ex)
