"""Alias checks (#22): a replica whose check is an alias of its primary follows the primary's
state (passing, warning, critical, maintenance) into and out of the answers; a service alias
passes while the service has a healthy instance."""

from __future__ import annotations

from pathlib import Path

from tests.support.frontends import DOMAIN
from tests.support.helpers import LOOPBACK_CHECKS, DnsdiscProcess, running, wait_until

ALIAS = {"type": "alias", "service": "db", "instance": "primary", "interval": 0.1}


def status(server: DnsdiscProcess, service: str, iid: str) -> str:
    return str(
        server.http("GET", f"/v1/services/{service}/instances/{iid}").body["health"]["status"]
    )


def test_a_replica_follows_its_primary(tmp_path: Path) -> None:
    # The replica changes state often here: flap damping would hold it out of the answers.
    config = tmp_path / "c.yaml"
    config.write_text(LOOPBACK_CHECKS + "  flap_threshold: 100\n")
    with running(tmp_path, extra_args=["--config", str(config)]) as server:
        _follow(server)


def _follow(server: DnsdiscProcess) -> None:
    server.register("db", "primary", address="10.0.0.1", port=5432, ttl=60)
    server.register("db-ro", "replica", address="10.0.0.2", port=5432, check=ALIAS)
    server.register(
        "db-any", "proxy", address="10.0.0.3", port=5432,
        check={"type": "alias", "service": "db", "interval": 0.1},
    )  # fmt: skip
    wait_until(lambda: status(server, "db-ro", "replica") == "passing", 3)
    for reported, expected in (
        ("warning", "warning"),
        ("critical", "critical"),
        ("passing", "passing"),
    ):
        server.http("POST", "/v1/services/db/instances/primary/heartbeat", {"status": reported})
        wait_until(lambda e=expected: status(server, "db-ro", "replica") == e, 3)  # type: ignore[misc]
    assert server.addresses(f"db-ro.{DOMAIN}") == ["10.0.0.2"]
    server.http("PUT", "/v1/services/db/instances/primary/maintenance", {"enabled": True})
    wait_until(lambda: status(server, "db-ro", "replica") == "critical", 3)
    wait_until(lambda: status(server, "db-any", "proxy") == "critical", 3)  # db has none healthy
    assert server.addresses(f"db-ro.{DOMAIN}") == []
    body = server.http("GET", "/v1/services/db-ro/instances/replica").body
    assert "alias of db/primary: maintenance" in body["health"]["checks"][0]["output"]
    server.http("PUT", "/v1/services/db/instances/primary/maintenance", {"enabled": False})
    wait_until(lambda: status(server, "db-ro", "replica") == "passing", 3)
    wait_until(lambda: status(server, "db-any", "proxy") == "passing", 3)
