"""`radbridge publish`: send HL7 v2 / FHIR files to a topic, one record per file, bytes untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..settings import Settings


def publish_messages(settings: Settings, bootstrap: str, topic: str, messages: Iterable[tuple[str, bytes]]) -> int:
    """Send (key, bytes) pairs and wait for every ack; the key keeps one source's messages in one partition."""
    from ..adapters.kafka.clients import make_producer

    producer = make_producer(settings, bootstrap)
    try:
        futures = [producer.send(topic, key=key.encode(), value=data) for key, data in messages]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
        return len(futures)
    finally:
        producer.close(timeout=10)


def publish_files(settings: Settings, bootstrap: str, topic: str, files: Iterable[Path]) -> int:
    return publish_messages(settings, bootstrap, topic, ((p.name, p.read_bytes()) for p in files))
