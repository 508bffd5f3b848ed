"""Wall-clock budget per message (issue 12, item 2): a message whose reading takes longer than
``message_budget_s`` is dead-lettered as too_slow; the rest of its batch is drafted and committed."""

from __future__ import annotations

import pytest

import radbridge.limits as limits_module
import radbridge.pipeline as pipeline
from radbridge.adapters.model.memory import InstantGenerator
from radbridge.errors import TooSlow
from radbridge.limits import DEFAULT_LIMITS, Limits
from radbridge.pipeline import Drafter, Envelope
from radbridge.settings import Settings
from test_service_loop import T0, FakeConsumer, FakeProducer, _report, _service, _stop_when_drained

SLOW = b"slow"  # a marker inside the payload the injected reader is slow on


class FakeTime:
    """time.monotonic() for radbridge.limits (the budget's one clock): moves only when the slow reader says so."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeTime()
    real_read = pipeline.read_message

    def slow_reader(data, fmt=None, **kw):
        if SLOW in data:
            fake.now += 11.0  # over the default 10 s budget
        return real_read(data, fmt, **kw)

    monkeypatch.setattr(limits_module, "time", fake)
    monkeypatch.setattr(pipeline, "read_message", slow_reader)
    return fake


def slow_report(n: int) -> bytes:
    return _report(n).replace(f'"u{n}"'.encode(), f'"slow{n}"'.encode())  # the report id


def test_a_read_over_budget_is_rejected_as_too_slow_and_the_batch_goes_on(clock):
    drafter = Drafter(InstantGenerator())
    fast1, slow, fast2 = drafter.process([Envelope(_report(1)), Envelope(slow_report(2)), Envelope(_report(3))])
    assert (fast1.status, fast2.status) == ("drafted", "drafted")
    assert slow.status == "rejected" and isinstance(slow.error, TooSlow) and slow.error.kind == "too_slow"
    assert str(slow.error) == "message_budget_s exceeded: reading took 11.0 s > 10 s"
    assert not slow.drafts  # nothing drafted late


def test_the_budget_comes_from_settings(clock, monkeypatch):
    monkeypatch.setenv("RADBRIDGE_MESSAGE_BUDGET_S", "20")
    limits = Limits.from_settings(Settings())
    assert limits.message_budget_s == 20 and DEFAULT_LIMITS.message_budget_s == 10
    (outcome,) = Drafter(InstantGenerator(), limits=limits).process([Envelope(slow_report(1))])
    assert outcome.status == "drafted"  # 11 s is inside a 20 s budget


def test_the_service_dead_letters_the_slow_message_and_commits_the_rest(clock):
    consumer = FakeConsumer({T0: [_report(1), slow_report(2), _report(3)]})
    producer = FakeProducer()
    service = _service(consumer, producer)
    consumer.on_poll = _stop_when_drained(service)
    service.run()

    dead = [(v, dict(h)) for t, _, v, h in producer.acked if t == "dlq"]
    assert [v for v, _ in dead] == [slow_report(2)]  # the original bytes
    assert dead[0][1]["dlq-error-type"] == b"too_slow"
    assert dead[0][1]["dlq-reason"].startswith(b"message_budget_s exceeded")
    assert [t for t, *_ in producer.acked].count("out") == 2
    assert consumer.commits[-1] == {T0: 3}
    assert service.metrics.registry.get_sample_value("radbridge_dead_lettered_total", {"error_type": "too_slow"}) == 1


class TickingTime:
    """time.monotonic() for radbridge.limits: every reading of the clock is 0.01 s later (counted)."""

    def __init__(self):
        self.calls = 0

    def monotonic(self) -> float:
        self.calls += 1
        return 1000.0 + 0.01 * self.calls


def test_a_read_over_budget_stops_mid_read_not_at_its_end(monkeypatch):
    """The readers check the budget as they go (limits.on_time): a message of 5,000 Bundle entries on a clock that
    runs out after about 1,000 checks is stopped there, not read to its end and judged afterwards."""
    import json

    ticking = TickingTime()
    monkeypatch.setattr(limits_module, "time", ticking)
    report = json.loads(_report(1))
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {**report, "id": f"r{i}"}} for i in range(5_000)]}
    limits = Limits(max_entries=10_000, max_reports=10_000, message_budget_s=10)
    (outcome,) = Drafter(InstantGenerator(), limits=limits).process([Envelope(json.dumps(bundle).encode())])
    assert outcome.status == "rejected" and outcome.error.kind == "too_slow" and not outcome.drafts
    assert 1_000 <= ticking.calls < 1_100  # stopped at the first check over 10 s: a fifth of the way in


def test_outside_a_read_the_check_does_nothing(monkeypatch):
    ticking = TickingTime()
    monkeypatch.setattr(limits_module, "time", ticking)
    limits_module.on_time()
    assert ticking.calls == 0
    with limits_module.reading_budget(1):
        with pytest.raises(TooSlow):
            for _ in range(200):
                limits_module.on_time()
    assert 100 <= ticking.calls <= 102
    limits_module.on_time()  # the budget ended with its block
