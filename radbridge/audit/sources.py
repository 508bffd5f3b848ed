"""Where an audit reads signed history from. Each source yields Envelopes (or an unreadable file with its error)
and describes itself for run.json; none writes anywhere."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, Sequence, Union

from ..errors import PermanentError
from ..pipeline import Envelope
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

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)
        self.files = expand(self.paths)

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
                messages = split_payload(data).messages
            except PermanentError as exc:
                yield Unreadable(str(path), data, exc)
                continue
            for i, message in enumerate(messages):
                yield Envelope(message, location=f"{path}#{i}" if len(messages) > 1 else str(path))
