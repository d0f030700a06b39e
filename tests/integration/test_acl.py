"""Tokens with rules on a running server (#17): each right against each endpoint, globs, the
anonymous rules, filtered lists, a client certificate named like a token, the throttle on
failed authentications, and the legacy http.token."""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import Ca
from tests.support.helpers import ROOT, DnsdiscProcess, HttpResult, free_port, metric, running

SECRETS = {"web-team": "w3b-secret", "ops": "0ps-secret", "db-reader": "db-secret"}


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


ACL = f"""
acl:
  tokens:
    - name: web-team
      secret_sha256: "{_sha(SECRETS["web-team"])}"
      rules:
        - {{services: "web*", access: write}}
        - {{services: "*", access: read}}
    - name: ops
      secret_sha256: "{_sha(SECRETS["ops"])}"
      rules: [{{services: "*", access: write}}, {{operator: true}}, {{metrics: true}}]
    - name: db-reader
      secret_sha256: "{_sha(SECRETS["db-reader"])}"
      rules: [{{services: "db", access: read}}]
  anonymous: [{{metrics: true}}]
"""


def _as(
    server: DnsdiscProcess, who: str | None, method: str, path: str, body: object = None
) -> HttpResult:
    server.token = SECRETS[who] if who else None
    try:
        return server.http(method, path, body)
    finally:
        server.token = SECRETS["ops"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DnsdiscProcess]:
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(ACL)
    args = ["--config", str(config), "--workers", "1", "--storage", "memory"]
    with running(tmp_path, extra_args=args, loopback_checks=False, token=SECRETS["ops"]) as srv:
        yield srv


def test_each_right_against_each_endpoint(server: DnsdiscProcess) -> None:
    inst = {"address": "10.0.0.1", "port": 80}
    for svc in ("web", "web-api", "db"):
        assert _as(server, "ops", "PUT", f"/v1/services/{svc}/instances/i1", inst).status == 201
    # Anonymous: no service to read, no write; metrics yes; probes open.
    assert _as(server, None, "GET", "/v1/services").body == {"services": []}
    refused = _as(server, None, "GET", "/v1/services/web")
    assert refused.status == 401 and refused.body["field"] == "Authorization"
    assert _as(server, None, "PUT", "/v1/services/web/instances/x", inst).status == 401
    assert _as(server, None, "POST", "/v1/reload").status == 401
    assert _as(server, None, "GET", "/metrics").status == 200
    assert _as(server, None, "GET", "/readyz").status == 200
    # web-team: writes web*, reads the rest; no reload, no metrics.
    assert _as(server, "web-team", "PUT", "/v1/services/web-api/instances/i2", inst).status == 201
    assert (
        _as(server, "web-team", "POST", "/v1/services/web/instances/i1/heartbeat", {}).status == 200
    )
    denied = _as(server, "web-team", "PUT", "/v1/services/db/instances/i2", inst)
    assert denied.status == 403 and denied.body["field"] == "service"
    assert "web-team" in denied.body["error"] and "db" in denied.body["error"]
    assert _as(server, "web-team", "DELETE", "/v1/services/db").status == 403
    assert _as(server, "web-team", "PUT", "/v1/services/db", {"ttl": 5}).status == 403
    assert _as(server, "web-team", "GET", "/v1/services/db").status == 200
    listed = _as(server, "web-team", "GET", "/v1/services").body["services"]
    assert [s["name"] for s in listed] == ["db", "web", "web-api"]
    assert _as(server, "web-team", "POST", "/v1/reload").status == 403
    assert _as(server, "web-team", "GET", "/metrics").status == 403
    # db-reader: reads db only, and the list shows only db.
    listed = _as(server, "db-reader", "GET", "/v1/services").body["services"]
    assert [s["name"] for s in listed] == ["db"]
    assert _as(server, "db-reader", "GET", "/v1/services/web/instances/i1").status == 403
    assert _as(server, "db-reader", "GET", "/v1/services/db/instances/i1").status == 200
    assert _as(server, "db-reader", "DELETE", "/v1/services/db/instances/i1").status == 403
    # ops: everything.
    assert _as(server, "ops", "POST", "/v1/reload").status == 200
    assert _as(server, "ops", "DELETE", "/v1/services/db/instances/i1").status == 204
    assert "w3b-secret" not in server.log() and _sha("w3b-secret") not in server.log()


def test_failed_authentications_are_throttled_and_counted(server: DnsdiscProcess) -> None:
    statuses = []
    for _ in range(12):
        req = urllib.request.Request(f"{server.http_url}/v1/services")
        req.add_header("Authorization", "Bearer guess")
        try:
            urllib.request.urlopen(req, timeout=5)
        except urllib.error.HTTPError as err:
            statuses.append(err.code)
            if err.code == 401:
                assert err.headers["WWW-Authenticate"].startswith("Bearer")
    assert statuses == [401] * 10 + [429] * 2
    # The right token from that address is throttled too, for the window; the metrics say so.
    assert _as(server, "ops", "GET", "/v1/services").status == 429
    server.token = None
    assert metric(server, 'dnsdisc_http_auth_failures_total{outcome="failed"}') == 10
    assert metric(server, 'dnsdisc_http_auth_failures_total{outcome="throttled"}') == 3
    # A 10 KB Authorization header: refused by the HTTP layer; the server serves on.
    req = urllib.request.Request(f"{server.http_url}/readyz")
    req.add_header("Authorization", "Bearer " + "x" * 10_000)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert 400 <= err.value.code < 500
    assert server.http("GET", "/readyz").status == 200


def test_a_client_certificate_named_like_a_token_gets_its_rights(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ca = Ca.make(pki)
    srv = ca.issue(pki, "server", "dnsdisc")
    team = ca.issue(pki, "web-team", "web-team", server=False)
    stranger = ca.issue(pki, "stranger", "nobody", server=False)
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(
        ACL + f"http:\n  tls:\n    cert_file: {srv.cert}\n    key_file: {srv.key}\n"
        f"    client_ca_file: {ca.cert}\n"
    )

    def context(pair: object) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca.cert))
        ctx.load_cert_chain(str(pair.cert), str(pair.key))  # type: ignore[attr-defined]
        return ctx

    args = ["--config", str(config), "--workers", "1", "--storage", "memory"]
    with running(
        tmp_path, extra_args=args, loopback_checks=False, ssl_context=context(team)
    ) as server:
        inst = {"address": "10.0.0.1", "port": 80}
        assert server.http("PUT", "/v1/services/web/instances/i1", inst).status == 201
        assert server.http("PUT", "/v1/services/db/instances/i1", inst).status == 403
        server.ssl_context = context(stranger)  # verified, but no token has its name
        assert server.http("PUT", "/v1/services/web/instances/i2", inst).status == 401
        assert server.http("GET", "/v1/services").body == {"services": []}


def test_serve_refuses_an_open_api_beyond_loopback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DNSDISC_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "dnsdisc", "serve", "--http", f"0.0.0.0:{free_port()}",
         "--dns", f"127.0.0.1:{free_port()}", "--storage", "memory"],
        capture_output=True, text=True, timeout=30, check=False, cwd=ROOT, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "http.listen: the HTTP API would listen on 0.0.0.0:" in result.stderr
    assert "DNSDISC_TOKEN" in result.stderr and "--http-allow-insecure" in result.stderr
