"""The client's token across redirects, with real HTTP servers on loopback: kept to the same
origin, dropped for another host, another port or a scheme change (requests' rule)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dnsdisc.client import Client
from dnsdisc.client.wire import keeps_auth

TOKEN = "s3cret-token"


class Recorder:
    """An HTTP server on loopback recording the Authorization header of each request; paths
    under /go/ redirect (302) to the URL after the prefix."""

    def __init__(self, host: str) -> None:
        seen = self.seen = []  # type: list[tuple[str, str | None]]

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.path, self.headers.get("Authorization")))
                if self.path.startswith("/go/"):
                    self.send_response(302)
                    self.send_header("Location", self.path[len("/go/") :])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"services": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[Recorder, Recorder, Recorder]]:
    # A, another port on the same host, and another host (127.0.0.2 is loopback on Linux).
    made = [Recorder("127.0.0.1"), Recorder("127.0.0.1"), Recorder("127.0.0.2")]
    try:
        yield made[0], made[1], made[2]
    finally:
        for s in made:
            s.close()


def test_token_is_dropped_on_a_redirect_to_another_host_or_port(
    servers: tuple[Recorder, Recorder, Recorder],
) -> None:
    a, other_port, other_host = servers
    client = Client(a.url, TOKEN, timeout=5)
    for target in (other_host, other_port):
        client.request("GET", f"/go/{target.url}/v1/services")
        assert a.seen[-1] == (f"/go/{target.url}/v1/services", f"Bearer {TOKEN}")
        assert target.seen == [("/v1/services", None)], target.seen
        target.seen.clear()


def test_token_is_kept_on_a_redirect_within_the_origin(
    servers: tuple[Recorder, Recorder, Recorder],
) -> None:
    a, _, _ = servers
    Client(a.url, TOKEN, timeout=5).request("GET", "/go//v1/services")
    assert a.seen == [("/go//v1/services", f"Bearer {TOKEN}"), ("/v1/services", f"Bearer {TOKEN}")]


@pytest.mark.parametrize(
    ("old", "new", "kept"),
    [("http://h:8054/a", "http://h:8054/b", True),
     ("http://h/a", "http://h:80/b", True),
     ("https://h/a", "https://h:443/b", True),
     ("http://h/a", "https://h/b", True),       # upgrade on the same host, default ports
     ("http://h:8054/a", "https://h:8443/b", False),
     ("https://h/a", "http://h/b", False),      # downgrade
     ("https://h:8054/a", "http://h:8054/b", False),
     ("http://h:8054/a", "http://h:8055/b", False),
     ("http://h:8054/a", "http://g:8054/b", False),
     ("http://127.0.0.1:8054/a", "http://localhost:8054/b", False)],
)  # fmt: skip
def test_keeps_auth_rule(old: str, new: str, kept: bool) -> None:
    assert keeps_auth(old, new) is kept
