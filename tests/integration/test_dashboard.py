"""The dashboard (/ui/) in a real headless Chromium: services, instances, health, answer shares,
and live updates as the registry changes.

The browser is Debian's chromium (scripts/test.sh installs it), driven by the Python
``playwright`` package with ``executable_path``; Playwright's own browser download is not used.
With ``DNSDISC_SCREENSHOT=path`` the test also saves its screenshot there (docs/dashboard.png is
made that way).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import IN_CI, DnsdiscProcess, require_tool, running

# As root Chromium needs --no-sandbox (Playwright adds it); this machine's network is closed, so
# everything Chromium would fetch on its own is switched off.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
WAIT_MS = 8000  # the page polls every 2 s; a change must show within a few polls
DOMAIN = "svc.internal"


def _playwright() -> Any:
    try:
        from playwright import sync_api
    except ImportError:
        message = "the playwright package is not installed (pip install -e '.[test]')"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return sync_api


def _get(server: DnsdiscProcess, path: str) -> tuple[int, str, bytes]:
    """One request without following redirects: status, Location, body."""
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Location") or "", resp.read()
    finally:
        conn.close()


def test_dashboard_routes(server: DnsdiscProcess) -> None:
    status, location, _ = _get(server, "/ui")
    assert (status, location) == (302, "/ui/")
    status, _, body = _get(server, "/ui/")
    assert status == 200 and body.lstrip().lower().startswith(b"<!doctype html>")
    for name in ("app.js", "style.css"):
        assert _get(server, f"/ui/{name}")[0] == 200
    for path in ("/ui/nope.js", "/ui/../pyproject.toml", "/ui/x/app.js"):
        result = server.http("GET", path)
        assert result.status == 404, path
        assert result.body == {"error": "Not Found", "field": ""}, path


def test_answer_counting_and_history(server: DnsdiscProcess) -> None:
    server.register("web", "web-1", address="10.0.0.1", port=80, weight=300)
    server.register("web", "web-2", address="10.0.0.2", port=80, weight=100, tags=["blue"])
    for _ in range(40):
        assert server.addresses(f"web.{DOMAIN}")
    for _ in range(10):
        assert server.addresses(f"blue.web.{DOMAIN}") == ["10.0.0.2"]
        # Neither SRV answers nor an instance's own name count.
        assert server.addresses(f"web.{DOMAIN}", "SRV")
        assert server.addresses(f"web-1.web.{DOMAIN}") == ["10.0.0.1"]
    # The count is in the JSON only when asked for: it changes with every query.
    assert "answers" not in server.http("GET", "/v1/services/web").body["instances"][0]
    body = server.http("GET", "/v1/services/web?stats=1").body
    answers = {i["id"]: i["answers"] for i in body["instances"]}
    assert sum(answers.values()) == 50 and answers["web-2"] >= 10, answers

    path = "/v1/services/web/instances/web-2"
    assert server.http("PUT", path + "/maintenance", {"enabled": True, "reason": "x"}).status == 200
    assert server.http("PUT", path + "/maintenance", {"enabled": False}).status == 200
    server.http("POST", path + "/heartbeat", {"status": "warning"})
    health = server.http("GET", path).body["health"]
    assert [h["status"] for h in health["history"]] == ["maintenance", "passing", "warning"]
    assert all(h["time"].endswith("+00:00") for h in health["history"])
    # A re-registration keeps the count and the history.
    server.register("web", "web-2", address="10.0.0.2", port=80, weight=50)
    again = server.http("GET", path + "?stats=true").body
    assert again["answers"] == answers["web-2"]
    assert len(again["health"]["history"]) == 3


def test_dashboard_in_chromium(server: DnsdiscProcess, tmp_path: Path) -> None:
    chromium = require_tool("chromium")
    sync_api = _playwright()

    server.http("PUT", "/v1/services/web", {"policy": "weighted", "max_answers": 1, "ttl": 5})
    server.register("web", "web-1", address="10.0.0.1", port=8080, weight=300, tags=["blue"])
    server.register("web", "web-2", address="10.0.0.2", port=8080, weight=100)
    server.register("api", "api-1", address="10.0.1.1", port=9000, meta={"version": "2.1"})
    server.register("api", "api-2", address="fd00::12", port=9000, tags=["canary"])
    # A check on a closed loopback port: critical, with the check's output to show.
    server.register(
        "api",
        "api-3",
        address="127.0.0.1",
        port=_closed_port(),
        check={"type": "tcp", "interval": 1, "timeout": 1},
    )
    # Two checks: a TCP connect that fails and an alias of web that passes: critical, and
    # each check's own line says which.
    server.register(
        "api",
        "api-4",
        address="127.0.0.1",
        port=_closed_port(),
        checks=[
            {"type": "tcp", "id": "conn", "interval": 1, "timeout": 1},
            {"type": "alias", "id": "needs-web", "service": "web", "interval": 1},
        ],
    )
    server.http(
        "POST",
        "/v1/services/api/instances/api-2/heartbeat",
        {"status": "warning", "latency_ms": 42},
    )
    for _ in range(200):
        server.addresses(f"web.{DOMAIN}")
    for _ in range(40):
        server.addresses(f"api.{DOMAIN}", "A")
        server.addresses(f"api.{DOMAIN}", "AAAA")

    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, timeout=30000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on(
                "console",
                lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
            )
            page.goto(f"http://127.0.0.1:{server.http_port}/ui/")

            web = page.locator('[data-service="web"]')
            web.locator('tr[data-instance="web-2"]').wait_for()
            assert web.locator("h2").inner_text() == "web"
            assert "weighted" in web.locator(".svc-head").inner_text()
            for iid in ("web-1", "web-2"):
                row = web.locator(f'tr[data-instance="{iid}"]')
                assert row.locator(".badge").get_attribute("data-status") == "passing"
                assert row.locator(".badge").inner_text().lower() == "passing"
            row1 = web.locator('tr[data-instance="web-1"]')
            assert "10.0.0.1:8080" in row1.inner_text()
            assert "blue" in row1.locator(".tags").inner_text()

            # The answer shares follow the weights (300:100 over 200 answers), next to them.
            def share(iid: str, kind: str) -> float:
                cell = web.locator(f'tr[data-instance="{iid}"] [data-share="{kind}"]')
                return float(cell.inner_text().rstrip("%"))

            assert (share("web-1", "weight"), share("web-2", "weight")) == (75, 25)
            # The expected share, from explain: the chance of leading the next answer.
            assert (share("web-1", "expected"), share("web-2", "expected")) == (75, 25)
            a1, a2 = share("web-1", "answers"), share("web-2", "answers")
            assert abs(a1 + a2 - 100) <= 1 and a1 > a2 > 0, (a1, a2)

            api = page.locator('[data-service="api"]')
            status = api.locator('tr[data-instance="api-2"] .badge').get_attribute("data-status")
            assert status == "warning"
            assert "[fd00::12]:9000" in api.locator('tr[data-instance="api-2"]').inner_text()
            api.locator('tr[data-instance="api-3"] .badge[data-status="critical"]').wait_for()
            row4 = api.locator('tr[data-instance="api-4"]')
            row4.locator('.check[data-check="conn"][data-status="critical"]').wait_for()
            row4.locator('.check[data-check="needs-web"][data-status="passing"]').wait_for()
            assert row4.locator(".badge").get_attribute("data-status") == "critical"

            # A new instance shows up within a few polls.
            started = time.monotonic()
            server.register("web", "web-3", address="10.0.0.3", port=8080, weight=100)
            web.locator('tr[data-instance="web-3"]').wait_for()
            assert time.monotonic() - started < WAIT_MS / 1000

            # Maintenance changes the badge, shows the reason and adds to the timeline.
            result = server.http(
                "PUT",
                "/v1/services/web/instances/web-2/maintenance",
                {"enabled": True, "reason": "kernel upgrade"},
            )
            assert result.status == 200
            row2 = web.locator('tr[data-instance="web-2"]')
            row2.locator('.badge[data-status="maintenance"]').wait_for()
            assert "kernel upgrade" in row2.inner_text()
            assert row2.locator(".timeline li.s-maintenance").count() == 1
            assert share("web-2", "weight") == 0

            page.wait_for_timeout(300)  # let the bars' width transition finish
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            target = os.environ.get("DNSDISC_SCREENSHOT")
            if target:
                shutil.copyfile(shot, target)
        finally:
            browser.close()
    assert errors == []


def _closed_port() -> int:
    """A loopback TCP port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_dashboard_reads_with_the_rights_of_a_token_typed_in(tmp_path: Path) -> None:
    """With acl, an anonymous page sees nothing; with a token typed in, what that token reads."""
    chromium = require_tool("chromium")
    sync_api = _playwright()
    secret = "dash-s3cret"
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(
        "acl:\n  tokens:\n    - name: viewer\n"
        f'      secret_sha256: "{hashlib.sha256(secret.encode()).hexdigest()}"\n'
        "      rules: [{services: 'web*', access: read}]\n"
        "    - name: admin\n"
        f'      secret_sha256: "{hashlib.sha256(b"adm1n").hexdigest()}"\n'
        "      rules: [{services: '*', access: write}]\n"
    )
    args = ["--config", str(config), "--workers", "0", "--storage", "memory"]
    with running(tmp_path, extra_args=args, loopback_checks=False, token="adm1n") as server:
        server.register("web", "web-1", address="10.0.0.1", port=8080)
        server.register("db", "db-1", address="10.0.0.2", port=5432)
        errors: list[str] = []
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium, args=CHROMIUM_ARGS, timeout=30000
            )
            try:
                page = browser.new_page()
                page.set_default_timeout(WAIT_MS)
                page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
                page.goto(f"http://127.0.0.1:{server.http_port}/ui/")
                page.locator("#conn[data-state='live']").wait_for()
                assert page.locator("[data-service]").count() == 0
                page.fill("#auth-token", secret)
                page.click("#auth button")
                page.locator('[data-service="web"] tr[data-instance="web-1"]').wait_for()
                page.wait_for_timeout(2500)  # another poll: db stays out of sight
                assert page.locator('[data-service="db"]').count() == 0
            finally:
                browser.close()
        assert errors == []
