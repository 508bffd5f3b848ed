"""`radbridge serve-model` answers /metrics: what it serves (adapter sha256), requests in flight, process metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient

from radbridge.adapters.model.server import ServerConfig, create_app

from test_generators_model_server import FakeModel


class HashedModel(FakeModel):
    def adapter_sha256(self, name: str) -> str:
        return name[0] * 64


def test_serve_model_exports_metrics_with_the_adapter_hash():
    with TestClient(create_app(model=HashedModel(), config=ServerConfig(batch_wait_ms=1))) as client:
        resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert f'adapters="radiology={"r" * 64}"' in text
    assert "radbridge_model_server_loaded 1.0" in text
    assert "radbridge_model_server_in_flight 0.0" in text
    assert "process_resident_memory_bytes" in text


def test_metrics_needs_the_bearer_token_when_one_is_set():
    app = create_app(model=HashedModel(), config=ServerConfig(batch_wait_ms=1, api_key="k"))
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer k"}).status_code == 200
