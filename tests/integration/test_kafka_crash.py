"""The service as a real process: SIGKILL mid-stream loses nothing; SIGTERM finishes, commits and exits cleanly."""

from __future__ import annotations

import json
import signal
from collections import defaultdict

import pytest


from kafka_support import (
    report_key,
    without_draft_times,
    committed,
    end_offsets,
    env_for,
    new_topics,
    publish,
    radiology_messages,
    read_topic,
    start_process,
    wait_for,
)

pytestmark = pytest.mark.integration

N = 600


def _count(bootstrap, topic) -> int:
    return len(read_topic(bootstrap, topic, timeout_s=0.5, settle_s=0))


def _stop(proc, sig=signal.SIGTERM, timeout_s=30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout_s)


def test_sigkill_mid_stream_then_restart_every_input_has_its_output(broker, tmp_path):
    topics = new_topics(broker.bootstrap)
    messages = radiology_messages(N, seed="kill")
    publish(broker.bootstrap, topics.input, messages)
    ends = end_offsets(broker.bootstrap, topics.input, expect=N)
    env = env_for(broker.bootstrap, topics, batch_size=4)

    first = start_process(env, tmp_path / "first.log")
    try:
        wait_for(lambda: _count(broker.bootstrap, topics.output) >= 30, 60, what="first outputs")
    finally:
        first.kill()  # SIGKILL: no chance to finish the batch or commit
        first.wait(10)
    at_kill = committed(broker.bootstrap, topics.group, topics.input)
    assert sum(at_kill.values()) < N, "the kill came after everything was done: not mid-stream"

    second = start_process(env, tmp_path / "second.log")
    try:
        wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 90, what="restart catches up")
    finally:
        assert _stop(second) == 0

    outputs = read_topic(broker.bootstrap, topics.output, expect=N)
    by_key: dict[bytes, list] = defaultdict(list)
    for out in outputs:
        by_key[out.key].append(out)
    assert set(by_key) == {report_key(m).encode() for m in messages}  # none lost
    for copies in by_key.values():  # repeats are redeliveries, identical but for the time each draft was made
        assert len({(without_draft_times(c.value), tuple(c.headers)) for c in copies}) == 1
    assert read_topic(broker.bootstrap, topics.dlq, timeout_s=1) == []


def test_sigterm_finishes_in_flight_batch_commits_and_exits_cleanly(broker, tmp_path):
    topics = new_topics(broker.bootstrap)
    messages = radiology_messages(N, seed="term")
    publish(broker.bootstrap, topics.input, messages)
    env = env_for(broker.bootstrap, topics, batch_size=4)
    log_path = tmp_path / "service.log"

    proc = start_process(env, log_path)
    try:
        wait_for(lambda: _count(broker.bootstrap, topics.output) >= 30, 60, what="first outputs")
    finally:
        code = _stop(proc, signal.SIGTERM)
    assert code == 0

    done = committed(broker.bootstrap, topics.group, topics.input)
    outputs = read_topic(broker.bootstrap, topics.output, timeout_s=2)
    assert 0 < sum(done.values()) < N
    # every output written was committed: nothing was left half-done for a redelivery to repeat
    for out in outputs:
        h = {k: v.decode() for k, v in out.headers}
        assert int(h["source-offset"]) < done.get(int(h["source-partition"]), 0)
    assert len(outputs) == sum(done.values())  # and every committed record has its output

    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "stop requested" in names and names[-1] == "service stopped"
    assert next(e for e in events if e["event"] == "stop requested")["signal"] == "SIGTERM"
    # identifiers only: no report text in any log line
    text = log_path.read_text()
    assert "lungs" not in text.lower() and "FINDINGS" not in text
