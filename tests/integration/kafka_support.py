"""Helpers for the Kafka service tests: topics, messages written for these tests, reading topics back."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from radbridge.adapters.kafka.clients import ensure_topics
from radbridge.domain import sha256_of
from radbridge.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3
# fast group assignment on the Tansu broker (CONTEXT.md): ~3 s instead of ~23 s
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}

_FINDINGS = (
    "Both lungs are clear. The cardiomediastinal silhouette is within normal limits. No pneumothorax.",
    "Patchy opacity at the right lung base. Small right pleural effusion. Heart size normal.",
    "Stable postoperative changes of the sternum. Lungs are hyperinflated without focal consolidation.",
    "Mild cardiomegaly. Pulmonary vascular congestion. No large effusion or pneumothorax seen.",
    "Left upper lobe nodule measuring 9 mm. No hilar enlargement. Osseous structures intact.",
)


def _fhir_report(n: int, tag: str, *, status: str = "preliminary", category: str = "RAD", conclusion: str | None = None,
                 findings: str | None = "default") -> bytes:
    text = _FINDINGS[n % len(_FINDINGS)] if findings == "default" else findings
    resource: dict = {
        "resourceType": "DiagnosticReport",
        "id": f"kt-{tag}",
        "status": status,
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                             "code": "ACSN"}]}, "system": "urn:test:acsn", "value": f"A{n}"}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5", "display": "XR Chest 2 Views"}]}
        if category == "RAD" else {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
        "subject": {"identifier": {"system": "urn:test:mrn", "value": f"M{n}"}},
        "effectiveDateTime": "2025-03-01T10:00:00Z",
        "issued": "2025-03-01T10:30:00Z",
    }
    if text is not None:
        body = f"FINDINGS: {text} (study {tag})"
        resource["presentedForm"] = [{"contentType": "text/plain", "data": base64.b64encode(body.encode()).decode()}]
    if conclusion:
        resource["conclusion"] = conclusion
    return json.dumps(resource).encode()


@dataclass
class Mix:
    """Messages of every kind the service must tell apart, with what each one should become."""

    messages: list[bytes] = field(default_factory=list)
    drafted: set[bytes] = field(default_factory=set)
    skipped: dict[bytes, str] = field(default_factory=dict)
    poison: set[bytes] = field(default_factory=set)


def mixed_messages(n: int, seed: str = "") -> Mix:
    """Mostly radiology to draft; every 7th a lab result, every 11th signed, every 13th garbage."""
    mix = Mix()
    for i in range(n):
        tag = f"{seed}{i}"
        if i % 13 == 5:
            data = f"not a message {tag}".encode()
            mix.poison.add(data)
        elif i % 11 == 3:
            data = _fhir_report(i, tag, status="final", conclusion="No acute disease.")
            mix.skipped[data] = "already_signed"
        elif i % 7 == 2:
            data = _fhir_report(i, tag, category="LAB")
            mix.skipped[data] = "not_radiology"
        else:
            data = _fhir_report(i, tag)
            mix.drafted.add(data)
        mix.messages.append(data)
    return mix


def report_key(message: bytes, index: int = 0) -> str:
    """The output record key of report ``index`` of ``message`` (SourceRef.key): one record per report."""
    return f"{sha256_of(message)[:32]}-{index}"


def radiology_messages(n: int, seed: str = "") -> list[bytes]:
    return [_fhir_report(i, f"{seed}{i}") for i in range(n)]


@dataclass
class Topics:
    input: str
    output: str
    dlq: str
    group: str


def new_topics(bootstrap: str, partitions: int = PARTITIONS) -> Topics:
    run = uuid.uuid4().hex[:8]
    topics = Topics(f"in-{run}", f"out-{run}", f"dlq-{run}", f"g-{run}")
    ensure_topics({"bootstrap_servers": bootstrap}, [topics.input, topics.output, topics.dlq], partitions=partitions)
    return topics


def settings_for(bootstrap: str, topics: Topics, **overrides) -> Settings:
    values = dict(
        kafka_bootstrap=bootstrap,
        input_topics=[topics.input],
        output_topic=topics.output,
        dlq_topic=topics.dlq,
        group_id=topics.group,
        backend="instant",
        metrics_port=0,
        batch_size=16,
        batch_wait_ms=50,
        retry_initial_s=0.2,
        retry_max_s=1.0,
        **FAST_GROUP,
    )
    values.update(overrides)
    return Settings(**values)


def env_for(bootstrap: str, topics: Topics, **overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADBRIDGE_")}
    values = {
        "KAFKA_BOOTSTRAP": bootstrap,
        "INPUT_TOPICS": topics.input,
        "OUTPUT_TOPIC": topics.output,
        "DLQ_TOPIC": topics.dlq,
        "GROUP_ID": topics.group,
        "BACKEND": "instant",
        "METRICS_PORT": "0",
        "BATCH_SIZE": "8",
        "BATCH_WAIT_MS": "20",
        "SESSION_TIMEOUT_MS": "6000",
        "HEARTBEAT_INTERVAL_MS": "1000",
        **{k.upper(): str(v) for k, v in overrides.items()},
    }
    env.update({f"RADBRIDGE_{k}": v for k, v in values.items()})
    return env


def publish(bootstrap: str, topic: str, messages: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        # key by content: the same message always lands in the same partition
        futures = [producer.send(topic, key=sha256_of(m)[:8].encode(), value=m) for m in messages]
        producer.flush(30)
        for f in futures:
            f.get(30)
    finally:
        producer.close(5)


_DRAFT_TIMES = re.compile(rb'"(issued|recorded|identifiedDateTime)":"[^"]*"')


def without_draft_times(value: bytes) -> bytes:
    """An output Bundle without the times the draft was made: what a redelivery must repeat byte for byte."""
    return _DRAFT_TIMES.sub(rb'"\1":"-"', value)


def read_topic(bootstrap: str, topic: str, *, expect: int | None = None, timeout_s: float = 30.0,
               settle_s: float = 0.5) -> list:
    """Every record of a topic (no group): waits for ``expect`` records, then a little longer for extras."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=-1)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list = []
        deadline = time.monotonic() + timeout_s
        settle_until = None
        while time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=200).values():
                records.extend(recs)
            if expect is None or len(records) >= expect:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
        return records
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets (a consumer that never subscribes does not join the group)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or [])
        offsets = {p: consumer.committed(TopicPartition(topic, p)) for p in parts}
        return {p: o for p, o in offsets.items() if o is not None and o >= 0}
    finally:
        consumer.close(autocommit=False)


def end_offsets(bootstrap: str, topic: str, expect: int) -> dict[int, int]:
    """Next offset per partition, from the records themselves (Tansu's ListOffsets answer is not reliable)."""
    ends: dict[int, int] = {}
    for r in read_topic(bootstrap, topic, expect=expect, settle_s=0):
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return ends


def wait_for(predicate, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class ThreadedService:
    """The real service (runner.serve) on a thread of the test process, for access to its metrics."""

    def __init__(self, settings: Settings, drafter=None, fhir_store=None):
        from radbridge.service.runner import serve

        self.service = None
        self._ready = threading.Event()
        self.error: BaseException | None = None

        def on_ready(service, bootstrap, ops_port):
            self.service, self.bootstrap, self.ops_port = service, bootstrap, ops_port
            self._ready.set()

        def target():
            try:
                serve(settings, drafter=drafter, fhir_store=fhir_store, on_ready=on_ready, handle_signals=False)
            except BaseException as exc:  # surfaced by stop()
                self.error = exc
                self._ready.set()

        self.thread = threading.Thread(target=target, daemon=True)

    def __enter__(self) -> "ThreadedService":
        self.thread.start()
        assert self._ready.wait(60), "service did not start"
        if self.error:
            raise self.error
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.service is not None:
            self.service.stop()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "service did not stop"
        if self.error:
            raise self.error

    def __exit__(self, *exc) -> None:
        self.stop()

    def metric(self, name: str, **labels) -> float:
        value = self.service.metrics.registry.get_sample_value(name, labels or None)
        return value or 0.0


def start_process(env: dict, log_path: Path) -> subprocess.Popen:
    """``python -m radbridge.service`` as a separate process, logs to a file (JSON lines)."""
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "radbridge.service"], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
