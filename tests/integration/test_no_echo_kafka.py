"""On the real broker: what the service writes and logs for hostile messages never echoes a sender's value.

The messages are tests/unit/test_no_echo.py's (a marker in every sender-controlled field); here they travel
through Kafka, so the headers, keys and values are read back from the topics and /metrics over HTTP.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import httpx
import pytest

from kafka_support import ThreadedService, committed, end_offsets, new_topics, publish, read_topic, settings_for, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_no_echo import _Capture, all_messages, check, echoes  # noqa: E402

pytestmark = pytest.mark.integration


def test_service_on_kafka_echoes_no_sender_value(broker):
    topics = new_topics(broker.bootstrap)
    messages = list(all_messages().values())
    capture = _Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.INFO)  # the per-message lines (skipped, dead-lettered) are INFO/WARNING
    try:
        with ThreadedService(settings_for(broker.bootstrap, topics)) as svc:
            publish(broker.bootstrap, topics.input, messages)
            ends = end_offsets(broker.bootstrap, topics.input, expect=len(messages))
            wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 60, what="all input committed")
            metrics = httpx.get(f"http://127.0.0.1:{svc.ops_port}/metrics", timeout=5).text
    finally:
        root.removeHandler(capture)
        root.setLevel(level)

    outputs = read_topic(broker.bootstrap, topics.output)
    dead = read_topic(broker.bootstrap, topics.dlq)
    assert len(dead) >= 3 and outputs  # both paths ran
    assert any('"event": "skipped"' in line for line in capture.lines)  # the logs were captured
    found: dict[str, list[str]] = {"metrics": echoes("metrics", metrics), "logs": echoes("log", "\n".join(capture.lines))}
    for name, records in (("output", outputs), ("dlq", dead)):
        for r in records:
            where = f"{name}@{r.partition}:{r.offset}"
            for key, raw in r.headers:
                # the dead-letter record keeps the source record's own headers untouched (there are none here)
                found[f"{where} header {key}"] = echoes("header", raw.decode("utf-8", "replace"))
            found[f"{where} key"] = echoes("header", (r.key or b"").decode("utf-8", "replace"))
            if name == "output":
                found[f"{where} value"] = echoes("output", r.value.decode("utf-8", "replace"))
    check(found)
