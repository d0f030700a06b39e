"""The client commands (`python -m dnsdisc register ...` as a subprocess) and dnsdisc.client
against a real server: what they print, what the server and its DNS answers show afterwards,
errors and exit statuses, the token, leases kept past their TTL, and resolve()/pick()."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dnsdisc.client import AsyncClient, Client, ClientError, ResolveError, pick, resolve
from tests.support.helpers import (
    ROOT,
    DnsdiscProcess,
    console_steps,
    free_port,
    readme_block,
    require_tool,
    running,
    wait_until,
)

DOMAIN = "svc.internal"


def run_cli(
    http: str | None, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``python -m dnsdisc ARGS`` with DNSDISC_HTTP=``http`` and no DNSDISC_TOKEN unless ``env``
    gives one."""
    full = {k: v for k, v in os.environ.items() if k not in ("DNSDISC_TOKEN", "DNSDISC_HTTP")}
    if http is not None:
        full["DNSDISC_HTTP"] = http
    full.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "dnsdisc", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=ROOT,
        timeout=timeout,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def cli(server: DnsdiscProcess, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run_cli(f"127.0.0.1:{server.http_port}", *args, **kw)


def ok(server: DnsdiscProcess, *args: str, **kw: Any) -> str:
    result = cli(server, *args, **kw)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert result.stderr == ""
    return result.stdout


def table(text: str) -> list[dict[str, str]]:
    """A printed table as dicts by header; columns are split on runs of two or more blanks."""
    lines = text.rstrip("\n").splitlines()
    header = re.split(r"\s{2,}", lines[0])
    return [dict(zip(header, re.split(r"\s{2,}", line), strict=True)) for line in lines[1:]]


def a_records(server: DnsdiscProcess, name: str) -> list[str]:
    return sorted(server.addresses(f"{name}.{DOMAIN}"))


def health(server: DnsdiscProcess, service: str, iid: str) -> str:
    res = server.http("GET", f"/v1/services/{service}/instances/{iid}")
    assert res.status == 200, res
    status: str = res.body["health"]["status"]
    return status


# -- the commands --------------------------------------------------------------------------


def test_round_trip(server: DnsdiscProcess) -> None:
    out = ok(
        server, "register", "web", "web-1", "--address", "10.0.0.1", "--port", "8080",
        "--tag", "blue", "--tag", "canary", "--meta", "version=1.4", "--priority", "1",
        "--zone", "eu-1a",
    )  # fmt: skip
    assert out == "registered web/web-1 at 10.0.0.1:8080: passing\n"
    out = ok(
        server, "register", "web", "web-2", "--address", "2001:db8::2", "--port", "8443",
        "--weight", "50", "--ttl", "30", "--protocol", "udp",
    )  # fmt: skip
    assert out == "registered web/web-2 at [2001:db8::2]:8443: passing\n"
    stored = server.http("GET", "/v1/services/web/instances/web-1").body
    assert (stored["tags"], stored["meta"], stored["priority"], stored["zone"]) == (
        ["blue", "canary"],
        {"version": "1.4"},
        1,
        "eu-1a",
    )
    stored = server.http("GET", "/v1/services/web/instances/web-2").body
    assert (stored["weight"], stored["ttl"], stored["protocol"]) == (50, 30.0, "udp")
    assert a_records(server, "web") == ["10.0.0.1"]
    assert server.addresses(f"web.{DOMAIN}", "AAAA") == ["2001:db8::2"]

    assert table(ok(server, "services")) == [
        {"NAME": "web", "POLICY": "weighted", "INSTANCES": "2", "HEALTHY": "2"}
    ]
    assert table(ok(server, "instances", "web")) == [
        {
            "ID": "web-1",
            "ADDRESS": "10.0.0.1",
            "PORT": "8080",
            "WEIGHT": "100",
            "PRIORITY": "1",
            "ZONE": "eu-1a",
            "TAGS": "blue,canary",
            "STATUS": "passing",
        },
        {
            "ID": "web-2",
            "ADDRESS": "2001:db8::2",
            "PORT": "8443",
            "WEIGHT": "50",
            "PRIORITY": "0",
            "ZONE": "-",
            "TAGS": "-",
            "STATUS": "passing",
        },
    ]

    # A reported status and load; a plain heartbeat on a leased instance means passing again.
    out = ok(server, "heartbeat", "web", "web-2", "--status", "warning", "--load", "0.4")
    assert out == "web/web-2: warning\n"
    assert server.http("GET", "/v1/services/web/instances/web-2").body["load"] == 0.4
    assert table(ok(server, "instances", "web"))[1]["STATUS"] == "warning"
    assert table(ok(server, "services"))[0]["HEALTHY"] == "2"
    assert ok(server, "heartbeat", "web", "web-2") == "web/web-2: passing\n"

    # Maintenance takes web-1 out of DNS and back.
    out = ok(server, "maintenance", "web", "web-1", "--enable", "--reason", "kernel upgrade")
    assert out == "web/web-1: maintenance (kernel upgrade)\n"
    assert a_records(server, "web") == []
    assert table(ok(server, "services"))[0]["HEALTHY"] == "1"
    assert table(ok(server, "instances", "web"))[0]["STATUS"] == "maintenance (kernel upgrade)"
    assert ok(server, "maintenance", "web", "web-1", "--disable") == "web/web-1: passing\n"
    assert a_records(server, "web") == ["10.0.0.1"]

    # Deregistration; a second one is the server's 404.
    assert ok(server, "deregister", "web", "web-1") == "deregistered web/web-1\n"
    assert a_records(server, "web") == []
    assert server.http("GET", "/v1/services/web/instances/web-1").status == 404
    again = cli(server, "deregister", "web", "web-1")
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.startswith("dnsdisc: error: ") and again.stderr.endswith("(HTTP 404)\n")
    assert len(again.stderr.splitlines()) == 1


def test_register_with_a_check(server: DnsdiscProcess) -> None:
    port = free_port()  # nothing listens: the check fails, the instance is never handed out
    out = ok(
        server, "register", "db", "db-1", "--address", "127.0.0.1", "--port", str(port),
        "--check-tcp", "--check-interval", "0.2", "--check-timeout", "0.1",
        "--deregister-after", "3600",
    )  # fmt: skip
    assert out == f"registered db/db-1 at 127.0.0.1:{port}: critical\n"
    stored = server.http("GET", "/v1/services/db/instances/db-1").body
    assert stored["check"]["type"] == "tcp"
    assert (stored["check"]["interval"], stored["check"]["timeout"]) == (0.2, 0.1)
    assert stored["deregister_after"] == 3600.0
    assert table(ok(server, "services")) == [
        {"NAME": "db", "POLICY": "weighted", "INSTANCES": "1", "HEALTHY": "0"}
    ]


def test_json_output_is_the_servers(server: DnsdiscProcess) -> None:
    reply = json.loads(
        ok(server, "register", "api", "a-1", "--address", "10.1.0.1", "--port", "80", "--json")
    )
    assert reply["id"] == "a-1" and reply["health"]["status"] == "passing"
    server.register("api", "a-2", address="10.1.0.2", port=80)
    assert json.loads(ok(server, "services", "--json")) == server.http("GET", "/v1/services").body
    listed = json.loads(ok(server, "instances", "api", "--json"))
    assert listed == server.http("GET", "/v1/services/api").body
    assert [i["id"] for i in listed["instances"]] == ["a-1", "a-2"]
    beat = json.loads(ok(server, "heartbeat", "api", "a-1", "--latency-ms", "12", "--json"))
    assert beat["latency_ms"] == 12.0
    maint = json.loads(ok(server, "maintenance", "api", "a-2", "--enable", "--json"))
    assert maint["health"]["maintenance"] == "maintenance"


def test_empty_listings(server: DnsdiscProcess) -> None:
    assert ok(server, "services") == "no services\n"
    server.http("PUT", "/v1/services/idle", {})
    assert ok(server, "instances", "idle") == "idle has no instances\n"


def test_unreachable_server() -> None:
    port = free_port()  # bound and released: nothing listens there
    result = run_cli(f"127.0.0.1:{port}", "services")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"dnsdisc: cannot reach dnsdisc at http://127.0.0.1:{port}: connection refused\n"
    )
    # --http wins over $DNSDISC_HTTP.
    result = run_cli("127.0.0.1:1", "instances", "web", "--http", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"http://127.0.0.1:{port}:" in result.stderr


def test_http_flag_wins_over_env(server: DnsdiscProcess) -> None:
    closed = free_port()
    result = run_cli(f"127.0.0.1:{closed}", "services", "--http", f"127.0.0.1:{server.http_port}")
    assert (result.returncode, result.stdout) == (0, "no services\n")


def test_client_errors_are_one_line_and_exit_1(server: DnsdiscProcess) -> None:
    result = cli(server, "register", "web", "w", "--address", "10.0.0.3", "--port", "0")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "dnsdisc: error: port: port must be from 1 to 65535, got 0 (HTTP 400)\n"
    )
    result = cli(server, "register", "web", "w", "--address", "10.0.0.999", "--port", "80")
    assert result.returncode == 1
    assert result.stderr == (
        "dnsdisc: error: address: address '10.0.0.999' is not an IPv4 or IPv6 address (HTTP 400)\n"
    )
    result = cli(server, "register", "Bad_Name", "w", "--address", "10.0.0.3", "--port", "80")
    assert result.returncode == 1 and result.stderr.startswith("dnsdisc: error: service: ")
    # Nothing was stored by any of them.
    assert server.http("GET", "/v1/services").body == {"services": []}
    result = cli(server, "instances", "nosuch")
    assert result.returncode == 1
    assert result.stderr.startswith("dnsdisc: error: ") and "(HTTP 404)" in result.stderr
    result = cli(server, "heartbeat", "nosuch", "x")
    assert result.returncode == 1 and "(HTTP 404)" in result.stderr


def test_usage_error_exits_2_without_a_server() -> None:
    result = run_cli(None, "register", "web", "w", "--port", "80")
    assert result.returncode == 2
    assert "the following arguments are required: --address" in result.stderr


def test_token_from_the_environment(tmp_path: Path) -> None:
    with running(tmp_path, env={"DNSDISC_TOKEN": "t0ken"}, token=None) as server:
        args = ("register", "web", "w-1", "--address", "10.0.0.1", "--port", "80")
        result = cli(server, *args)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            "dnsdisc: error: Authorization: a valid 'Authorization: Bearer <token>' header is "
            "required to change service web (HTTP 401)",
            "dnsdisc: the server wants a token: set DNSDISC_TOKEN",
        ]
        wrong = cli(server, *args, env={"DNSDISC_TOKEN": "nope"})
        assert wrong.returncode == 1 and "(HTTP 401)" in wrong.stderr
        assert "set DNSDISC_TOKEN" not in wrong.stderr
        assert a_records(server, "web") == []
        ok(server, *args, env={"DNSDISC_TOKEN": "t0ken"})
        assert a_records(server, "web") == ["10.0.0.1"]
        # Reads need no token.
        assert table(ok(server, "services"))[0]["INSTANCES"] == "1"
        denied = cli(server, "deregister", "web", "w-1")
        assert denied.returncode == 1 and "(HTTP 401)" in denied.stderr
        ok(server, "deregister", "web", "w-1", env={"DNSDISC_TOKEN": "t0ken"})
        assert a_records(server, "web") == []
        # The library likewise.
        with pytest.raises(ClientError) as info:
            Client(f"127.0.0.1:{server.http_port}").deregister("web", "w-1")
        assert (info.value.status, info.value.field) == (401, "Authorization")
        Client(f"127.0.0.1:{server.http_port}", token="t0ken").register("web", "w-2", "::1", 80)
        assert server.addresses(f"web.{DOMAIN}", "AAAA") == ["::1"]


# -- leases --------------------------------------------------------------------------------


def hold_and_watch(server: DnsdiscProcess, name: str, seconds: float) -> list[list[str]]:
    """The A answers for ``name`` sampled every 0.1 s for ``seconds``."""
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.append(a_records(server, name))
        time.sleep(0.1)
    return seen


def test_sync_lease_outlives_its_ttl_and_ends_with_the_block(server: DnsdiscProcess) -> None:
    client = Client(f"127.0.0.1:{server.http_port}")
    # The control: the same lease with nobody heartbeating goes critical within the hold.
    client.register("idle", "i-1", "10.8.0.1", 80, ttl=1)
    with client.registration("kept", "k-1", address="10.9.0.1", port=9000, ttl=1) as lease:
        assert lease.instance["health"]["status"] == "passing"
        seen = hold_and_watch(server, "kept", 2.5)
        assert all(answer == ["10.9.0.1"] for answer in seen), seen
        assert health(server, "kept", "k-1") == "passing"
        assert lease.heartbeats >= 5 and lease.failures == 0
    assert health(server, "idle", "i-1") == "critical"
    assert a_records(server, "idle") == []
    # Deregistered on exit: gone from the registry and from DNS at once.
    assert server.http("GET", "/v1/services/kept/instances/k-1").status == 404
    assert a_records(server, "kept") == []


def test_async_lease_outlives_its_ttl_and_ends_with_the_block(server: DnsdiscProcess) -> None:
    api = AsyncClient(f"127.0.0.1:{server.http_port}")

    async def main() -> list[list[str]]:
        await api.register("idle", "i-1", "10.8.0.1", 80, ttl=1)
        async with api.registration("kept", "k-1", address="10.9.0.2", port=9000, ttl=1) as lease:
            seen = []
            for _ in range(25):
                seen.append(await asyncio.to_thread(a_records, server, "kept"))
                await asyncio.sleep(0.1)
            assert lease.heartbeats >= 5 and lease.failures == 0
            assert (await api.instance("kept", "k-1"))["health"]["status"] == "passing"
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), 30))
    assert all(answer == ["10.9.0.2"] for answer in seen), seen
    assert health(server, "idle", "i-1") == "critical"
    assert server.http("GET", "/v1/services/kept/instances/k-1").status == 404
    assert a_records(server, "kept") == []


def test_lease_registers_again_after_removal(server: DnsdiscProcess) -> None:
    client = Client(f"127.0.0.1:{server.http_port}")
    with client.registration("kept", "k-1", address="10.9.0.3", port=9000, ttl=1):
        assert server.http("DELETE", "/v1/services/kept/instances/k-1").status == 204
        assert a_records(server, "kept") == []
        wait_until(lambda: a_records(server, "kept") == ["10.9.0.3"], timeout=3)
    assert a_records(server, "kept") == []


def test_lease_rides_out_a_server_restart(
    server: DnsdiscProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="dnsdisc.client")
    client = Client(f"127.0.0.1:{server.http_port}", timeout=1)
    with client.registration("kept", "k-1", address="10.9.0.4", port=9000, ttl=1) as lease:
        server.stop()
        wait_until(lambda: lease.failures >= 2, timeout=5)  # failing, not raising
        server.start()  # same ports, same SQLite registry
        wait_until(lambda: lease.failures == 0, timeout=5)
        assert health(server, "kept", "k-1") == "passing"
        assert a_records(server, "kept") == ["10.9.0.4"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("heartbeat for kept/k-1 failed (1 in a row): cannot reach" in m for m in messages)
    assert any("succeed again" in m for m in messages)
    assert a_records(server, "kept") == []


# -- resolve ---------------------------------------------------------------------------------


def test_resolve_and_pick_against_the_server(server: DnsdiscProcess) -> None:
    dns_at = f"127.0.0.1:{server.dns_port}"
    server.register("api", "a-1", address="10.2.0.1", port=8001, weight=300)
    server.register("api", "a-2", address="2001:db8::2", port=8002, weight=100)
    server.register("api", "backup", address="10.2.0.9", port=8009, priority=10)
    server.register("api", "stats", address="10.2.0.5", port=8125, protocol="udp")
    for _ in range(20):
        targets = resolve("api", dns=dns_at)
        assert set(targets[:2]) == {("10.2.0.1", 8001), ("2001:db8::2", 8002)}
        assert targets[2:] == [("10.2.0.9", 8009)]
        assert pick("api", dns_at) in targets[:2]
    assert resolve("api", dns_at, proto="udp") == [("10.2.0.5", 8125)]
    assert set(resolve("api", dns_at, domain=f"{DOMAIN}.")) == set(targets)
    # Unknown service: NXDOMAIN; known with nothing to hand out: NODATA. Both empty.
    assert resolve("nosuch", dns_at) == []
    server.http("PUT", "/v1/services/api/instances/a-1/maintenance", {"enabled": True})
    server.http("PUT", "/v1/services/api/instances/a-2/maintenance", {"enabled": True})
    assert [p for _, p in resolve("api", dns_at)] == [8009]
    server.http("DELETE", "/v1/services/api")
    server.http("PUT", "/v1/services/api", {})
    assert resolve("api", dns_at) == []
    with pytest.raises(ResolveError):
        pick("api", dns_at)


def test_resolve_weights_against_the_server(server: DnsdiscProcess) -> None:
    """The order is the client's draw (seeded here), over what the server answered."""
    import random

    from tests.support.stats import assert_shares

    dns_at = f"127.0.0.1:{server.dns_port}"
    server.register("api", "heavy", address="10.3.0.1", port=1, weight=300)
    server.register("api", "light", address="10.3.0.2", port=2, weight=100)
    rng = random.Random(5)
    firsts = {"1": 0, "2": 0}
    for _ in range(400):
        firsts[str(resolve("api", dns_at, rng=rng)[0][1])] += 1
    assert_shares(firsts, {"1": 300, "2": 100}, max_abs_error=0.07)


# -- the README ------------------------------------------------------------------------------


def test_readme_cli_block(server: DnsdiscProcess) -> None:
    require_tool("dig")
    steps = console_steps(readme_block("CLI and Python client"))
    assert sum(cmd.startswith("dnsdisc ") for cmd, _ in steps) >= 8
    run_as = f'dnsdisc() {{ "{sys.executable}" -m dnsdisc "$@"; }}; '
    env = {k: v for k, v in os.environ.items() if k != "DNSDISC_TOKEN"}
    env["DNSDISC_HTTP"] = f"127.0.0.1:{server.http_port}"
    for command, expected in steps:
        cmd = command.replace("-p 8053", f"-p {server.dns_port}")
        result = subprocess.run(
            ["bash", "-c", run_as + cmd + " 2>&1"],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            cwd=ROOT,
        )
        failing = any(line.startswith("dnsdisc: ") for line in expected)
        assert result.returncode == (1 if failing else 0), (command, result.stdout)
        if command.startswith("dig"):
            assert sorted(result.stdout.splitlines()) == sorted(expected), command
        else:
            assert result.stdout.splitlines() == expected, command


def test_readme_python_block(server: DnsdiscProcess) -> None:
    code = readme_block("CLI and Python client", "python")
    expected = [line.split("# -> ", 1)[1] for line in code.splitlines() if "# -> " in line]
    assert len(expected) >= 3
    code = code.replace("127.0.0.1:8054", f"127.0.0.1:{server.http_port}").replace(
        "127.0.0.1:8053", f"127.0.0.1:{server.dns_port}"
    )
    env = {k: v for k, v in os.environ.items() if k != "DNSDISC_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected
