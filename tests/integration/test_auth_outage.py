"""Refused credentials are an outage: the real service on the real broker, writing to sekmet through a stand-in
that issues OAuth2 tokens and answers 401 for a while; and configuration mistakes that stop `radbridge serve`
with one line."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from radbridge.adapters.fhir_server.store import HttpFhirStore
from radbridge.ids import DRAFT_SYSTEM

from kafka_support import (
    report_key,
    REPO,
    ThreadedService,
    committed,
    end_offsets,
    env_for,
    new_topics,
    publish,
    read_topic,
    settings_for,
    wait_for,
)
from test_lifecycle_fhir import _message

pytestmark = pytest.mark.integration

CLIENT_ID, CLIENT_SECRET = "radbridge-it", "it-secret"


class AuthProxy:
    """A FHIR server's front door: ``/token`` grants client-credentials tokens; every other request needs one of
    them and goes on to sekmet, unless ``refusing`` (the site revoked our grant): then 401, as a real server does."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.refusing = False
        self.issued: set[str] = set()
        self.refused = 0
        self.forwarded = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                if self.path == "/token":
                    return proxy._token(self, body)
                if proxy.refusing or self.headers.get("Authorization", "")[7:] not in proxy.issued:
                    proxy.refused += 1
                    return proxy._reply(self, 401, b'{"resourceType":"OperationOutcome","issue":[{"severity":"error",'
                                                    b'"code":"login"}]}')
                proxy.forwarded += 1
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
                r = httpx.request(self.command, proxy.upstream + self.path.removeprefix("/fhir"), content=body or None,
                                  headers=headers, timeout=30)
                # links in bundles (paging) must name this door, not the server behind it
                return proxy._reply(self, r.status_code, r.content.replace(proxy.upstream.encode(), proxy.base.encode()),
                                    r.headers.get("content-type", "application/fhir+json"))

            do_GET = do_POST = do_PUT = _any  # noqa: N815

            def log_message(self, *args):
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        port = self.server.server_address[1]
        self.base, self.token_url = f"http://127.0.0.1:{port}/fhir", f"http://127.0.0.1:{port}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _token(self, handler, body: bytes):
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        basic = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if form.get("grant_type") != "client_credentials" or handler.headers.get("Authorization") != basic:
            return self._reply(handler, 401, b'{"error":"invalid_client"}', "application/json")
        token = uuid.uuid4().hex
        self.issued.add(token)
        return self._reply(handler, 200, f'{{"access_token":"{token}","token_type":"bearer","expires_in":3600}}'.encode(),
                           "application/json")

    @staticmethod
    def _reply(handler, status: int, body: bytes, ctype: str = "application/fhir+json"):
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_fhir_401_pauses_the_partitions_dead_letters_nothing_and_delivers_everything_once_renewed(broker, sekmet_fhir):
    proxy = AuthProxy(sekmet_fhir.base_url)
    proxy.refusing = True  # already refused at start: the startup check fails, /readyz says why
    accessions = [f"ACC-{uuid.uuid4().hex[:12]}" for _ in range(6)]
    messages = [_message(acc, "preliminary") for acc in accessions]
    topics = new_topics(broker.bootstrap)
    settings = settings_for(broker.bootstrap, topics, batch_size=2, fhir_url=proxy.base, fhir_token_url=proxy.token_url,
                            fhir_client_id=CLIENT_ID, fhir_client_secret=CLIENT_SECRET, request_timeout_s=10)
    try:
        with ThreadedService(settings) as svc:
            readyz = lambda: httpx.get(f"http://127.0.0.1:{svc.ops_port}/readyz", timeout=5)  # noqa: E731
            wait_for(lambda: svc.service.health.running, 30, what="the loop running")
            start = readyz()
            assert start.status_code == 503
            assert start.json()["reason"] == "auth_failed: fhir (startup check)"
            assert start.json()["embedded_broker"] is False

            publish(broker.bootstrap, topics.input, messages)
            wait_for(lambda: svc.metric("radbridge_retries_total", stage="deliver", error_type="auth_failed") >= 3, 60,
                     what="deliveries refused and retried")
            during = readyz()
            assert during.status_code == 503 and "auth_failed: fhir" in during.json()["reason"]
            assert httpx.get(f"http://127.0.0.1:{svc.ops_port}/healthz", timeout=5).status_code == 200
            assert committed(broker.bootstrap, topics.group, topics.input) == {}
            assert svc.metric("radbridge_auth_failures_total", dependency="fhir") >= 3
            assert read_topic(broker.bootstrap, topics.dlq, timeout_s=1) == []

            proxy.refusing = False  # the grant is renewed
            ends = end_offsets(broker.bootstrap, topics.input, expect=len(messages))
            wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 60, what="recovery")
            wait_for(lambda: readyz().status_code == 200, 30, what="ready again")
            assert readyz().json() == {"ready": True, "embedded_broker": False}
            assert svc.metric("radbridge_dead_lettered_total", error_type="auth_failed") == 0
            assert svc.metric("radbridge_drafted_total") == len(messages)

        assert read_topic(broker.bootstrap, topics.dlq, timeout_s=1) == []
        outputs = read_topic(broker.bootstrap, topics.output, expect=len(messages))
        assert {o.key.decode() for o in outputs} == {report_key(m) for m in messages}
        with HttpFhirStore(sekmet_fhir.base_url, timeout=10.0) as store:
            for acc in accessions:  # every draft reached the FHIR server, once
                drafts = [r for r in store.search("DiagnosticReport", {"identifier": acc})
                          if any(i.get("system") == DRAFT_SYSTEM for i in r["identifier"])]
                assert len(drafts) == 1 and drafts[0]["status"] == "preliminary"
        assert proxy.refused >= 3 and proxy.forwarded >= len(messages)
    finally:
        proxy.close()


def _serve(env: dict, timeout_s: float = 60) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("radbridge")  # the console script, as an operator runs it
    return subprocess.run([str(script), "serve"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_mistyped_variable_stops_serve_with_one_line_naming_it(broker):
    topics = new_topics(broker.bootstrap)
    env = env_for(broker.bootstrap, topics)
    env["RADBRIDGE_KAFKA_BOOTSTRAPS"] = env.pop("RADBRIDGE_KAFKA_BOOTSTRAP")  # the typo of the issue
    done = _serve(env)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "radbridge: configuration: unknown setting RADBRIDGE_KAFKA_BOOTSTRAPS (did you mean RADBRIDGE_KAFKA_BOOTSTRAP?)"
    ]
    assert "embedded" not in done.stdout + done.stderr  # refused before any broker, embedded or not, was started
    module = subprocess.run([sys.executable, "-m", "radbridge.service"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60)  # the systemd unit's way in: the same one line
    assert module.returncode == 2 and module.stderr.splitlines() == done.stderr.strip().splitlines()


def test_no_broker_at_the_bootstrap_is_one_line_not_a_traceback(tmp_path):
    port = _free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADBRIDGE_")}
    env.update(RADBRIDGE_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}", RADBRIDGE_BACKEND="instant", RADBRIDGE_METRICS_PORT="0",
               RADBRIDGE_KAFKA_OPT_BOOTSTRAP_TIMEOUT_MS="3000")  # passthrough: give up after 3 s, not kafka's 30
    done = _serve(env)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"radbridge: broker_unavailable: no Kafka broker answered at 127.0.0.1:{port} "
                     "(KafkaTimeoutError); check RADBRIDGE_KAFKA_BOOTSTRAP"]
    assert "Traceback" not in done.stdout + done.stderr


def test_the_embedded_broker_is_announced_in_the_log_and_in_readyz(caplog):
    import logging

    from radbridge.settings import Settings

    settings = Settings(backend="instant", embedded_port=0, metrics_port=0, group_id=f"g-{uuid.uuid4().hex[:8]}")
    with caplog.at_level(logging.WARNING, logger="radbridge.service.runner"), ThreadedService(settings) as svc:
        wait_for(lambda: svc.service.health.ready, 30, what="ready")
        body = httpx.get(f"http://127.0.0.1:{svc.ops_port}/readyz", timeout=5).json()
    assert body == {"ready": True, "embedded_broker": True}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "EMBEDDED BROKER" in r.getMessage()]
    assert len(warnings) == 1 and "RADBRIDGE_KAFKA_BOOTSTRAP is not set" in warnings[0].getMessage()


class TgiStub:
    """A TGI-shaped model server that wants ``Bearer <key>`` and answers 401 while ``refusing``."""

    def __init__(self, key: str):
        self.key, self.refusing, self.refused, self.generated = key, False, 0, 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                if stub.refusing or self.headers.get("Authorization") != f"Bearer {stub.key}":
                    stub.refused += 1
                    return self._json(401, {"error": "unauthorized"})
                if self.path == "/info":
                    return self._json(200, {"model_id": "stub/base", "version": "0"})
                if self.path == "/generate":
                    stub.generated += 1
                    return self._json(200, {"generated_text": "No acute cardiopulmonary abnormality.", "details": {
                        "finish_reason": "eos_token", "generated_tokens": 6, "seed": None, "prefill": [],
                        "tokens": [{"id": 2, "text": "<|im_end|>", "logprob": -0.1, "special": True}]}})
                return self._json(200, {})

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _any  # noqa: N815

            def log_message(self, *args):
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_model_server_401_pauses_drafting_and_everything_is_drafted_once_it_accepts_the_key(broker):
    stub = TgiStub("model-key")
    stub.refusing = True
    messages = [_message(f"ACC-{uuid.uuid4().hex[:12]}", "preliminary") for _ in range(4)]
    topics = new_topics(broker.bootstrap)
    settings = settings_for(broker.bootstrap, topics, batch_size=2, backend="tgi", model_url=stub.url,
                            model_api_key="model-key")
    try:
        with ThreadedService(settings) as svc:
            readyz = lambda: httpx.get(f"http://127.0.0.1:{svc.ops_port}/readyz", timeout=5)  # noqa: E731
            assert readyz().json()["reason"] == "auth_failed: model (startup check)"
            publish(broker.bootstrap, topics.input, messages)
            wait_for(lambda: svc.metric("radbridge_retries_total", stage="generate", error_type="auth_failed") >= 3, 60,
                     what="drafting refused and retried")
            assert readyz().status_code == 503 and readyz().json()["reason"].startswith("auth_failed: model")
            assert committed(broker.bootstrap, topics.group, topics.input) == {}
            assert svc.metric("radbridge_auth_failures_total", dependency="model") >= 3

            stub.refusing = False
            ends = end_offsets(broker.bootstrap, topics.input, expect=len(messages))
            wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 60, what="recovery")
            wait_for(lambda: readyz().status_code == 200, 30, what="ready again")
            assert svc.metric("radbridge_drafted_total") == len(messages)
        assert read_topic(broker.bootstrap, topics.dlq, timeout_s=1) == []
        assert len(read_topic(broker.bootstrap, topics.output, expect=len(messages))) == len(messages)
        assert stub.generated >= len(messages)
    finally:
        stub.close()
