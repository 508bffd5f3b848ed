"""Refused credentials pause the loop (nothing dead-lettered, nothing committed), count in
radbridge_auth_failures_total and show in /readyz; startup checks and the embedded broker show there too."""

from __future__ import annotations

import httpx

from radbridge.adapters.fhir_server.store import HttpFhirStore, MemoryFhirStore
from radbridge.bootstrap import build_fhir_store
from radbridge.errors import AuthFailed, GeneratorUnavailable
from radbridge.service.http import OpsServer
from radbridge.service.loop import Health
from radbridge.service.metrics import ServiceMetrics
from radbridge.settings import Settings

from test_service_loop import T0, FakeConsumer, FakeProducer, _report, _service, _stop_when_drained


class RefusingStore(MemoryFhirStore):
    """A FHIR server whose token expired until ``renewed``."""

    def __init__(self):
        super().__init__()
        self.renewed = False
        self.refusals = 0

    def transact(self, bundle):
        if not self.renewed:
            self.refusals += 1
            raise AuthFailed("fhir", "FHIR server answered HTTP 401 to POST: credentials refused")
        return super().transact(bundle)


def test_fhir_401_pauses_commits_nothing_dead_letters_nothing_then_delivers_everything():
    consumer = FakeConsumer({T0: [_report(i) for i in range(4)]})
    producer = FakeProducer()
    service = _service(consumer, producer)
    store = service.fhir_store = RefusingStore()
    during = {}

    def hook(c):
        if store.refusals >= 3 and not store.renewed:
            during.update(commits=list(c.commits), ready=service.health.status(), paused=set(c.paused_tps))
            store.renewed = True
        if store.renewed and not c.paused_tps:
            _stop_when_drained(service)(c)

    consumer.on_poll = hook
    service.run()

    assert during["commits"] == [] and during["paused"] == {T0}
    assert during["ready"]["ready"] is False and during["ready"]["reason"] == "auth_failed: fhir"
    assert [t for t, *_ in producer.acked if t == "dlq"] == []
    assert consumer.commits == [{T0: 4}] and len(store.all("DiagnosticReport")) == 4
    sample = service.metrics.registry.get_sample_value
    assert sample("radbridge_auth_failures_total", {"dependency": "fhir"}) >= 3
    assert sample("radbridge_dead_lettered_total", {"error_type": "auth_failed"}) is None
    assert service.health.dependency is None and not service.health.backing_off


def test_a_startup_check_that_failed_keeps_readyz_503_until_the_dependency_answers():
    consumer = FakeConsumer({T0: []})
    service = _service(consumer, FakeProducer())
    state = {"up": False, "calls": 0}

    def check():
        state["calls"] += 1
        if not state["up"]:
            raise GeneratorUnavailable("tgi http://tgi: ConnectError talking to the model server")

    service.checks = {"model": check}
    service.health.failed_checks = {"model": "generator_unavailable"}
    seen = []

    def hook(c):
        seen.append(service.health.status())
        if state["calls"] >= 2:
            state["up"] = True
        if state["up"] and not service.health.failed_checks:
            service.stop()

    consumer.on_poll = hook
    service.run()
    assert any(s.get("reason") == "generator_unavailable: model (startup check)" for s in seen)
    assert service.health.failed_checks == {}


def test_readyz_is_json_naming_the_reason_and_the_embedded_broker():
    health = Health(stall_after_s=60, embedded_broker=True)
    ops = OpsServer(ServiceMetrics(), health, port=0).start()
    try:
        get = lambda: httpx.get(f"http://127.0.0.1:{ops.port}/readyz", timeout=5)  # noqa: E731
        assert (get().status_code, get().json()) == (503, {"ready": False, "embedded_broker": True, "reason": "starting"})
        health.running = True
        health.tick()
        assert (get().status_code, get().json()) == (200, {"ready": True, "embedded_broker": True})
        health.backing_off, health.last_error, health.dependency = True, "auth_failed", "model"
        assert get().status_code == 503 and get().json()["reason"] == "auth_failed: model"
        health.backing_off = False
        health.failed_checks["fhir"] = "auth_failed"
        body = get().json()
        assert body["reason"] == "auth_failed: fhir (startup check)" and body["failed_checks"] == {"fhir": "auth_failed"}
    finally:
        ops.stop()


def test_fhir_store_wiring_refuses_half_configured_auth(tmp_path):
    import pytest

    from radbridge.adapters.fhir_server.auth import ClientCredentials
    from radbridge.errors import ConfigurationError

    url = "https://fhir.example/r4"
    assert build_fhir_store(Settings(fhir_url=url))._auth is None
    store = build_fhir_store(Settings(fhir_url=url, fhir_token_url="https://auth/token", fhir_client_id="rb",
                                      fhir_client_secret="s", fhir_scope="system/*.rs"))
    assert isinstance(store, HttpFhirStore) and isinstance(store._auth, ClientCredentials)
    assert store._auth.scope == "system/*.rs"
    for bad, match in [
        (dict(fhir_token_url="https://auth/token"), "FHIR_CLIENT_ID"),
        (dict(fhir_token_url="https://auth/token", fhir_client_id="rb", fhir_token="t", fhir_client_secret="s"), "not both"),
        (dict(fhir_client_secret="s"), "need RADBRIDGE_FHIR_TOKEN_URL"),
        (dict(fhir_client_key=tmp_path / "k.pem"), "needs RADBRIDGE_FHIR_CLIENT_CERT"),
        (dict(fhir_client_cert=tmp_path / "missing.crt"), "TLS"),
    ]:
        with pytest.raises(ConfigurationError, match=match):
            build_fhir_store(Settings(fhir_url=url, **bad))


def test_model_ca_bundle_that_cannot_be_loaded_is_refused(tmp_path):
    import pytest

    from radbridge.adapters.model.tgi import TgiGenerator
    from radbridge.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="RADBRIDGE_MODEL_CA_BUNDLE"):
        TgiGenerator("https://tgi.example", ca_bundle=tmp_path / "missing.pem")


def test_model_401_pauses_drafting_and_names_the_model_in_readyz():
    from radbridge.adapters.model.memory import InstantGenerator

    class Expired(InstantGenerator):
        refused = 0
        renewed = False

        def generate(self, prompts, params):
            if not self.renewed:
                self.refused += 1
                raise AuthFailed("model", "tgi http://tgi: model server answered 401; credentials refused")
            return super().generate(prompts, params)

    generator = Expired()
    consumer = FakeConsumer({T0: [_report(i) for i in range(3)]})
    producer = FakeProducer()
    service = _service(consumer, producer, generator)
    seen = {}

    def hook(c):
        if generator.refused >= 2 and not generator.renewed:
            seen.update(status=service.health.status(), commits=list(c.commits))
            generator.renewed = True
        if generator.renewed and not c.paused_tps:
            _stop_when_drained(service)(c)

    consumer.on_poll = hook
    service.run()
    assert seen["status"]["reason"] == "auth_failed: model" and seen["commits"] == []
    assert consumer.commits == [{T0: 3}] and [t for t, *_ in producer.acked] == ["out"] * 3
    assert service.metrics.registry.get_sample_value("radbridge_auth_failures_total", {"dependency": "model"}) >= 2
    assert service.metrics.registry.get_sample_value(
        "radbridge_retries_total", {"stage": "generate", "error_type": "auth_failed"}) >= 2


def test_an_embedded_port_already_taken_is_refused_before_starting_a_broker():
    import socket
    from contextlib import ExitStack

    import pytest

    from radbridge.errors import ConfigurationError
    from radbridge.service.runner import start_embedded_broker

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with ExitStack() as stack, pytest.raises(ConfigurationError, match=f"RADBRIDGE_EMBEDDED_PORT {port} is already"):
            start_embedded_broker(Settings(embedded_port=port), stack)
