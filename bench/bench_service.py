"""Sustained throughput and end-to-end latency of `radbridge serve` on the embedded broker.

Two phases per run, the service pinned to one CPU core (its Kafka client threads inherit the pin):
  drain  - a backlog of N messages is published first, then the service drains it: messages/s, and the share of
           wall time spent inside the model (generator.generate) vs everything else (Kafka, parsing, FHIR output,
           commits) = the middleware overhead;
  paced  - messages published at a fixed rate below capacity: p50/p99 end-to-end latency (input record time to
           output record time), i.e. what one message waits when the service keeps up.

    .venv/bin/python bench/bench_service.py --backend instant --drain 2000 --rate 100 --seconds 10
    .venv/bin/python bench/bench_service.py --backend local --drain 24 --rate 0.3 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kafka import KafkaConsumer, KafkaProducer  # noqa: E402
from kafka.structs import TopicPartition  # noqa: E402

from radbridge.adapters.kafka.broker import EmbeddedBroker  # noqa: E402
from radbridge.bootstrap import build_generator  # noqa: E402
from radbridge.domain import GenerationParams  # noqa: E402
from radbridge.pipeline import Drafter  # noqa: E402
from radbridge.samples import openi_reports, to_fhir, to_hl7v2  # noqa: E402
from radbridge.service.runner import serve  # noqa: E402
from radbridge.settings import Settings  # noqa: E402


class TimedGenerator:
    """Wraps the real generator and adds up the time spent inside it."""

    def __init__(self, inner):
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    @property
    def info(self):
        return self.inner.info

    def check(self):
        return self.inner.check()

    def generate(self, prompts, params):
        t = time.perf_counter()
        try:
            return self.inner.generate(prompts, params)
        finally:
            self.seconds += time.perf_counter() - t
            self.calls += 1


def messages(n: int, offset: int = 0) -> list[bytes]:
    rows = [r for r in openi_reports() if r.get("findings")]
    if not rows:
        raise SystemExit("needs ../shared/data/openi/reports.jsonl")
    out = []
    for i in range(offset, offset + n):
        row = dict(rows[i % len(rows)], uid=f"{rows[i % len(rows)]['uid']}-{i}")  # unique ids: unique keys
        out.append(to_hl7v2(row, with_impression=False) if i % 2 == 0 else to_fhir(row))
    return out


def handled(service) -> int:
    reg = service.metrics.registry
    return int(sum(reg.get_sample_value("radbridge_handled_total", {"status": s}) or 0
                   for s in ("drafted", "skipped", "rejected")))


def read_all(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    out, idle = [], 0
    while idle < 3:
        batch = consumer.poll(timeout_ms=300)
        idle = 0 if batch else idle + 1
        for recs in batch.values():
            out.extend(recs)
    consumer.close()
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="instant", choices=["instant", "local"])
    ap.add_argument("--drain", type=int, default=2000, help="backlog size for the throughput phase")
    ap.add_argument("--rate", type=float, default=100.0, help="messages/s in the paced latency phase")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the paced phase")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--core", type=int, default=0, help="CPU core the service is pinned to")
    args = ap.parse_args()

    batch = args.batch_size or (64 if args.backend == "instant" else 8)
    with EmbeddedBroker() as broker:
        settings = Settings(
            kafka_bootstrap=broker.bootstrap, backend=args.backend, batch_size=batch, batch_wait_ms=20,
            metrics_port=0, session_timeout_ms=6000, heartbeat_interval_ms=1000, log_level="WARNING",
            input_topics=["bench.in"], output_topic="bench.out", dlq_topic="bench.dlq", group_id="bench",
        )
        broker.create_topics(["bench.in", "bench.out", "bench.dlq"], partitions=3)
        timed = TimedGenerator(build_generator(settings))
        drafter = Drafter(timed, params=GenerationParams(max_new_tokens=args.max_new_tokens))
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)

        backlog = messages(args.drain)
        for m in backlog:
            producer.send("bench.in", m)
        producer.flush()

        box: dict = {}
        ready = threading.Event()

        def run():
            os.sched_setaffinity(0, {args.core})  # this thread and the client threads it starts
            serve(settings, drafter=drafter, handle_signals=False,
                  on_ready=lambda s, b, p: (box.update(service=s), ready.set()))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        ready.wait(300)
        service = box["service"]

        # --- drain: throughput and overhead -----------------------------------------------------------------
        while handled(service) == 0:
            time.sleep(0.01)
        t0, g0 = time.perf_counter(), timed.seconds
        first = handled(service)
        while handled(service) < args.drain:
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        model = timed.seconds - g0
        drained = args.drain - first
        drain = {
            "messages": drained, "seconds": round(wall, 3), "messages_per_s": round(drained / wall, 1),
            "model_seconds": round(model, 3), "middleware_share_of_wall": round(1 - model / wall, 4),
        }

        # --- paced: end-to-end latency --------------------------------------------------------------------
        n_paced = max(1, int(args.rate * args.seconds))
        paced = messages(n_paced, offset=args.drain)
        start = time.perf_counter()
        for i, m in enumerate(paced):
            delay = start + i / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            producer.send("bench.in", m)
        producer.flush()
        while handled(service) < args.drain + n_paced:
            time.sleep(0.01)
        service.stop()
        thread.join(60)
        producer.close()

        inputs = {r.offset + 10**9 * r.partition: r for r in read_all(broker.bootstrap, "bench.in")}
        latencies = []
        for out in read_all(broker.bootstrap, "bench.out"):
            h = dict(out.headers)
            src = inputs[int(h["source-offset"]) + 10**9 * int(h["source-partition"])]
            if src.value in paced:
                latencies.append((out.timestamp - src.timestamp) / 1000)
        reg = service.metrics.registry
        result = {
            "backend": args.backend, "batch_size": batch, "core": args.core, "drain": drain,
            "paced": {
                "rate_per_s": args.rate, "messages": n_paced, "outputs": len(latencies),
                "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
                "p99_ms": round(1000 * pct(latencies, 0.99), 1) if latencies else None,
            },
            "totals": {s: int(reg.get_sample_value("radbridge_handled_total", {"status": s}) or 0)
                       for s in ("drafted", "skipped", "rejected")},
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
