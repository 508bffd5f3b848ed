"""The tgi backend against the real model server, stopped mid-stream: no commits, no dead letters; recovery after."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from radbridge.adapters.kafka.broker import EmbeddedBroker, free_port
from radbridge.adapters.model.tgi import TgiGenerator
from radbridge.domain import GenerationParams, sha256_of
from radbridge.pipeline import Drafter

from kafka_support import (
    report_key,
    REPO,
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


def _start_model_server(port: int, log_path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "radbridge.adapters.model.server", "--port", str(port), "--max-batch-size", "4",
         "--log-level", "warning"],
        cwd=REPO, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
    )

    def healthy():
        assert proc.poll() is None, f"model server exited, see {log_path}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 120, interval_s=0.5, what="model server health")
    return proc


def test_model_server_stopped_mid_stream_then_restarted(tmp_path):
    port = free_port()
    server = _start_model_server(port, tmp_path / "model1.log")
    try:
        with EmbeddedBroker() as broker:
            topics = new_topics(broker.bootstrap)
            settings = settings_for(broker.bootstrap, topics, batch_size=4, retry_initial_s=0.5, retry_max_s=2)
            # the tgi backend tries once per call: the service loop (not the client) does the waiting
            generator = TgiGenerator(f"http://127.0.0.1:{port}", timeout=120, concurrency=4)
            drafter = Drafter(generator, params=GenerationParams(max_new_tokens=8))
            first, second = radiology_messages(2, seed="tgi-a"), radiology_messages(2, seed="tgi-b")
            with ThreadedService(settings, drafter=drafter) as svc:
                publish(broker.bootstrap, topics.input, first)
                ends = end_offsets(broker.bootstrap, topics.input, expect=2)
                wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 300,
                         what="first messages drafted by the model server")

                server.terminate()
                server.wait(30)
                publish(broker.bootstrap, topics.input, second)
                retries = lambda: svc.metric("radbridge_retries_total", stage="generate",  # noqa: E731
                                             error_type="generator_unavailable")
                wait_for(lambda: retries() >= 2, 60, what="retries while the model server is down")
                assert committed(broker.bootstrap, topics.group, topics.input) == ends
                assert svc.metric("radbridge_handled_total", status="rejected") == 0
                assert httpx.get(f"http://127.0.0.1:{svc.ops_port}/readyz", timeout=5).status_code == 503

                server = _start_model_server(port, tmp_path / "model2.log")
                all_ends = end_offsets(broker.bootstrap, topics.input, expect=4)
                wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == all_ends, 300,
                         what="drafting resumes after the model server returns")

            outputs = read_topic(broker.bootstrap, topics.output, expect=4)
            assert {o.key.decode() for o in outputs} == {report_key(m) for m in first + second}
            assert all(dict(o.headers)["model"].startswith(b"tgi:") for o in outputs)
            assert read_topic(broker.bootstrap, topics.dlq, timeout_s=1) == []
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(30)
