"""Where an audit reads signed history from. Each source yields Envelopes (or an unreadable file with its error)
and describes itself for run.json; none writes anywhere."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Protocol, Sequence, Union

from ..errors import PermanentError, RadbridgeError, RetryableError
from ..pipeline import Envelope
from ..limits import DEFAULT_LIMITS, Limits
from ..reading import split_payload


@dataclass(frozen=True)
class Unreadable:
    """A file or record that is not a message at all: listed in skipped.jsonl, never a crash."""

    location: str
    data: bytes
    error: PermanentError


Item = Union[Envelope, Unreadable]


class Source(Protocol):
    def describe(self) -> dict: ...

    def envelopes(self) -> Iterator[Item]: ...


def expand(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders as every file below them (sorted: the same order on every run, so a resumed run
    and a sample see the same history)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            out.append(p)
    return out


class FileSource:
    """Files and folders of HL7 v2 (single, batch, MLLP) and FHIR JSON messages."""

    def __init__(self, paths: Sequence[Path], limits: Limits = DEFAULT_LIMITS):
        self.paths = list(paths)
        self.files = expand(self.paths)
        self.limits = limits

    def describe(self) -> dict:
        digest = hashlib.sha256()
        for f in self.files:  # names and bytes: the same folder with a changed file is another source
            digest.update(str(f).encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
        return {"kind": "files", "paths": [str(p) for p in self.paths], "files": len(self.files),
                "digest": digest.hexdigest()}

    def envelopes(self) -> Iterator[Item]:
        for path in self.files:
            data = path.read_bytes()
            try:
                messages = split_payload(data, self.limits).messages
            except PermanentError as exc:
                yield Unreadable(str(path), data, exc)
                continue
            for i, message in enumerate(messages):
                yield Envelope(message, location=f"{path}#{i}" if len(messages) > 1 else str(path))


class SourceUnavailable(RetryableError):
    """The topic or FHIR server went away mid-audit: the run stops; running it again continues."""

    kind = "source_unavailable"


def _ms(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1000)


class KafkaSource:
    """Records of one topic between two times, read without a consumer group: partitions are assigned, never
    subscribed, and no offset is ever committed, so the live service's group is untouched.

    The end of the history is ``until`` or, without it, the moment the topic has been idle for ``idle_s``
    (offsets are not asked of the broker: not every Kafka-protocol broker answers ListOffsets correctly).
    """

    def __init__(self, settings, bootstrap: str, topic: str, *, since: datetime | None = None,
                 until: datetime | None = None, offsets: dict[int, tuple[int, int | None]] | None = None,
                 idle_s: float = 3.0):
        self.settings, self.bootstrap, self.topic = settings, bootstrap, topic
        self.since, self.until, self.idle_s = _ms(since), _ms(until), idle_s
        self.offsets = offsets  # partition -> (first offset, end offset exclusive or None): only these partitions

    def describe(self) -> dict:
        # a topic has no content digest before it is read; the case keys (message digests) carry the resume
        offsets = {str(p): list(r) for p, r in sorted((self.offsets or {}).items())} or None
        desc = f"{self.topic}|{self.since}|{self.until}|{offsets}"
        return {"kind": "kafka", "topic": self.topic, "since_ms": self.since, "until_ms": self.until,
                "offsets": offsets, "digest": hashlib.sha256(desc.encode()).hexdigest()}

    def envelopes(self) -> Iterator[Item]:
        import time

        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        from ..adapters.kafka.clients import base_config

        config = {**base_config(self.settings, self.bootstrap, client_id="radbridge-audit"), "group_id": None,
                  "enable_auto_commit": False, "auto_offset_reset": "earliest"}
        try:
            consumer = KafkaConsumer(**config)
            partitions = sorted(consumer.partitions_for_topic(self.topic) or ())
        except KafkaError as exc:
            raise SourceUnavailable(f"Kafka topic {self.topic} unreachable ({type(exc).__name__})") from None
        if not partitions:
            consumer.close()
            raise SourceUnavailable(f"Kafka topic {self.topic} not found")
        if self.offsets is not None:
            unknown = sorted(set(self.offsets) - set(partitions))
            if unknown:
                consumer.close()
                raise SourceUnavailable(f"Kafka topic {self.topic} has no partition {unknown[0]}")
            partitions = sorted(self.offsets)
        parts = [TopicPartition(self.topic, p) for p in partitions]
        try:
            consumer.assign(parts)
            if self.offsets is None:
                consumer.seek_to_beginning(*parts)
            for tp in parts if self.offsets is not None else ():
                consumer.seek(tp, self.offsets[tp.partition][0])
            done: set = set()
            last = time.monotonic()
            while len(done) < len(parts):
                batch = consumer.poll(timeout_ms=200)
                if not batch:
                    if time.monotonic() - last >= self.idle_s:
                        self._still_there(consumer)
                        break
                    continue
                last = time.monotonic()
                for tp in sorted(batch, key=lambda t: t.partition):
                    for r in batch[tp]:
                        end = self.offsets[tp.partition][1] if self.offsets is not None else None
                        if end is not None and r.offset >= end or self.until is not None and r.timestamp > self.until:
                            done.add(tp)
                            consumer.pause(tp)
                            break
                        if self.since is not None and r.timestamp < self.since:
                            continue
                        received = datetime.fromtimestamp(r.timestamp / 1000, timezone.utc)
                        yield Envelope(r.value, location=f"kafka:{r.topic}/{r.partition}@{r.offset}",
                                       received_at=received)
        except KafkaError as exc:
            raise SourceUnavailable(f"Kafka topic {self.topic} went away mid-audit ({type(exc).__name__})") from None
        finally:
            consumer.close(autocommit=False)

    def _still_there(self, consumer, timeout_s: float = 10.0) -> None:
        """Idle could mean caught up or broker gone: a fresh metadata request (bounded here: kafka-python's own
        wait has no timeout) tells them apart."""
        import socket
        import threading

        # kafka-python answers metadata from its cache when no broker is reachable: try a connection first
        reachable = False
        for address in self.bootstrap.split(","):
            host, _, port = address.strip().rpartition(":")
            try:
                with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
                    reachable = True
                    break
            except (OSError, ValueError):
                continue
        if not reachable:
            raise SourceUnavailable(f"Kafka topic {self.topic} stopped answering mid-audit (no broker reachable)")
        answer: list = []
        probe = threading.Thread(target=lambda: answer.append(self.topic in consumer.topics()), daemon=True)
        probe.start()
        probe.join(timeout_s)
        if not answer:
            raise SourceUnavailable(f"Kafka topic {self.topic} stopped answering mid-audit")
        if not answer[0]:
            raise SourceUnavailable(f"Kafka topic {self.topic} disappeared mid-audit")


RADIOLOGY_FINAL = "final,amended,corrected,appended"


class FhirServerSource:
    """Final radiology DiagnosticReports from a FHIR server, by date, every page of the search.

    Read with the service's FHIR auth settings (token, CA bundle); searched, never written to.
    """

    def __init__(self, store, url: str, *, since: datetime | None = None, until: datetime | None = None,
                 category: str = "RAD", page_size: int = 100):
        self.store, self.url, self.since, self.until, self.category = store, url.rstrip("/"), since, until, category
        self.page_size = page_size

    def params(self) -> list[tuple[str, str]]:
        p = [("status", RADIOLOGY_FINAL), ("category", self.category), ("_count", str(self.page_size))]
        if self.since is not None:
            p.append(("date", "ge" + self.since.isoformat()))
        if self.until is not None:
            p.append(("date", "lt" + self.until.isoformat()))
        return p

    def describe(self) -> dict:
        query = "&".join(f"{k}={v}" for k, v in self.params())
        return {"kind": "fhir", "url": self.url, "query": f"DiagnosticReport?{query}",
                "digest": hashlib.sha256(f"{self.url}?{query}".encode()).hexdigest()}

    def envelopes(self) -> Iterator[Item]:
        import json

        try:
            found = self.store.search("DiagnosticReport", self.params())
        except RadbridgeError as exc:
            raise SourceUnavailable(f"FHIR server {self.url}: {exc}") from None
        # the same order on every run, whatever order the server pages in (resume, --limit, --sample)
        found.sort(key=lambda r: (str(r.get("effectiveDateTime") or r.get("issued") or ""), str(r.get("id"))))
        for resource in found:
            data = json.dumps(resource, sort_keys=True, ensure_ascii=False).encode()
            yield Envelope(data, location=f"{self.url}/DiagnosticReport/{resource.get('id')}")


def parse_offsets(spec: str) -> dict[int, tuple[int, int | None]]:
    """``"0:100-250,1:40-"``: per partition the first offset and the end (exclusive; empty: to the end)."""
    from ..errors import ConfigurationError

    out: dict[int, tuple[int, int | None]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = re.fullmatch(r"(\d+):(\d+)-(\d*)", part)
        if not m or (m[3] and int(m[3]) <= int(m[2])):
            raise ConfigurationError(f"--offsets entry {part!r} is not PARTITION:FIRST-END (END empty or > FIRST)")
        out[int(m[1])] = (int(m[2]), int(m[3]) if m[3] else None)
    if not out:
        raise ConfigurationError("--offsets names no partition")
    return out


def audit_source(settings, paths: Sequence[Path], *, topic: str | None = None, fhir_url: str | None = None,
                 since: datetime | None = None, until: datetime | None = None, offsets: str | None = None) -> Source:
    """The one source the command line names: files, a topic, or a FHIR server (never two)."""
    from ..errors import ConfigurationError

    named = [k for k, v in (("files", paths), ("--topic", topic), ("--fhir-url", fhir_url)) if v]
    if len(named) != 1:
        raise ConfigurationError(f"name one source: files or folders, --topic or --fhir-url (got {named or 'none'})")
    since, until = (None if t is None else t if t.tzinfo else t.replace(tzinfo=timezone.utc) for t in (since, until))
    if offsets and not topic:
        raise ConfigurationError("--offsets applies to --topic only")
    if topic:
        from ..service.runner import bootstrap_address

        return KafkaSource(settings, bootstrap_address(settings), topic, since=since, until=until,
                           offsets=parse_offsets(offsets) if offsets else None)
    if fhir_url:
        from ..adapters.fhir_server.store import HttpFhirStore

        # the service's auth settings; a page cap high enough for years of history
        store = HttpFhirStore(fhir_url, timeout=settings.request_timeout_s, token=settings.fhir_token,
                              ca_bundle=settings.fhir_ca_bundle, max_pages=100_000)
        return FhirServerSource(store, fhir_url, since=since, until=until)
    if since or until:
        raise ConfigurationError("--since/--until apply to --topic and --fhir-url, not to files")
    return FileSource(paths, Limits.from_settings(settings))
