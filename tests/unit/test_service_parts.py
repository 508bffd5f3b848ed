"""Output/dead-letter records, backoff, ops endpoints and Kafka client settings of the service."""

from __future__ import annotations

import httpx
import pytest

from radbridge.adapters.kafka.clients import consumer_config, producer_config, security_config
from radbridge.errors import MalformedMessage
from radbridge.retry import RetryPolicy
from radbridge.service.backoff import Backoff
from radbridge.service.http import OpsServer
from radbridge.service.loop import Health, envelope_of
from radbridge.service.metrics import ServiceMetrics
from radbridge.service.records import dead_letter_record, reason_of
from radbridge.settings import Settings

from test_service_loop import Rec


def test_dead_letter_keeps_original_bytes_key_and_headers_and_says_why_and_where():
    record = Rec("ris.oru", 2, 41, b"MSH|broken\rOBX|1", key=b"k1", timestamp=1234, headers=[("trace", b"t-1")])
    out = dead_letter_record("dlq", record, MalformedMessage("MSH-9 missing", where="MSH-9", message_id="C7"), "C7")
    assert (out.topic, out.key, out.value) == ("dlq", b"k1", b"MSH|broken\rOBX|1")
    h = dict(out.headers)
    assert h["trace"] == b"t-1"  # the producer's own headers survive
    assert h["dlq-error-type"] == b"malformed" and h["dlq-error-class"] == b"MalformedMessage"
    assert h["dlq-reason"] == b"MSH-9 missing at MSH-9 in message C7"
    assert (h["dlq-source-topic"], h["dlq-source-partition"], h["dlq-source-offset"]) == (b"ris.oru", b"2", b"41")
    assert h["dlq-source-timestamp"] == b"1234" and h["dlq-message-id"] == b"C7"
    # deterministic: the same failure on a redelivery writes the same record
    again = dead_letter_record("dlq", record, MalformedMessage("MSH-9 missing", where="MSH-9", message_id="C7"), "C7")
    assert again == out


def test_reason_is_one_bounded_line():
    reason = reason_of(ValueError("a\nb\r\n" + "x" * 2000))
    assert "\n" not in reason and reason.startswith("a b ") and len(reason) == 500


def test_envelope_uses_record_time_not_the_clock():
    record = Rec("t", 0, 5, b"x", timestamp=1_700_000_000_000)
    assert envelope_of(record) == envelope_of(record)
    assert envelope_of(record).received_at.isoformat() == "2023-11-14T22:13:20+00:00"
    assert envelope_of(record).location == "kafka:t/0@5"


def test_backoff_grows_exponentially_is_capped_and_never_gives_up():
    # a bounded policy (what CLI commands get) still never stops the service: its loop waits out any outage
    b = Backoff(RetryPolicy(initial_s=0.5, max_s=4, attempts=2, jitter=0))
    assert [b.next_delay() for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert b.attempts == 6
    b.reset()
    assert b.next_delay() == 0.5


def test_backoff_jitter_stays_within_its_band():
    b = Backoff(RetryPolicy(initial_s=1.0, max_s=1.0, jitter=0.1))
    delays = [b.next_delay() for _ in range(200)]
    assert all(0.9 <= d <= 1.1 for d in delays) and len(set(delays)) > 1


def test_ops_endpoints_follow_loop_state():
    metrics, health = ServiceMetrics(), Health(stall_after_s=60)
    metrics.drafted.inc(3)
    ops = OpsServer(metrics, health, port=0).start()
    try:
        get = lambda p: httpx.get(f"http://127.0.0.1:{ops.port}{p}", timeout=5)  # noqa: E731
        assert get("/healthz").status_code == 503  # not started
        health.running = True
        health.tick()
        assert get("/healthz").status_code == 200 and get("/readyz").status_code == 200
        health.backing_off, health.last_error = True, "generator_unavailable"
        ready = get("/readyz")
        assert ready.status_code == 503 and "generator_unavailable" in ready.text
        assert get("/healthz").status_code == 200  # alive while waiting for the model
        assert "radbridge_drafted_total 3.0" in get("/metrics").text
        assert get("/nope").status_code == 404
    finally:
        ops.stop()


def test_tls_and_sasl_settings_pass_through_and_secrets_stay_masked():
    s = Settings(
        kafka_bootstrap="k1:9093,k2:9093", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="rb", sasl_password="s3cret-pw", ssl_cafile="/etc/ca.pem", ssl_password="key-pw",
        group_id="g", batch_size=12, session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )
    sec = security_config(s)
    assert sec == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "rb",
        "sasl_plain_password": "s3cret-pw", "ssl_cafile": "/etc/ca.pem", "ssl_password": "key-pw",
    }
    assert "s3cret-pw" not in repr(s) and "s3cret-pw" not in str(s.public_dict())
    prod = producer_config(s, s.kafka_bootstrap)
    assert prod["acks"] == "all" and prod["max_in_flight_requests_per_connection"] == 1
    assert prod["bootstrap_servers"] == ["k1:9093", "k2:9093"] and prod["request_timeout_ms"] > 0
    cons = consumer_config(s, s.kafka_bootstrap)
    assert cons["enable_auto_commit"] is False and cons["group_id"] == "g" and cons["max_poll_records"] == 12
    assert (cons["session_timeout_ms"], cons["heartbeat_interval_ms"]) == (6000, 1000)


def test_plaintext_default_passes_no_security_keys_beyond_protocol():
    assert security_config(Settings()) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("env,expected", [("a, b,,c", ["a", "b", "c"]), ("single", ["single"])])
def test_input_topics_from_environment(monkeypatch, env, expected):
    monkeypatch.setenv("RADBRIDGE_INPUT_TOPICS", env)
    assert Settings().input_topics == expected
