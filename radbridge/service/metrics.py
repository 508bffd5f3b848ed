"""Prometheus metrics of one service instance, on its own registry (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("radbridge_consumed", "Records taken from the input topics", ["topic"], registry=r)
        self.drafted = Counter("radbridge_drafted", "Messages whose draft Bundle was written", registry=r)
        self.skipped = Counter("radbridge_skipped", "Reports skipped on purpose", ["reason"], registry=r)
        self.draft_flags = Counter(
            "radbridge_draft_flags", "Problems the checker found in written drafts", ["kind", "severity"], registry=r
        )
        self.retirements = Counter(
            "radbridge_retirements",
            "AI drafts looked at when their signed report arrived, by outcome (retired, already_retired, "
            "already_final, not_radbridge, not_found, rejected)",
            ["outcome"],
            registry=r,
        )
        self.held = Counter("radbridge_held", "Flagged drafts held on the review topic (on_flag=hold)", registry=r)
        self.dead_lettered = Counter(
            "radbridge_dead_lettered", "Records written to the dead-letter topic", ["error_type"], registry=r
        )
        self.retries = Counter(
            "radbridge_retries", "Batch attempts that failed with a retryable error", ["stage", "error_type"], registry=r
        )
        self.handled = Counter(
            "radbridge_handled", "Input records fully handled, by outcome", ["status"], registry=r
        )
        self.commits = Counter("radbridge_commits", "Offset commits", registry=r)
        self.generation_seconds = Histogram(
            "radbridge_generation_seconds", "Drafter.process time per batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "radbridge_batch_size", "Records per batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r
        )
        self.end_to_end_seconds = Histogram(
            "radbridge_end_to_end_seconds",
            "Input record timestamp to committed output",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "radbridge_consumer_lag", "High watermark minus position", ["topic", "partition"], registry=r
        )
        self.backing_off = Gauge("radbridge_backing_off", "1 while waiting for a dependency to return", registry=r)
