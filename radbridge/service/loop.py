"""The consumer loop: at-least-once drafting with in-order commits, dead-lettering and backoff.

One batch at a time: gather up to ``batch_size`` records (or ``batch_wait_ms``), draft them in one
``Drafter.process`` call, write every output and wait for the acks (and the FHIR server, when set), then
commit. Offsets therefore never pass a record whose output is not durable. Retryable failures back off
with the partitions paused while ``poll()`` keeps running, so a long outage keeps the group membership
alive instead of triggering a rebalance storm.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Callable, Sequence

from kafka import ConsumerRebalanceListener
from kafka.errors import InvalidRecordError, KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from kafka.structs import OffsetAndMetadata, TopicPartition

from ..errors import AuthFailed, GeneratorUnavailable, OutputRejected, PermanentError, RetryableError, StoreUnavailable
from ..pipeline import Envelope, Outcome
from ..redact import safe_id
from .backoff import Backoff
from .metrics import ServiceMetrics
from .records import OutRecord, dead_letter_record, oru_record, output_record, retirement_record
from .retire import retire_drafts
from .signoff import SignoffFeedback

log = logging.getLogger(__name__)

Key = tuple[str, int, int]  # topic, partition, offset


_REFUSED = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError)


def _refusal(exc: KafkaError, out: OutRecord | None) -> OutputRejected:
    size = f" ({len(out.value)} bytes)" if out is not None else ""
    return OutputRejected(f"Kafka refused the output record{size}: {type(exc).__name__}")


def _key(record) -> Key:
    return (record.topic, record.partition, record.offset)


def envelope_of(record) -> Envelope:
    """Only record facts, never the clock: a redelivered record yields the same envelope and the same output."""
    received = None
    if record.timestamp is not None and record.timestamp > 0:
        received = datetime.fromtimestamp(record.timestamp / 1000, timezone.utc)
    return Envelope(
        data=record.value or b"",
        location=f"kafka:{record.topic}/{record.partition}@{record.offset}",
        received_at=received,
    )


def _ids(record, message_id: str | None = None) -> dict:
    ids = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    if message_id:
        ids["message_id"] = safe_id(message_id)  # MSH-10 / a resource id: the sender's text unless id-shaped
    return ids


class Health:
    """What /healthz and /readyz report; written by the loop thread, read by the HTTP thread.

    Not ready while the loop backs off from a dependency (``last_error``: the error kind, ``dependency``: model,
    fhir or kafka) or while a dependency failed its check at start (``failed_checks``) and has not answered since.
    """

    def __init__(self, stall_after_s: float = 120.0, *, embedded_broker: bool = False):
        self.stall_after_s = stall_after_s
        self.embedded_broker = embedded_broker
        self.last_tick: float | None = None
        self.running = False
        self.backing_off = False
        self.last_error: str | None = None
        self.dependency: str | None = None
        self.failed_checks: dict[str, str] = {}  # dependency -> error kind, from the checks at start

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.running and self.last_tick is not None and time.monotonic() - self.last_tick < self.stall_after_s

    @property
    def ready(self) -> bool:
        return self.alive and not self.backing_off and not self.failed_checks

    def status(self) -> dict:
        """/readyz's body: kinds and dependency names only (never an error's text, which may quote a server)."""
        reason = None
        failed = dict(self.failed_checks)  # a copy: the loop thread may change it meanwhile
        if self.backing_off:
            reason = f"{self.last_error}: {self.dependency}" if self.dependency else (self.last_error or "backing off")
        elif failed:
            reason = ", ".join(f"{kind}: {dep} (startup check)" for dep, kind in sorted(failed.items()))
        elif not self.alive:
            reason = "starting" if self.last_tick is None else "stalled"
        out: dict = {"ready": reason is None, "embedded_broker": self.embedded_broker}
        if reason:
            out["reason"] = reason
        if failed:
            out["failed_checks"] = failed
        return out


def dependency_of(exc: BaseException, stage: str) -> str:
    """Which system a retryable error came from, for /readyz and the metrics."""
    named = getattr(exc, "dependency", None)  # AuthFailed, StoreUnavailable say which system
    if named:
        return named
    return "model" if isinstance(exc, GeneratorUnavailable) or stage == "generate" else "kafka"


class _Rebalance(ConsumerRebalanceListener):
    """kafka-python calls these from inside poll(), i.e. on the loop thread."""

    def __init__(self, service: "Service"):
        self.service = service

    def on_partitions_revoked(self, revoked):
        self.service._on_revoked(set(revoked))

    def on_partitions_assigned(self, assigned):
        self.service._on_assigned(set(assigned))


class Service:
    def __init__(
        self,
        *,
        consumer,
        producer,
        drafter,
        input_topics: Sequence[str],
        output_topic: str,
        dlq_topic: str,
        serialize: Callable[[dict], bytes],
        fhir_store=None,
        checks: dict[str, Callable[[], None]] | None = None,
        batch_size: int = 8,
        batch_wait_ms: int = 200,
        backoff: Backoff | None = None,
        metrics: ServiceMetrics | None = None,
        health: Health | None = None,
        send_timeout_s: float = 30.0,
        oru_topic: str | None = None,
        review_topic: str | None = None,
        signoff: SignoffFeedback | None = None,
    ):
        self.consumer = consumer
        self.producer = producer
        self.drafter = drafter
        self.input_topics = list(input_topics)
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.serialize = serialize
        self.fhir_store = fhir_store
        # dependency -> its check (model, fhir): re-run while idle until the ones that failed at start answer
        self.checks = dict(checks or {})
        self._checker: threading.Thread | None = None
        self._next_check, self._check_attempts = 0.0, 0
        self.batch_size = max(1, batch_size)
        self.batch_wait_s = max(0, batch_wait_ms) / 1000
        self.backoff = backoff or Backoff()
        self.metrics = metrics or ServiceMetrics()
        self.metrics.describe_build(drafter)
        self.health = health or Health()
        self.send_timeout_s = send_timeout_s
        self.oru_topic = oru_topic
        # Set: a draft the checker flagged is held here for review instead of going to the output topic and
        # the FHIR server (RADBRIDGE_ON_FLAG=hold); nothing is lost, its offset is committed once it is written.
        self.review_topic = review_topic
        self.signoff = signoff or SignoffFeedback()  # sign-off feedback: metrics always, a record with a topic

        self._stop = threading.Event()
        self._pending: list = []  # the current batch, in poll order (offset order within a partition)
        self._sent: set[Key] = set()  # output or dead letter acked by Kafka
        self._done: set[Key] = set()  # fully handled: safe to commit past
        self._paused = False

    # -- control ---------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the in-flight batch, commit and return (signal-handler safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        self.consumer.subscribe(topics=self.input_topics, listener=_Rebalance(self))
        self.health.running = True
        log.info("service started", extra={"topics": self.input_topics})
        try:
            while not self._stop.is_set():
                if self._gather():
                    self._handle_batch()
                if self.health.failed_checks:
                    self._recheck()
        finally:
            self.health.running = False
            self._shutdown()

    # -- batching --------------------------------------------------------------------------------------------
    def _gather(self) -> bool:
        deadline = None
        while not self._stop.is_set():
            room = self.batch_size - len(self._pending)
            if room <= 0:
                break
            now = time.monotonic()
            timeout_s = 0.25 if deadline is None else max(0.0, deadline - now)
            polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=room)
            self.health.tick()
            for tp, records in polled.items():
                self._pending.extend(records)
                self.metrics.consumed.labels(tp.topic).inc(len(records))
            if not self._pending:
                return False  # back to run(): notices stop() within a quarter second
            if deadline is None:
                deadline = time.monotonic() + self.batch_wait_s
            if time.monotonic() >= deadline:
                break
        return bool(self._pending)

    def _handle_batch(self) -> None:
        self.metrics.batch_size.observe(len(self._pending))
        outcomes = self._draft()
        if outcomes is not None and self._deliver(outcomes):
            self._commit_done()
            self._update_lag()

    # -- stage 1: drafting -----------------------------------------------------------------------------------
    def _draft(self) -> dict[Key, Outcome] | None:
        while True:
            records = list(self._pending)
            if not records:
                return None
            started = time.perf_counter()
            try:
                with self.metrics.timed(self.metrics.model_call_seconds):
                    outcomes = self.drafter.process([envelope_of(r) for r in records])
            except RetryableError as exc:
                if not self._wait_out("generate", exc):
                    return None
                continue
            self.metrics.generation_seconds.observe(time.perf_counter() - started)
            self._recovered()
            return {_key(r): o for r, o in zip(records, outcomes)}

    # -- stage 2: writing the outputs ------------------------------------------------------------------------
    def _deliver(self, outcomes: dict[Key, Outcome]) -> bool:
        while True:
            if not self._pending:
                return False
            try:
                self._deliver_once(outcomes)
                self._recovered()
                return True
            except RetryableError as exc:
                if not self._wait_out("deliver", exc):
                    return False

    def _deliver_once(self, outcomes: dict[Key, Outcome]) -> None:
        to_send: list[tuple[object, OutRecord]] = []
        for record in self._pending:
            k = _key(record)
            if k in self._sent or k in self._done:
                continue
            outcome = outcomes[k]
            if outcome.status == "drafted":
                # One record per report (keyed by it): a message's size never becomes one record's size.
                for i, (draft, bundle) in enumerate(zip(outcome.drafts, outcome.bundles)):
                    topic = self.review_topic if self._held(draft) else self.output_topic
                    to_send.append((record, output_record(topic, record, outcome, i, self.serialize(bundle))))
                if self.oru_topic:
                    to_send += [(record, oru_record(self.oru_topic, record, outcome, i)) for i in range(len(outcome.oru))]
            elif outcome.status == "rejected":
                to_send.append((record, dead_letter_record(self.dlq_topic, record, outcome.error, outcome.message_id)))
        refused = self._send_all(to_send)
        # An output Kafka will never take (a poison record): dead-letter its source now instead of retrying forever.
        for record in self._pending:
            k = _key(record)
            if k in refused and k not in self._done:
                self._send_all([(record, dead_letter_record(self.dlq_topic, record, refused[k], outcomes[k].message_id))])
                self._mark_done(record, outcomes[k], dead_letter=refused[k])

        for record in self._pending:
            k = _key(record)
            if k in self._done:
                continue
            outcome = outcomes[k]
            if outcome.status == "drafted" and self.fhir_store is not None:
                try:
                    # One transaction per report: each is written whole or not at all. A redelivery after a
                    # partial write finds the written ones by their conditional creates.
                    for draft, bundle in zip(outcome.drafts, outcome.bundles):
                        if not self._held(draft):
                            with self.metrics.timed(self.metrics.fhir_call_seconds, "transact"):
                                self.fhir_store.transact(bundle)
                except PermanentError as exc:  # e.g. StoreRejected: this message, not the batch
                    self._send_all([(record, dead_letter_record(self.dlq_topic, record, exc, outcome.message_id))])
                    self._mark_done(record, outcome, dead_letter=exc)
                    continue
            if outcome.retire and self.fhir_store is not None:
                self._retire(record, outcome)
            elif outcome.retire:  # no FHIR server, no draft memory: the sign-off cannot be compared (counted)
                self.signoff.unavailable(self.metrics, len(outcome.retire))
            self._mark_done(record, outcome)

    def _retire(self, record, outcome: Outcome) -> None:
        """Retire the drafts a signed report supersedes, then publish their notices (acked before the commit).

        Retryable store or Kafka errors propagate (backoff; a redelivery finds the draft already retired and
        sends the same notice again). A permanent refusal is logged and counted: the signed report itself is
        fine, so it is never dead-lettered for it.
        """
        ids = _ids(record, outcome.message_id)
        notices: list[tuple[object, OutRecord]] = []
        for retirement in outcome.retire:
            try:
                results = retire_drafts(self.fhir_store, retirement)
            except PermanentError as exc:
                kind = getattr(exc, "kind", type(exc).__name__)
                self.metrics.retirements.labels("rejected").inc()
                log.warning("draft retirement refused", extra={**ids, "error_type": kind})
                continue
            for done in results:
                self.metrics.retirements.labels(done.result).inc()
                log.info("draft retirement", extra={**ids, "result": done.result, "draft_key": done.draft_key})
                if done.notice is not None:
                    notices.append((record, retirement_record(self.output_topic, record, outcome, done.notice)))
            feedback = self.signoff.on_signed(self.fhir_store, retirement, results, record, outcome.envelope.received_at, self.metrics)
            notices += [(record, out) for out in feedback]
        for refusal in self._send_all(notices).values():
            log.warning("retirement notice refused", extra={**ids, "error_type": refusal.kind})

    def _held(self, draft) -> bool:
        """A flagged draft goes to the review topic instead of the output topic and the FHIR server (per report:
        its unflagged neighbours in the same message go on)."""
        return self.review_topic is not None and bool(draft.flags)

    def _send_all(self, items: list[tuple[object, OutRecord]]) -> dict[Key, OutputRejected]:
        """Send, then wait for every ack (acks=all). Returns the records whose output Kafka refused for what it is
        (too large, invalid: permanent, for the caller to dead-letter); any other failure is retryable (keys make
        resends harmless)."""
        refused: dict[Key, OutputRejected] = {}
        if not items:
            return refused
        failure: KafkaError | None = None
        futures = []
        try:
            for record, out in items:
                try:
                    futures.append((record, self.producer.send(out.topic, key=out.key, value=out.value, headers=out.headers)))
                except _REFUSED as exc:  # kafka-python checks the size before sending
                    refused[_key(record)] = _refusal(exc, out)
            self.producer.flush(timeout=self.send_timeout_s)
        except KafkaError as exc:
            raise StoreUnavailable(f"Kafka did not accept the output ({type(exc).__name__})", dependency="kafka") from exc
        failed: set[Key] = set()
        for record, future in futures:
            try:
                future.get(timeout=self.send_timeout_s)
            except _REFUSED as exc:  # the broker's own limit (message.max.bytes) or record validation
                refused[_key(record)] = _refusal(exc, None)
                failed.add(_key(record))
            except KafkaError as exc:
                failure = failure or exc
                failed.add(_key(record))
        # acked (every record written for this input): a retry of the batch will not send them again
        self._sent.update(_key(record) for record, _ in futures if _key(record) not in failed)
        if failure is not None:
            raise StoreUnavailable(
                f"Kafka did not acknowledge the output ({type(failure).__name__})", dependency="kafka") from failure
        return refused

    def _mark_done(self, record, outcome: Outcome, dead_letter: BaseException | None = None) -> None:
        if _key(record) in self._done:
            return
        self._done.add(_key(record))
        ids = _ids(record, outcome.message_id)
        error = dead_letter or outcome.error
        self.metrics.handled.labels("rejected" if error is not None else outcome.status).inc()
        if error is not None:
            kind = getattr(error, "kind", type(error).__name__)
            self.metrics.dead_lettered.labels(kind).inc()
            log.warning("dead-lettered", extra={**ids, "error_type": kind})
            return
        for skip in outcome.skipped:
            self.metrics.skipped.labels(skip.reason.value).inc()
            log.info(
                "skipped",
                extra={**ids, "reason": skip.reason.value, "report_message_id": safe_id(skip.source.message_id),
                       "report_index": skip.source.index},
            )
        if outcome.status == "drafted":
            self.metrics.drafted.inc()
            flags = [f for d in outcome.drafts for f in d.flags]
            for flag in flags:
                self.metrics.draft_flags.labels(flag.kind.value, flag.severity).inc()
            held = sum(self._held(d) for d in outcome.drafts)
            if held:
                self.metrics.held.inc(held)
            log.info("drafted", extra={**ids, "drafts": len(outcome.drafts), "key": outcome.message_key,
                                       "flags": sorted({f.kind.value for f in flags}), "held": held})

    # -- commits ---------------------------------------------------------------------------------------------
    def _commit_done(self, only: set | None = None) -> None:
        """Commit, per partition, up to the first record that is not done; forget what was committed."""
        by_tp: dict = defaultdict(list)
        for record in self._pending:
            tp = TopicPartition(record.topic, record.partition)
            if only is None or tp in only:
                by_tp[tp].append(record)
        offsets = {}
        committed: list = []
        for tp, records in by_tp.items():
            last = None
            for record in sorted(records, key=lambda r: r.offset):
                if _key(record) not in self._done:
                    break
                last = record
                committed.append(record)
            if last is not None:
                offsets[tp] = OffsetAndMetadata(last.offset + 1, "", -1)
        if offsets:
            try:
                self.consumer.commit(offsets=offsets)
                self.metrics.commits.inc()
            except KafkaError as exc:
                # The group moved on (e.g. a rebalance): the new owner redelivers; outputs are idempotent by key.
                log.warning("commit failed", extra={"error_type": type(exc).__name__, "partitions": len(offsets)})
                committed = []
        now = time.time()
        for record in committed:
            if record.timestamp and record.timestamp > 0:
                self.metrics.end_to_end_seconds.observe(max(0.0, now - record.timestamp / 1000))
        gone = {_key(r) for r in committed}
        self._pending = [r for r in self._pending if _key(r) not in gone]
        self._done -= gone
        self._sent -= gone
        if not self._pending:
            self._done.clear()
            self._sent.clear()

    def _on_revoked(self, revoked: set) -> None:
        """Commit what is done, drop what is not: the next owner (maybe us) starts from the committed offset."""
        self._commit_done(only=revoked)
        before = len(self._pending)
        self._pending = [r for r in self._pending if (r.topic, r.partition) not in {(tp.topic, tp.partition) for tp in revoked}]
        for tp in revoked:
            try:
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass
        log.info("partitions revoked", extra={"partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in revoked),
                                              "dropped": before - len(self._pending)})

    def _on_assigned(self, assigned: set) -> None:
        if self._paused and assigned:
            self.consumer.pause(*assigned)  # still waiting for a dependency: take no new work yet
        log.info("partitions assigned", extra={"partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)})

    # -- waiting out an outage -------------------------------------------------------------------------------
    def _wait_out(self, stage: str, exc: RetryableError) -> bool:
        """Back off with partitions paused and poll() still running; False if asked to stop meanwhile."""
        delay = self.backoff.next_delay()
        kind = getattr(exc, "kind", type(exc).__name__)
        dependency = dependency_of(exc, stage)
        self.metrics.retries.labels(stage, kind).inc()
        if isinstance(exc, AuthFailed):  # credentials to renew: alert on this, it will not heal by itself
            self.metrics.auth_failures.labels(dependency).inc()
        self.metrics.backing_off.set(1)
        self.health.backing_off = True
        self.health.last_error = kind
        self.health.dependency = dependency
        log.warning("dependency unavailable, backing off",
                    extra={"stage": stage, "error_type": kind, "dependency": dependency, "delay_s": round(delay, 2),
                           "attempt": self.backoff.attempts, "batch": len(self._pending)})
        self._paused = True
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(*assignment)
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            polled = self.consumer.poll(timeout_ms=int(min(left, 0.5) * 1000))
            self.health.tick()
            for tp, records in polled.items():
                # a partition assigned without pause slipped through: rewind so nothing is skipped
                self.consumer.seek(tp, min(r.offset for r in records))
        self._paused = False
        paused = self.consumer.paused()
        if paused:
            self.consumer.resume(*paused)
        return not self._stop.is_set()

    def _recheck(self) -> None:
        """Re-run the checks that failed at start (paced like the backoff), so readiness follows the dependency
        whether or not messages come. On a thread of its own: a hung dependency makes a check wait its whole
        timeout, and the loop must keep polling meanwhile (group membership, assignment, heartbeats)."""
        if time.monotonic() < self._next_check or (self._checker is not None and self._checker.is_alive()):
            return
        self._checker = threading.Thread(target=self._run_checks, name="radbridge-recheck", daemon=True)
        self._checker.start()

    def _run_checks(self) -> None:
        for dependency in sorted(self.health.failed_checks):
            check = self.checks.get(dependency)
            if check is None:
                self.health.failed_checks.pop(dependency, None)
                continue
            try:
                check()
            except RetryableError as exc:
                self.health.failed_checks[dependency] = getattr(exc, "kind", type(exc).__name__)
                if isinstance(exc, AuthFailed):
                    self.metrics.auth_failures.labels(dependency).inc()
                continue
            except Exception as exc:  # noqa: BLE001 - a check that breaks otherwise keeps us not ready, logged
                self.health.failed_checks[dependency] = getattr(exc, "kind", type(exc).__name__)
                continue
            self.health.failed_checks.pop(dependency, None)
            log.info("dependency back", extra={"dependency": dependency})
        self._next_check = time.monotonic() + self.backoff.policy.delay(self._check_attempts)
        self._check_attempts = self._check_attempts + 1 if self.health.failed_checks else 0

    def _recovered(self) -> None:
        if self.health.backing_off:
            log.info("dependency back", extra={"attempts": self.backoff.attempts})
        self.backoff.reset()
        self.health.backing_off = False
        self.health.dependency = None
        self.metrics.backing_off.set(0)

    # -- lag and shutdown ------------------------------------------------------------------------------------
    def _update_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = self.consumer.position(tp, timeout_ms=1000)
            except Exception:  # lag is best effort; never stop drafting for it
                continue
            if position is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, high - position))

    def _shutdown(self) -> None:
        try:
            self._commit_done()
        finally:
            dropped = len(self._pending)
            self._pending = []
            try:
                self.consumer.close(autocommit=False)
            finally:
                self.producer.flush(timeout=self.send_timeout_s)
                self.producer.close(timeout=self.send_timeout_s)
            log.info("service stopped", extra={"uncommitted_dropped": dropped})
