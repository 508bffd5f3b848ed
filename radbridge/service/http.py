"""/metrics, /healthz and /readyz on a small threaded HTTP server beside the consumer loop."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .loop import Health
from .metrics import ServiceMetrics


class OpsServer:
    def __init__(self, metrics: ServiceMetrics, health: Health, host: str = "127.0.0.1", port: int = 0):
        ops = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    ops._reply(self, 200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = health.alive
                    ops._reply(self, 200 if ok else 503, b"ok\n" if ok else b"stalled\n")
                elif path == "/readyz":
                    # JSON: ready, the reason when not (error kind and dependency), and whether the embedded
                    # broker is in use (fine for a demo, never for a site: its messages are not the site's)
                    status = health.status()
                    body = (json.dumps(status, sort_keys=True) + "\n").encode()
                    ops._reply(self, 200 if status["ready"] else 503, body, "application/json")
                else:
                    ops._reply(self, 404, b"not found\n")

            def log_message(self, *args):  # access logs would go to stderr unstructured
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="radbridge-ops", daemon=True)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str = "text/plain") -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> "OpsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
