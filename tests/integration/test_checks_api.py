"""Checks registered over the API (#22 review): a batch is held to the same rules as a PUT (no
exec, no loopback target where health.check_networks forbids it); an alias of itself is a 400;
re-registering an instance whose checks pass does not flap it through critical."""

from __future__ import annotations

from pathlib import Path

from tests.support.backends import http_backend
from tests.support.helpers import DnsdiscProcess, free_port, running, wait_until


def test_a_batch_is_held_to_the_api_check_rules(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with running(tmp_path, loopback_checks=False) as server:  # default check_networks
        for n, check in enumerate(
            [
                {"type": "exec", "command": ["/usr/bin/touch", str(marker)]},
                {"type": "http", "address": "127.0.0.1", "port": 80},
                {"type": "https", "ca_file": "/etc/shadow"},
            ]
        ):
            ops = [
                {"op": "register", "service": "ok", "id": "a", "body": {"address": "10.0.0.1", "port": 1}},
                {"op": "register", "service": "web", "id": f"w{n}",
                 "body": {"address": "10.0.0.2", "port": 80, "check": check}},
            ]  # fmt: skip
            result = server.http("POST", "/v1/batch", {"ops": ops})
            assert result.status == 400, result
            assert result.body["op"] == 1 and result.body["field"] == "check", result.body
        assert server.http("GET", "/v1/services").body["services"] == []
    assert not marker.exists()


def test_an_alias_of_itself_is_refused(server: DnsdiscProcess) -> None:
    for check in (
        {"type": "alias", "service": "web"},
        {"type": "alias", "service": "web", "instance": "a"},
    ):
        body = {"address": "10.0.0.1", "port": 80, "check": check}
        result = server.http("PUT", "/v1/services/web/instances/a", body)
        assert result.status == 400 and result.body["field"] == "check"


def test_re_registering_passing_checks_does_not_flap(server: DnsdiscProcess) -> None:
    port = free_port()
    checks = [
        {"type": "http", "id": "web", "path": "/health", "interval": 0.2},
        {"type": "tcp", "id": "conn", "interval": 0.2},
    ]
    with http_backend(port):
        server.register("web", "a", address="127.0.0.1", port=port, checks=checks)

        def status() -> str:
            return str(server.http("GET", "/v1/services/web/instances/a").body["health"]["status"])

        wait_until(lambda: status() == "passing", 3)
        server.register("web", "a", address="127.0.0.1", port=port, checks=checks, weight=7)
        wait_until(
            lambda: all(
                c["status"] == "passing"
                for c in server.http("GET", "/v1/services/web/instances/a").body["health"]["checks"]
            ),
            3,
        )
        history = server.http("GET", "/v1/services/web/instances/a").body["health"]["history"]
        assert [h["status"] for h in history] == ["passing"], history
