"""Every metric name the Grafana dashboard and the Prometheus alert rules use is exported by a running
`radbridge serve` (a separate process on the real broker), scraped from its /metrics after real traffic."""

from __future__ import annotations

import socket

import httpx
import pytest

from deploy_files import used_metric_names
from kafka_support import committed, end_offsets, env_for, mixed_messages, new_topics, publish, start_process, wait_for

pytestmark = pytest.mark.integration

_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "gauge": ("",), "info": ("_info",), "untyped": ("",)}


def exported_names(text: str) -> set[str]:
    """Sample names /metrics has or would have: from every # TYPE line (a labelled series with no samples yet
    still declares its family) and from the samples themselves."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            base = name.removesuffix("_total") if kind == "counter" else name
            names |= {base + s for s in _SUFFIXES.get(kind, ("",))} | {name}
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_metric_in_the_dashboard_and_alerts_is_exported(broker, tmp_path):
    used = used_metric_names()
    assert len(used) >= 15 and "radbridge_dead_lettered_total" in used  # the extraction really finds names
    topics = new_topics(broker.bootstrap)
    mix = mixed_messages(30, seed="deploy")
    port = _free_port()
    proc = start_process(env_for(broker.bootstrap, topics, metrics_port=port), tmp_path / "serve.log")
    try:
        publish(broker.bootstrap, topics.input, mix.messages)
        ends = end_offsets(broker.bootstrap, topics.input, expect=len(mix.messages))
        wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 60, what="all committed")
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        proc.terminate()
        proc.wait(30)

    exported = exported_names(text)
    assert not sorted(used - exported), f"used in deploy/ but not exported: {sorted(used - exported)}"
    # the traffic made the series the alerts watch most carry samples, not only declarations
    samples = {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}
    for name in ("radbridge_build_info", "radbridge_dead_lettered_total", "radbridge_consumer_lag",
                 "radbridge_end_to_end_seconds_bucket", "radbridge_model_call_seconds_bucket",
                 "process_resident_memory_bytes"):
        assert name in samples, name
    assert 'prompt_template="' in text and 'backend="instant"' in text


def test_the_name_check_can_fail():
    text = "# TYPE radbridge_drafted_total counter\nradbridge_drafted_total 3.0\n"
    assert "radbridge_drafted_total" in exported_names(text)
    assert "radbridge_dead_lettered_total" not in exported_names(text)
