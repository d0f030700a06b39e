"""What a web page could make an operator's browser send (#17): a cross-site write with a body
type a form or fetch() sends without a CORS preflight, and a request through a rebound name.
Both are refused, and nothing changes."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

from tests.support.helpers import DnsdiscProcess, running


def _raw(
    server: DnsdiscProcess, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else {}
    finally:
        conn.close()


def test_cross_site_writes_and_rebound_names_are_refused(tmp_path: Path) -> None:
    with running(tmp_path, extra_args=["--workers", "1", "--storage", "memory"]) as server:
        server.register("web", "w1", address="10.0.0.1", port=80, ttl=30)
        beat = "/v1/services/web/instances/w1/heartbeat"
        # What worked before: a page POSTing text/plain made the instance critical.
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            status, body = _raw(server, "POST", beat, b'{"status": "critical"}',
                                {"Content-Type": ctype})  # fmt: skip
            assert (status, body["field"]) == (415, "Content-Type"), (ctype, status, body)
        status, body = _raw(server, "POST", "/v1/reload", None, {})  # fetch() without a body
        assert (status, body["field"]) == (415, "Content-Type")
        assert (
            server.http("GET", "/v1/services/web/instances/w1").body["health"]["status"]
            == "passing"
        )
        # DNS rebinding: the page's own name, resolved to 127.0.0.1.
        put = b'{"address": "10.0.0.9", "port": 80}'
        status, body = _raw(server, "PUT", "/v1/services/evil/instances/e1", put,
                            {"Content-Type": "application/json", "Host": "rebind.evil.example"})  # fmt: skip
        assert (status, body["field"]) == (421, "Host")
        status, _ = _raw(server, "GET", "/v1/services", None, {"Host": "rebind.evil.example:80"})
        assert status == 421
        assert server.http("GET", "/v1/services/evil").status == 404
        # Names this server answers to, and IP literals, pass; no CORS header is ever sent.
        for host in (f"localhost:{server.http_port}", "127.0.0.1", f"[::1]:{server.http_port}",
                     "LOCALHOST."):  # fmt: skip
            status, _ = _raw(server, "GET", "/v1/services", None, {"Host": host})
            assert status == 200, host
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=5)
        conn.request("GET", "/v1/services", headers={"Origin": "https://evil.example"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.getheader("Access-Control-Allow-Origin") is None


def test_allowed_hosts_are_configurable_and_reloaded(tmp_path: Path) -> None:
    config = tmp_path / "dnsdisc.yaml"
    config.write_text("http:\n  allowed_hosts: [dnsdisc.example.com]\n")
    args = ["--config", str(config), "--workers", "0", "--storage", "memory"]
    with running(tmp_path, extra_args=args, loopback_checks=False) as server:
        assert _raw(server, "GET", "/readyz", None, {"Host": "dnsdisc.example.com"})[0] == 200
        assert _raw(server, "GET", "/readyz", None, {"Host": "localhost"})[0] == 421
        config.write_text("http:\n  allowed_hosts: [localhost]\n")
        assert server.http("POST", "/v1/reload").status == 200
        assert _raw(server, "GET", "/readyz", None, {"Host": "localhost"})[0] == 200
        assert _raw(server, "GET", "/readyz", None, {"Host": "dnsdisc.example.com"})[0] == 421
