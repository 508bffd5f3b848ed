"""Servers for integration tests: an ASGI app on a free loopback port in a thread, recording every exchange
for contract checks; and waiting for a server started as a process to answer."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import uvicorn

from radbridge.adapters.kafka.broker import free_port  # noqa: F401  (re-exported for the tests)
from tgi_contract import TgiContract


@dataclass
class Exchange:
    method: str
    path: str
    request: bytes
    status: int
    content_type: str
    response: bytes


class Recorder:
    """ASGI wrapper that keeps a copy of each HTTP request and response body."""

    def __init__(self, app):
        self.app = app
        self.exchanges: list[Exchange] = []
        self.open = 0  # responses started, not yet finished (a streamed body may end after its client has read it)

    def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until every started response has been recorded in full."""
        deadline = time.monotonic() + timeout_s
        while self.open and time.monotonic() < deadline:
            time.sleep(0.01)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body, out = [], {"status": 0, "type": "", "body": b""}

        async def recv():
            msg = await receive()
            if msg["type"] == "http.request":
                body.append(msg.get("body", b""))
            return msg

        async def snd(msg):
            if msg["type"] == "http.response.start":
                self.open += 1
                out["status"] = msg["status"]
                headers = {k.decode().lower(): v.decode() for k, v in msg.get("headers", [])}
                out["type"] = headers.get("content-type", "")
            elif msg["type"] == "http.response.body":
                out["body"] += msg.get("body", b"")
                if not msg.get("more_body", False):
                    # recorded before the last byte leaves: a client that saw the response finds its exchange
                    self.exchanges.append(
                        Exchange(scope["method"], scope["path"], b"".join(body), out["status"], out["type"], out["body"])
                    )
                    self.open -= 1
            await send(msg)

        await self.app(scope, recv, snd)


def check_exchange(contract: TgiContract, ex: Exchange) -> None:
    """Raises ContractViolation if the request or response differs from TGI's published schemas."""
    if ex.request:
        contract.validate_request(ex.method, ex.path, json.loads(ex.request))
    if ex.content_type.startswith("application/json"):
        contract.validate_response(ex.method, ex.path, ex.status, json.loads(ex.response))
    elif ex.content_type.startswith("text/event-stream"):
        for line in ex.response.decode().splitlines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                event = json.loads(line[5:])
                kind = "ChatCompletionChunk" if ex.path == "/v1/chat/completions" else "StreamResponse"
                contract.validate("ErrorResponse" if "error" in event else kind, event)
    else:
        contract.response_component(ex.method, ex.path, ex.status)  # the status must be documented


class ThreadedServer:
    def __init__(self, app, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadedServer":
        self.thread.start()
        deadline = time.monotonic() + 300  # model load under a busy 2-core machine
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("server thread died during startup")
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def wait_until_serving(url: str, proc: subprocess.Popen, timeout_s: float, what: str, logs: Callable[[], str]) -> None:
    """Poll ``url`` until it answers 200. If the process exits, or is killed here at the deadline, fail with the
    tail of ``logs()`` (read only then, so a pipe is read after it has closed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{logs()[-2000:]}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=30)
            raise TimeoutError(f"{what} did not answer {url} within {timeout_s:.0f} s:\n{logs()[-2000:]}")
        time.sleep(0.2)
