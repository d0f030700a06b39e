"""Backends the health checks of a test probe: an HTTP server on loopback that answers 200 on
``/health`` (404 elsewhere) until the ``with`` block ends, when it stops listening."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_backend(port: int, host: str = "127.0.0.1") -> Iterator[None]:
    srv = http.server.ThreadingHTTPServer((host, port), _Ok)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
