"""A hung model server (accepts, never answers) behind the tgi backend, on the real broker.

The adapter tries each request once and times out; the service loop alone backs off, polling with the
partitions paused. So the consumer keeps its group membership for longer than ``max_poll_interval_ms``, and
once a server answers the record is drafted, written and committed exactly once.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from radbridge.adapters.kafka.broker import free_port
from tgi_contract import load_contract

from kafka_support import (
    report_key,
    ThreadedService,
    committed,
    end_offsets,
    new_topics,
    publish,
    radiology_messages,
    read_topic,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration

MAX_POLL_INTERVAL_S = 6.0
REQUEST_TIMEOUT_S = 2.0
CONTRACT = load_contract()


class HungServer:
    """Accepts TCP connections on ``port`` and never reads or answers them (a model server stuck mid-request)."""

    def __init__(self, port: int):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.1)  # the accept loop notices close() within 0.1 s and frees the port
        self.held: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self.sock.close()
        for conn in self.held:
            conn.close()


class AnsweringTgi:
    """A TGI stand-in on ``port``: ``/generate`` requests and answers are checked against TGI's published spec."""

    def __init__(self, port: int):
        self.generate_requests: list[dict] = []
        self.contract_errors: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, payload: dict | None) -> None:
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/info":
                    self._send(200, {"model_id": "org/base", "version": "3.3.6", "router": "text-generation-router"})
                else:
                    self._send(200, None)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                outer.generate_requests.append(body)
                answer = {
                    "generated_text": "No acute cardiopulmonary abnormality.<|im_end|>",
                    "details": {"finish_reason": "eos_token", "generated_tokens": 7, "seed": None,
                                "prefill": [], "tokens": []},
                }
                outer.contract_errors += CONTRACT.errors("GenerateRequest", body)
                outer.contract_errors += CONTRACT.errors("GenerateResponse", answer)
                self._send(200, answer)

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _generation(consumer) -> tuple[int, str]:
    # kafka-python keeps the group generation on its coordinator; a member thrown out rejoins with a new one
    g = consumer._coordinator._generation
    return g.generation_id, g.member_id


def test_hung_model_server_keeps_group_membership_then_drafts_once(broker):
    topics = new_topics(broker.bootstrap)
    port = free_port()
    hung = HungServer(port)
    settings = settings_for(
        broker.bootstrap, topics, backend="tgi", model_url=f"http://127.0.0.1:{port}", batch_size=1,
        request_timeout_s=REQUEST_TIMEOUT_S, max_poll_interval_ms=int(MAX_POLL_INTERVAL_S * 1000),
        retry_initial_s=0.5, retry_max_s=2.0,
    )
    answering = None
    try:
        with ThreadedService(settings) as svc:
            service, consumer = svc.service, svc.service.consumer
            revoked: list = []
            on_revoked = service._on_revoked
            # kafka-python also calls this with nothing to revoke when it first joins: only real losses count
            service._on_revoked = lambda tps: (revoked.append(set(tps)) if tps else None, on_revoked(tps))
            wait_for(lambda: consumer.assignment(), 30, what="partition assignment")
            joined = _generation(consumer)

            at_start = len(hung.held)  # the service's startup check() already met the hung server

            [message] = radiology_messages(1, seed="hung")
            publish(broker.bootstrap, topics.input, [message])
            wait_for(lambda: len(hung.held) > at_start, 15, what="a request to the hung server")
            hung_since = time.monotonic()
            # stay hung well past max_poll_interval_ms: a loop that blocked that long would lose the group
            time.sleep(1.5 * MAX_POLL_INTERVAL_S)
            # one timed-out request per batch attempt (no retries inside the adapter), retried by the loop
            attempts = len(hung.held) - at_start
            assert 3 <= attempts <= (time.monotonic() - hung_since) / REQUEST_TIMEOUT_S + 1
            assert svc.metric("radbridge_retries_total", stage="generate", error_type="generator_unavailable") >= 3
            assert committed(broker.bootstrap, topics.group, topics.input) == {}
            assert revoked == [] and _generation(consumer) == joined

            hung.close()
            answering = AnsweringTgi(port)
            ends = end_offsets(broker.bootstrap, topics.input, expect=1)
            wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 30, what="the commit")

            assert len(answering.generate_requests) == 1 and answering.contract_errors == []
            outputs = read_topic(broker.bootstrap, topics.output, expect=1, settle_s=1.0)
            assert [o.key.decode() for o in outputs] == [report_key(message)]
            assert json.loads(outputs[0].value)["resourceType"] == "Bundle"
            assert read_topic(broker.bootstrap, topics.dlq, timeout_s=1) == []
            assert svc.metric("radbridge_drafted_total") == 1
            assert revoked == [] and _generation(consumer) == joined  # one membership from start to end
    finally:
        hung.close()
        if answering is not None:
            answering.close()
