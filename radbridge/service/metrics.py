"""Prometheus metrics of one service instance, on its own registry (no process-global state)."""

from __future__ import annotations

import time
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

from .. import __version__

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # CPU, resident memory, open fds, start time (process_*): on this registry, not the global default one
        ProcessCollector(registry=r)
        self.build = Info(
            "radbridge_build", "What is running: radbridge version, model backend, adapter and its sha256, prompt "
            "template (one series, value 1)", registry=r,
        )
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
        self.model_call_seconds = Histogram(
            "radbridge_model_call_seconds",
            "One batch's drafting call to the model backend, by outcome (ok, or the error kind: a timeout shows "
            "here, not in radbridge_generation_seconds)",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fhir_call_seconds = Histogram(
            "radbridge_fhir_call_seconds",
            "One call to the FHIR server, by operation and outcome (ok, or the error kind)",
            ["operation", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
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
        self.auth_failures = Counter(
            "radbridge_auth_failures", "Credentials refused (HTTP 401/403, token endpoint), by dependency: "
            "the loop backs off until they are renewed", ["dependency"], registry=r,
        )
        # Sign-off feedback (radbridge.service.signoff): how radiologists changed the drafts they signed.
        self.signoffs = Counter(
            "radbridge_signoff",
            "Signed reports compared with radbridge's draft, by outcome (accepted, light_edit, heavy_edit, "
            "replaced, no_draft, no_impression, no_store, error)",
            ["outcome"],
            registry=r,
        )
        self.signoff_edit_ratio = Histogram(
            "radbridge_signoff_edit_ratio",
            "Word edit distance between draft and signed impression, over the longer one's words",
            buckets=(0.0, 0.05, 0.1, 0.15, 0.25, 0.4, 0.6, 0.8, 1.0),
            registry=r,
        )
        self.signoff_observations = Counter(
            "radbridge_signoff_observations",
            "Labeler observations the radiologist added to, removed from or moved to the other side in the draft",
            ["change", "observation"],
            registry=r,
        )
        self.signoff_flags = Counter(
            "radbridge_signoff_flags",
            "Checker flags on signed drafts, by kind and whether the signed text acted on them",
            ["kind", "acted_on"],
            registry=r,
        )
        self.signoff_seconds = Histogram(
            "radbridge_signoff_seconds",
            "Draft issued to signed report received",
            buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800),
            registry=r,
        )
        self.signoff_by_reader = Counter(
            "radbridge_signoff_by_reader",
            "Sign-off outcomes per pseudonymous reader (only with RADBRIDGE_FEEDBACK_PER_READER)",
            ["reader", "outcome"],
            registry=r,
        )

    @contextmanager
    def timed(self, histogram: Histogram, *labels: str):
        """Observe the block's duration in ``histogram`` with ``labels`` and its outcome (the last label)."""
        started = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            histogram.labels(*labels, outcome_of(exc)).observe(time.perf_counter() - started)
            raise
        histogram.labels(*labels, "ok").observe(time.perf_counter() - started)

    def describe_build(self, drafter) -> None:
        """Fill radbridge_build_info from the drafter: what a dashboard shows next to every rate."""
        info = drafter.generator.info
        self.build.info({
            "version": __version__,
            "backend": info.backend,
            "base_model": info.base_model or "",
            "adapter": info.adapter or "",
            "adapter_sha256": info.adapter_sha256 or "",
            "numerics": info.numerics or "float32",
            "prompt_template": drafter.template.id,
        })


def outcome_of(exc: BaseException | None) -> str:
    """A call's outcome label: ok, or the error's kind (a short, fixed set: never a message)."""
    return "ok" if exc is None else getattr(exc, "kind", type(exc).__name__)
