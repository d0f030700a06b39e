"""DNS over HTTPS (RFC 8484, #17): curl resolving a registered service through /dns-query for a
real HTTP request, dnspython's DoH client (GET and POST), answers equal to TCP's, recursion
kept to recursion_allow, and bad requests answered with 4xx."""

from __future__ import annotations

import base64
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.certs import Ca, Pair
from tests.support.helpers import DnsdiscProcess, require_tool, running

NAME = "web.svc.internal."
H1 = dns.query.HTTPVersion.HTTP_1


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from web\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ca, Pair]:
    d = tmp_path_factory.mktemp("pki")
    ca = Ca.make(d)
    return ca, ca.issue(d, "server", "doh.test")


@pytest.fixture
def backend() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def doh(tmp_path: Path, pki: tuple[Ca, Pair]) -> Iterator[DnsdiscProcess]:
    ca, pair = pki
    # Recursion for 127.0.0.1 only, to an upstream that never answers (SERVFAIL when relayed).
    upstream_free = (
        "recursors: ['127.0.0.1:9']\nrecursor_timeout: 1\nrecursion_allow: ['127.0.0.1/32']\n"
    )
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(
        upstream_free
        + f"http:\n  token: s3cret\n  tls: {{cert_file: {pair.cert}, key_file: {pair.key}}}\n"
    )
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    args = ["--config", str(config), "--workers", "2", "--storage", "memory"]
    with running(tmp_path, extra_args=args, ssl_context=ctx, loopback_checks=False) as server:
        server.token = "s3cret"
        yield server


def _url(server: DnsdiscProcess) -> str:
    return f"{server.http_url}/dns-query"


def test_curl_resolves_a_registered_service_over_doh_for_a_real_request(
    doh: DnsdiscProcess, pki: tuple[Ca, Pair], backend: int
) -> None:
    ca, _ = pki
    doh.register("web", "w1", address="127.0.0.1", port=backend)
    require_tool("curl")
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(ca.cert), "--doh-url", _url(doh),
         "-4", f"http://web.svc.internal:{backend}/"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout == "hello from web\n", out.stderr
    # A name nobody registered: curl cannot resolve it (exit 6).
    missing = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(ca.cert), "--doh-url", _url(doh),
         f"http://nobody.svc.internal:{backend}/"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert missing.returncode == 6, missing.stderr


def test_dnspython_gets_over_doh_what_tcp_gets(doh: DnsdiscProcess) -> None:
    for n in range(3):
        doh.register("web", f"w{n}", address=f"10.0.0.{n + 1}", port=80)
    for post in (True, False):
        q = dns.message.make_query(NAME, "SRV", id=0)
        reply = dns.query.https(
            q, _url(doh), post=post, verify=doh.ssl_context, timeout=10, http_version=H1
        )
        assert reply.rcode() == dns.rcode.NOERROR
        tcp = dns.query.tcp(q, "127.0.0.1", port=doh.dns_port, timeout=5)
        assert sorted(r.to_text() for r in reply.answer[0]) == sorted(
            r.to_text() for r in tcp.answer[0]
        )
    # The reply's lifetime for HTTP caches is its smallest TTL (RFC 8484 5.1).
    wire = base64.urlsafe_b64encode(dns.message.make_query(NAME, "A", id=0).to_wire())
    req = urllib.request.Request(f"{_url(doh)}?dns={wire.decode().rstrip('=')}")
    with urllib.request.urlopen(req, context=doh.ssl_context, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/dns-message"
        ttl = dns.message.from_wire(resp.read()).answer[0].ttl
        assert resp.headers["Cache-Control"] == f"max-age={ttl}"


def test_recursion_over_doh_follows_recursion_allow(doh: DnsdiscProcess) -> None:
    # The relay reaches the DNS port from 127.0.0.1, inside recursion_allow; what counts is the
    # HTTP client's address. From 127.0.0.2 a name outside our zones is REFUSED (RD kept in the
    # reply); from 127.0.0.1 it is relayed (and the dead upstream makes it a SERVFAIL).
    q = dns.message.make_query("example.com.", "A", id=0)
    outside = dns.query.https(
        q, _url(doh), verify=doh.ssl_context, timeout=10, http_version=H1, source="127.0.0.2"
    )
    assert outside.rcode() == dns.rcode.REFUSED
    assert outside.flags & dns.flags.RD
    inside = dns.query.https(
        q, _url(doh), verify=doh.ssl_context, timeout=10, http_version=H1, source="127.0.0.1"
    )
    assert inside.rcode() == dns.rcode.SERVFAIL


@pytest.mark.parametrize(
    ("method", "query", "body", "headers", "status", "field"),
    [
        ("GET", "", None, {}, 400, "dns"),
        ("GET", "?dns=***", None, {}, 400, "dns"),
        ("GET", "?dns=AAAA", None, {}, 400, "dns"),  # 3 bytes: no DNS header
        ("POST", "", b"\x00" * 20, {"Content-Type": "application/json"}, 415, ""),
        ("POST", "", b"", {"Content-Type": "application/dns-message"}, 400, "dns"),
        ("PUT", "", b"x", {"Content-Type": "application/dns-message"}, 405, ""),
    ],
)
def test_bad_doh_requests_get_a_4xx_and_change_nothing(
    doh: DnsdiscProcess,
    method: str,
    query: str,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
    field: str,
) -> None:
    doh.token = None  # DoH needs no token; a bad request is refused for what it is
    req = urllib.request.Request(f"{_url(doh)}{query}", data=body, method=method)
    for k, v in headers.items():
        req.add_header(k, v)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, context=doh.ssl_context, timeout=10)
    assert err.value.code == status
    if field:
        import json

        assert json.loads(err.value.read())["field"] == field
    doh.token = "s3cret"
    assert doh.http("GET", "/v1/services").status == 200
    assert doh.http("GET", "/readyz").status == 200
