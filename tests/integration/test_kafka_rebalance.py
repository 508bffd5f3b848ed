"""Two service instances in one consumer group: partitions move between them and no message is lost."""

from __future__ import annotations

import json
import signal
from collections import defaultdict

import pytest

from radbridge.adapters.kafka.broker import EmbeddedBroker

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


def _events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _drafted(path) -> int:
    return sum(1 for e in _events(path) if e["event"] == "drafted")


def _assigned(path) -> list[list[str]]:
    return [e["partitions"] for e in _events(path) if e["event"] == "partitions assigned"]


def test_rebalance_between_two_instances_loses_nothing(tmp_path):
    with EmbeddedBroker() as broker:
        topics = new_topics(broker.bootstrap)
        waves = [radiology_messages(300, seed=f"w{w}-") for w in range(3)]
        env = env_for(broker.bootstrap, topics, batch_size=4)
        log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"

        a = start_process(env, log_a)
        b = None
        try:
            publish(broker.bootstrap, topics.input, waves[0])
            wait_for(lambda: _drafted(log_a) >= 20, 60, what="instance A drafting")
            b = start_process(env, log_b)  # joins mid-stream: the group rebalances under load
            wait_for(lambda: any(_assigned(log_b)), 60, what="instance B assigned partitions")
            publish(broker.bootstrap, topics.input, waves[1])
            wait_for(lambda: _drafted(log_b) > 0, 60, what="instance B took over partitions")

            a.send_signal(signal.SIGTERM)  # A leaves: its partitions move to B
            assert a.wait(30) == 0
            publish(broker.bootstrap, topics.input, waves[2])
            everything = [m for wave in waves for m in wave]
            ends = end_offsets(broker.bootstrap, topics.input, expect=len(everything))
            wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 90, what="all committed")
        finally:
            for proc in (a, b):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)

        outputs = read_topic(broker.bootstrap, topics.output, expect=len(everything))

    by_key: dict[bytes, set] = defaultdict(set)
    for out in outputs:
        by_key[out.key].add((without_draft_times(out.value), tuple(out.headers)))
    assert set(by_key) == {report_key(m).encode() for m in everything}
    assert all(len(v) == 1 for v in by_key.values())  # any repeat is byte-identical
    # both instances really shared the work, and B ended up owning every partition
    assert _drafted(log_a) > 0 and _drafted(log_b) > 0
    assert len(_assigned(log_b)[-1]) == 3
