"""cli: the client commands' arguments, usage errors and tables, without a dnsdisc server; the
server command's start-up errors, one line and no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dnsdisc import cli
from dnsdisc.cli import commands
from tests.support.helpers import ROOT, free_port

# -- CLI arguments -----------------------------------------------------------------------------


def parse(*argv: str) -> Any:
    return cli.parser().parse_args(list(argv))


def test_register_flags_become_the_instance_body() -> None:
    args = parse(
        "register", "web", "web-1", "--address", "10.0.0.1", "--port", "8080",
        "--weight", "50", "--priority", "2", "--protocol", "udp", "--tag", "blue",
        "--tag", "canary", "--meta", "version=1.4", "--meta", "owner=a=b", "--ttl", "10",
        "--check-http", "/health", "--check-interval", "0.5", "--check-port", "9090",
        "--deregister-after", "600", "--http", "[::1]:9000",
    )  # fmt: skip
    assert (args.service, args.id, args.address, args.port) == ("web", "web-1", "10.0.0.1", 8080)
    assert args.http == "[::1]:9000"  # checked, kept as given (--cacert may make it https)
    assert commands.register_fields(args) == {
        "weight": 50,
        "priority": 2,
        "protocol": "udp",
        "ttl": 10.0,
        "deregister_after": 600.0,
        "tags": ["blue", "canary"],
        "meta": {"version": "1.4", "owner": "a=b"},
        "check": {"type": "http", "path": "/health", "interval": 0.5, "port": 9090},
    }


def test_register_minimal_sends_only_address_and_port() -> None:
    args = parse("register", "web", "w", "--address", "::1", "--port", "1", "--check-tcp")
    assert commands.register_fields(args) == {"check": {"type": "tcp"}}
    args = parse("register", "web", "w", "--address", "::1", "--port", "1")
    assert commands.register_fields(args) == {}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["register", "web", "w", "--port", "80"], "--address"),
        (["register", "web", "w", "--address", "10.0.0.1", "--port", "eighty"], "invalid int"),
        (["register", "web", "w", "--address", "a", "--port", "1", "--ttl", "nan"], "finite"),
        (["register", "web", "w", "--address", "a", "--port", "1", "--meta", "novalue"], "KEY="),
        (
            ["register", "web", "w", "--address", "a", "--port", "1", "--check-http", "/",
             "--check-tcp"],
            "not allowed with",
        ),
        (["heartbeat", "web", "w", "--status", "dead"], "invalid choice"),
        (["maintenance", "web", "w"], "one of the arguments --enable --disable is required"),
        (["maintenance", "web", "w", "--enable", "--disable"], "not allowed with"),
        (["services", "--http", "nope:x"], "expected HOST:PORT"),
        (["instances"], "service"),
        (["deregister", "web"], "id"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["register", "web", "w", "--address", "a", "--port", "1", "--check-interval", "3"],
        ["register", "web", "w", "--address", "a", "--port", "1", "--meta", "k=1", "--meta", "k=2"],
        ["maintenance", "web", "w", "--disable", "--reason", "why"],
    ],
)
def test_usage_errors_found_after_parsing_exit_2_before_any_request(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    closed = free_port()  # nothing listens: had a request been sent, the exit would be 1
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--http", f"127.0.0.1:{closed}"])
    assert exit_info.value.code == 2
    assert "cannot reach" not in capsys.readouterr().err


def test_unreachable_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = free_port()
    monkeypatch.setenv("DNSDISC_HTTP", f"127.0.0.1:{closed}")
    assert cli.main(["services"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        err == f"dnsdisc: cannot reach dnsdisc at http://127.0.0.1:{closed}: connection refused\n"
    )


def test_bad_env_address_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DNSDISC_HTTP", "no:port")
    assert cli.main(["services"]) == 2
    assert capsys.readouterr().err.startswith("dnsdisc: error: DNSDISC_HTTP: expected HOST:PORT")


def test_client_commands_stay_light() -> None:
    """A client command imports neither aiohttp, nor asyncio, nor dnspython, nor the server."""
    closed = free_port()
    code = (
        "import sys\n"
        "from dnsdisc.cli import main\n"
        f"assert main(['services', '--http', '127.0.0.1:{closed}']) == 1\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('aiohttp', 'asyncio', 'dns', 'uvloop') or m in ('dnsdisc.server.app', 'dnsdisc.api.http'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
    assert "cannot reach dnsdisc" in result.stderr


# -- tables ----------------------------------------------------------------------------------


def inst(iid: str, status: str = "passing", **kw: Any) -> dict[str, Any]:
    body = {"id": iid, "address": "10.0.0.1", "port": 80, "weight": 100, "priority": 0, "tags": []}
    body.update(kw)
    body["health"] = {"status": status, "maintenance": kw.get("reason")}
    return body


def test_format_table_aligns_columns_without_trailing_blanks() -> None:
    text = commands.format_table(("A", "BBB", "C"), [("xxxx", 1, ""), ("y", 22, "z")])
    assert text.splitlines() == ["A     BBB  C", "xxxx  1", "y     22   z"]


def test_instances_table() -> None:
    rows = [
        inst("web-1", tags=["blue", "canary"], zone="eu-1a"),
        inst("web-2", "maintenance", reason="kernel upgrade", address="2001:db8::2", weight=5),
        inst("web-3", "critical", priority=10, port=8443),
    ]
    assert commands.instances_table("web", rows).splitlines() == [
        "ID     ADDRESS      PORT  WEIGHT  PRIORITY  ZONE   TAGS         STATUS",
        "web-1  10.0.0.1     80    100     0         eu-1a  blue,canary  passing",
        "web-2  2001:db8::2  80    5       0         -      -            maintenance (kernel upgrade)",
        "web-3  10.0.0.1     8443  100     10        -      -            critical",
    ]
    assert commands.instances_table("web", []) == "web has no instances"


def test_services_table_counts_passing_and_warning_as_healthy() -> None:
    details: list[dict[str, Any]] = [
        {
            "name": "api",
            "policy": "least_loaded",
            "instances": [inst("a"), inst("b", "warning"), inst("c", "critical")],
        },
        {"name": "db", "policy": "priority", "instances": [inst("m", "maintenance")]},
        {"name": "empty", "policy": "weighted", "instances": []},
    ]
    assert commands.services_table(details).splitlines() == [
        "NAME   POLICY        INSTANCES  HEALTHY",
        "api    least_loaded  3          2",
        "db     priority      1          0",
        "empty  weighted      0          0",
    ]
    assert commands.services_table([]) == "no services"


# -- the server command's start-up errors ------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dnsdisc", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )


def test_cli_exits_nonzero_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("dns:\n  listen: 127.0.0.1:99999\n")
    result = run_cli("serve", "--config", str(path), cwd=ROOT)
    assert result.returncode == 2
    assert f"{path}: dns.listen:" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("serve", "--dns", "nonsense", cwd=ROOT)
    assert result.returncode == 2 and "--dns" in result.stderr and "Traceback" not in result.stderr


def test_cli_reports_a_bad_zone_file(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "z.yaml").write_text("records:\n  - {name: a, type: A, value: not-an-ip}\n")
    result = run_cli(
        "serve", "--zones", str(zones), "--storage", "memory", "--dns", "127.0.0.1:1", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "z.yaml: records[0]:" in result.stderr and "Traceback" not in result.stderr


def test_cli_reports_a_port_in_use(tmp_path: Path) -> None:

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli(
            "serve",
            "--storage",
            "memory",
            "--http",
            f"127.0.0.1:{port}",
            "--dns",
            "127.0.0.1:0".replace(":0", f":{port}"),
            cwd=tmp_path,
        )
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr


def test_explain_text() -> None:
    reply = {
        "name": "web.svc.internal.", "type": "A", "policy": "weighted", "max_answers": 1,
        "ttl": 5, "sequence": "random", "locality": "prefer", "client_zone": "eu-1b",
        "ecs_scope": 16, "method": "exact", "error_bound": 0.0,
        "instances": [
            {"id": "w1", "address": "10.0.0.1", "weight": 1, "included": False,
             "reason": "zone", "p_first": 0.0, "p_in_answer": 0.0},
            {"id": "w3", "address": "10.0.0.3", "weight": 3, "included": True,
             "reason": None, "p_first": 1.0, "p_in_answer": 1.0},
        ],
    }  # fmt: skip
    assert commands.explain_text(reply).splitlines() == [
        "web.svc.internal. A: policy weighted, max_answers 1, ttl 5, sequence random, "
        "locality prefer, client in eu-1b, ECS scope /16",
        "ID  ADDRESS   WEIGHT  IN        P_FIRST  P_IN",
        "w1  10.0.0.1  1       no: zone  0.000    0.000",
        "w3  10.0.0.3  3       yes       1.000    1.000",
    ]
