"""Every check type the prober runs, against real servers on loopback: HTTP(S) with a test CA, a
self-signed certificate, methods, headers, bodies, redirects and kept-alive connections; gRPC's
standard health service; a UDP echo server; DNS queries to a running dnsdisc; exec scripts.
Then checks through a running dnsdisc: several checks on one instance registered over the API,
and an exec check from a zone file."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from dnsdisc.registry.model import CRITICAL, PASSING, WARNING
from tests.support.certs import Ca, Pair, self_signed
from tests.support.checkservers import grpc_backend, http_backend, probe, udp_echo, write_script
from tests.support.helpers import DnsdiscProcess, free_port, running, wait_until

# -- http ------------------------------------------------------------------------------------


def test_http_method_headers_body_and_expect_body() -> None:
    port = free_port()
    with http_backend(port) as backend:
        check = {
            "type": "http",
            "path": "/health?deep=1",
            "method": "POST",
            "headers": {"X-Token": "abc", "Content-Type": "application/json"},
            "body": '{"ping": true}',
            "expect_body": "all good",
        }
        [out] = probe(check, "127.0.0.1", port)
        assert out.status == PASSING and out.latency_ms is not None, out
        assert "body has the expected text" in out.output
        seen = backend.seen[-1]
        assert (seen.method, seen.path, seen.body) == ("POST", "/health?deep=1", b'{"ping": true}')
        assert seen.headers["X-Token"] == "abc"
        assert seen.headers["Content-Type"] == "application/json"
        assert seen.headers["User-Agent"] == "dnsdisc-health-check"

        [out] = probe({**check, "expect_body": "not there"}, "127.0.0.1", port)
        assert out.status == CRITICAL and "lacks the expected text" in out.output
        # Only the first 64 KiB are read: text beyond them is not found.
        [out] = probe({"type": "http", "path": "/big", "expect_body": "MARKER"}, "127.0.0.1", port)
        assert out.status == CRITICAL and "first 64 KiB" in out.output
        for method in ("HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"):
            [out] = probe({"type": "http", "path": "/health", "method": method}, "127.0.0.1", port)
            assert out.status == PASSING and backend.seen[-1].method == method, out


def test_http_status_verdicts_and_outputs_in_our_own_words() -> None:
    port = free_port()
    with http_backend(port):
        [busy] = probe({"type": "http", "path": "/busy"}, "127.0.0.1", port)
        assert busy.status == WARNING and "status 429" in busy.output
        [missing] = probe({"type": "http", "path": "/missing"}, "127.0.0.1", port)
        assert missing.status == CRITICAL and "status 404 (expected 200-399)" in missing.output
        [wide] = probe(
            {"type": "http", "path": "/missing", "expect": [200, 404]}, "127.0.0.1", port
        )
        assert wide.status == PASSING
        [evil] = probe({"type": "http", "path": "/evil"}, "127.0.0.1", port)
        assert evil.status == CRITICAL and "status 500" in evil.output
        assert "EVIL" not in evil.output and "\x1b" not in evil.output
    [gone] = probe({"type": "http", "path": "/health"}, "127.0.0.1", port)
    assert gone.status == CRITICAL and "ECONNREFUSED" in gone.output


def test_redirects_followed_within_the_origin_only() -> None:
    port = free_port()
    with http_backend(port) as backend, http_backend(port, host="127.0.0.2") as other:
        follow = {"type": "http", "follow_redirects": True}
        for path in ("/redirect-relative", "/redirect-absolute"):
            [out] = probe({**follow, "path": path}, "127.0.0.1", port)
            assert out.status == PASSING, out
            assert [s.path for s in backend.seen[-2:]] == [path, "/health"]
            # The output names the configured URL, not the target's Location.
            assert path in out.output and "/health" not in out.output, out.output
        # 303 after a POST: the redirect is fetched with GET, without the body.
        [out] = probe(
            {**follow, "path": "/post-to-get", "method": "POST", "body": "x"}, "127.0.0.1", port
        )
        assert out.status == PASSING
        assert [(s.method, s.body) for s in backend.seen[-2:]] == [("POST", b"x"), ("GET", b"")]
        for path in ("/redirect-other-host", "/redirect-other-port"):
            [out] = probe({**follow, "path": path}, "127.0.0.1", port)
            assert out.status == CRITICAL and "redirect to another origin refused" in out.output
            assert "127.0.0.2" not in out.output and str(port + 1) not in out.output
        assert other.seen == []  # never asked
        [out] = probe({**follow, "path": "/redirect-loop"}, "127.0.0.1", port)
        assert out.status == CRITICAL and "over 5 redirects" in out.output
        assert [s.path for s in backend.seen[-6:]] == ["/redirect-loop"] * 6
        # Without follow_redirects, a redirect is a status like any other.
        [out] = probe({"type": "http", "path": "/redirect-other-host"}, "127.0.0.1", port)
        assert out.status == PASSING and "status 302" in out.output


def test_kept_alive_connections_and_a_target_that_died() -> None:
    port = free_port()
    with http_backend(port) as backend:
        outs = probe({"type": "http", "path": "/health"}, "127.0.0.1", port, runs=3)
        assert [o.status for o in outs] == [PASSING] * 3
        assert {s.connection for s in backend.seen} == {1}  # one connection for the three
        # POST is not retried by the client, so it is never sent on a reused connection.
        probe({"type": "http", "path": "/health", "method": "POST"}, "127.0.0.1", port, runs=2)
        assert len({s.connection for s in backend.seen[-2:]}) == 2

    async def died() -> list[str]:
        from dnsdisc.health.probes import Prober
        from dnsdisc.registry.checks import CheckSpec

        prober = Prober()
        prober.start()
        spec = CheckSpec.from_json({"type": "http", "path": "/health", "interval": 5})
        try:
            with http_backend(port) as live:
                first = await prober.probe(spec, "127.0.0.1", port)
                live.stop()  # its connection (idle in our pool) and its socket close
            second = await prober.probe(spec, "127.0.0.1", port)
            with http_backend(port):
                third = await prober.probe(spec, "127.0.0.1", port)
            return [first.status, second.status, third.status]
        finally:
            await prober.close()

    import asyncio

    assert asyncio.run(died()) == [PASSING, CRITICAL, PASSING]


def test_unframed_bodies_and_bare_lf_heads() -> None:
    port = free_port()
    with http_backend(port) as backend:
        # Read up to 64 KiB of a body that runs until the connection closes: the connection is
        # not kept for the next run, which would read the rest of it as its own response.
        outs = probe({"type": "http", "path": "/unframed"}, "127.0.0.1", port, runs=2)
        assert [o.status for o in outs] == [PASSING] * 2, outs
        assert len({s.connection for s in backend.seen}) == 2
        # A head whose lines end in a bare LF is read (as aiohttp did), and kept alive.
        outs = probe({"type": "http", "path": "/bare-lf"}, "127.0.0.1", port, runs=2)
        assert [o.status for o in outs] == [PASSING] * 2, outs
        assert len({s.connection for s in backend.seen[-2:]}) == 1


# -- https -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | Pair]:
    d = tmp_path_factory.mktemp("pki")
    ca = Ca.make(d)
    named = ca.issue(d, "named", "svc.example.test", sans="DNS:svc.example.test")
    return {"ca": ca.cert, "named": named, "self": self_signed(d, "selfsigned")}


def test_https_with_a_ca_file_and_server_name(pki: dict[str, Path | Pair], tmp_path: Path) -> None:
    port = free_port()
    named = pki["named"]
    assert isinstance(named, Pair)
    with http_backend(port, tls=named) as backend:
        check = {
            "type": "https",
            "path": "/health",
            "ca_file": str(pki["ca"]),
            "tls_server_name": "svc.example.test",
        }
        [out] = probe(check, "127.0.0.1", port)
        assert out.status == PASSING and out.latency_ms is not None, out
        assert backend.seen[-1].path == "/health"
        # The name verified is tls_server_name's: the address is not in the certificate.
        [out] = probe({**check, "tls_server_name": None}, "127.0.0.1", port)
        assert out.status == CRITICAL and "certificate verification failed" in out.output, out
        [out] = probe({**check, "tls_server_name": "other.example.test"}, "127.0.0.1", port)
        assert out.status == CRITICAL and "certificate verification failed" in out.output
        # The system's trust, without the test CA: not trusted.
        [out] = probe({**check, "ca_file": None}, "127.0.0.1", port)
        assert out.status == CRITICAL and "certificate verification failed" in out.output
        # A CA file that cannot be read, or is not one: critical, said plainly.
        [out] = probe({**check, "ca_file": str(tmp_path / "nope.pem")}, "127.0.0.1", port)
        assert out.status == CRITICAL and "cannot be read (ENOENT)" in out.output, out
        (tmp_path / "junk.pem").write_text("not a certificate")
        [out] = probe({**check, "ca_file": str(tmp_path / "junk.pem")}, "127.0.0.1", port)
        assert out.status == CRITICAL and "holds no PEM certificate" in out.output, out


def test_https_self_signed_with_skip_verify(pki: dict[str, Path | Pair]) -> None:
    port = free_port()
    pair = pki["self"]
    assert isinstance(pair, Pair)
    with http_backend(port, tls=pair):
        [out] = probe({"type": "https", "path": "/health"}, "127.0.0.1", port)
        assert out.status == CRITICAL and "certificate verification failed" in out.output, out
        [out] = probe(
            {"type": "https", "path": "/health", "tls_skip_verify": True}, "127.0.0.1", port
        )
        assert out.status == PASSING, out
        # Plain HTTP to a TLS port is no answer.
        [out] = probe({"type": "http", "path": "/health"}, "127.0.0.1", port)
        assert out.status == CRITICAL


# -- grpc ------------------------------------------------------------------------------------


def test_grpc_health_service() -> None:
    with grpc_backend() as backend:
        backend.set("orders", True)
        backend.set("payments", False)
        port = backend.port
        [out] = probe({"type": "grpc"}, "127.0.0.1", port)
        assert out.status == PASSING and "SERVING" in out.output and out.latency_ms is not None
        [out] = probe({"type": "grpc", "grpc_service": "orders"}, "127.0.0.1", port)
        assert out.status == PASSING, out
        [out] = probe({"type": "grpc", "grpc_service": "payments"}, "127.0.0.1", port)
        assert out.status == CRITICAL and "NOT_SERVING" in out.output, out
        [out] = probe({"type": "grpc", "grpc_service": "unknown"}, "127.0.0.1", port)
        assert out.status == CRITICAL and "unknown service" in out.output, out
        outs = probe({"type": "grpc"}, "127.0.0.1", port, runs=3)  # one channel, reused
        assert [o.status for o in outs] == [PASSING] * 3
    [out] = probe({"type": "grpc"}, "127.0.0.1", port)
    assert out.status == CRITICAL and "UNAVAILABLE" in out.output, out


def test_grpc_stopped_between_runs_of_one_channel() -> None:
    import asyncio

    from dnsdisc.health.probes import Prober
    from dnsdisc.registry.checks import CheckSpec

    async def go() -> list[str]:
        prober = Prober()
        prober.start()
        spec = CheckSpec.from_json({"type": "grpc", "interval": 5, "timeout": 2})
        try:
            with grpc_backend() as backend:
                first = await prober.probe(spec, "127.0.0.1", backend.port)
                port = backend.port
                backend.set("", False)
                second = await prober.probe(spec, "127.0.0.1", port)
            started = time.monotonic()
            third = await prober.probe(spec, "127.0.0.1", port)
            assert time.monotonic() - started < 1.5  # refused at once, not at the timeout
            return [first.status, second.status, third.status]
        finally:
            await prober.close()

    assert asyncio.run(go()) == [PASSING, CRITICAL, CRITICAL]


def test_grpc_over_tls(pki: dict[str, Path | Pair]) -> None:
    named, alone = pki["named"], pki["self"]
    assert isinstance(named, Pair) and isinstance(alone, Pair)
    with grpc_backend(tls=named) as backend:
        port = backend.port
        check = {"type": "grpc", "tls": True, "ca_file": str(pki["ca"])}
        [out] = probe({**check, "tls_server_name": "svc.example.test"}, "127.0.0.1", port)
        assert out.status == PASSING, out
        [out] = probe({**check, "tls_server_name": "other.example.test"}, "127.0.0.1", port)
        assert out.status == CRITICAL, out
        [out] = probe({"type": "grpc"}, "127.0.0.1", port)  # plaintext to a TLS port
        assert out.status == CRITICAL, out
    with grpc_backend(tls=alone) as backend:
        port = backend.port
        [out] = probe({"type": "grpc", "tls": True}, "127.0.0.1", port)
        assert out.status == CRITICAL, out
        skip = {"type": "grpc", "tls": True, "tls_skip_verify": True}
        outs = probe(skip, "127.0.0.1", port, runs=2)
        assert [o.status for o in outs] == [PASSING, PASSING], outs


# -- udp -------------------------------------------------------------------------------------


def test_udp_reply_expected_text_and_a_closed_port() -> None:
    port = free_port()
    with udp_echo(port) as got:
        [out] = probe({"type": "udp", "payload": "ping"}, "127.0.0.1", port)
        assert out.status == PASSING and out.latency_ms is not None and got == [b"ping"], out
        [out] = probe({"type": "udp", "payload": "ping", "expect": "pong:ping"}, "127.0.0.1", port)
        assert out.status == PASSING and "with the expected text" in out.output
        [out] = probe({"type": "udp", "payload_hex": "00ff", "expect": "nope"}, "127.0.0.1", port)
        assert out.status == CRITICAL and "without the expected text" in out.output
        assert got[-1] == b"\x00\xff"
    started = time.monotonic()
    [out] = probe(
        {"type": "udp", "payload": "ping", "timeout": 3, "interval": 5}, "127.0.0.1", port
    )
    assert out.status == CRITICAL and "port unreachable" in out.output, out
    assert time.monotonic() - started < 1.0  # the ICMP error, not the timeout
    # Something that reads and never answers: the timeout.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        [out] = probe({"type": "udp", "timeout": 0.3}, "127.0.0.1", silent.getsockname()[1])
        assert out.status == CRITICAL and "timed out" in out.output
    finally:
        silent.close()


# -- dns -------------------------------------------------------------------------------------


def test_dns_check_against_dnsdisc(server: DnsdiscProcess) -> None:
    server.register("web", "web-1", address="192.0.2.1", port=80)
    port = server.dns_port
    [out] = probe({"type": "dns", "name": "web.svc.internal", "qtype": "A"}, "127.0.0.1", port)
    assert out.status == PASSING and "NOERROR" in out.output and out.latency_ms is not None, out
    [out] = probe({"type": "dns", "name": "nope.svc.internal"}, "127.0.0.1", port)
    assert out.status == CRITICAL and "NXDOMAIN (expected NOERROR)" in out.output, out
    check = {"type": "dns", "name": "nope.svc.internal", "expect": ["NOERROR", "NXDOMAIN"]}
    [out] = probe(check, "127.0.0.1", port)
    assert out.status == PASSING, out
    [out] = probe({"type": "dns", "name": "web.svc.internal", "qtype": "SRV"}, "127.0.0.1", port)
    assert out.status == PASSING, out


# -- exec ------------------------------------------------------------------------------------


def test_exec_exit_statuses_and_bounded_output(tmp_path: Path) -> None:
    ok = write_script(tmp_path / "ok.sh", "echo all fine\nexit 0\n")
    warn = write_script(tmp_path / "warn.sh", "echo degraded >&2\nexit 1\n")
    bad = write_script(tmp_path / "bad.sh", "printf 'broken\\033[31m\\n'\nexit 2\n")
    loud = write_script(tmp_path / "loud.sh", "head -c 100000 /dev/zero | tr '\\0' a\necho END\n")
    [out] = probe({"type": "exec", "command": [ok]}, "", 0)
    assert (out.status, out.output) == (PASSING, "exit 0: all fine")
    [out] = probe({"type": "exec", "command": [warn]}, "", 0)
    assert (out.status, out.output) == (WARNING, "exit 1: degraded")  # stderr too
    [out] = probe({"type": "exec", "command": [bad]}, "", 0)
    assert (out.status, out.output) == (CRITICAL, "exit 2: broken\\x1b[31m")
    [out] = probe({"type": "exec", "command": [loud]}, "", 0)
    assert out.status == PASSING and out.output.endswith("aaaEND")
    assert len(out.output) <= 4096 + 20
    [out] = probe({"type": "exec", "command": [str(tmp_path / "none")]}, "", 0)
    assert out.status == CRITICAL and "command not found" in out.output
    [out] = probe({"type": "exec", "command": ["sh", "-c", "echo stdin:$(cat)"]}, "", 0)
    assert out.output == "exit 0: stdin:"  # stdin is /dev/null


def test_exec_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    hang = write_script(
        tmp_path / "hang.sh", f"echo started\nsleep 300 &\necho $! > {pidfile}\nwait\n"
    )
    started = time.monotonic()
    [out] = probe({"type": "exec", "command": [hang], "timeout": 0.5, "interval": 5}, "", 0)
    assert time.monotonic() - started < 2.5
    assert out.status == CRITICAL and "timed out after 0.5 s" in out.output, out
    assert "started" in out.output
    grandchild = int(pidfile.read_text())
    wait_until(lambda: not _alive(grandchild), 5)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- through a running dnsdisc ---------------------------------------------------------------


def test_several_checks_registered_over_the_api(
    server: DnsdiscProcess, pki: dict[str, Path | Pair]
) -> None:
    pair = pki["self"]
    assert isinstance(pair, Pair)
    port, admin = free_port(), free_port()
    with http_backend(port, tls=pair), grpc_backend() as grpc:
        checks = [
            {"type": "https", "path": "/health", "tls_skip_verify": True, "interval": 0.2},
            {"type": "tcp", "port": admin, "interval": 0.2},  # nothing listens there
            {"type": "grpc", "port": grpc.port, "interval": 0.2},  # on the server's own loop
        ]
        server.register("api", "api-1", address="127.0.0.1", port=port, checks=checks)

        def checks_run() -> list[dict[str, object]]:
            body = server.http("GET", "/v1/services/api/instances/api-1").body
            return body["health"]["checks"] if body["health"]["status"] == CRITICAL else []

        def settled() -> bool:
            states = {c["id"]: c["status"] for c in checks_run()}
            return states == {"https": PASSING, "tcp": CRITICAL, "grpc": PASSING}

        wait_until(settled, 10)
        by_id = {c["id"]: c for c in checks_run()}
        assert by_id["https"]["status"] == PASSING, by_id
        assert "status 200" in by_id["https"]["output"]
        assert by_id["grpc"]["status"] == PASSING, by_id
        assert by_id["tcp"]["status"] == CRITICAL, by_id
        assert f"127.0.0.1:{admin}" in by_id["tcp"]["output"]
        assert server.addresses("api.svc.internal") == []
        # The admin port comes up: both pass, the instance is handed out.
        with socket.socket() as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", admin))
            listener.listen(16)
            wait_until(lambda: server.addresses("api.svc.internal") == ["127.0.0.1"], 5)

    # exec over the API: refused, naming the field.
    result = server.http(
        "PUT",
        "/v1/services/api/instances/api-2",
        {"address": "127.0.0.1", "port": port, "check": {"type": "exec", "command": ["true"]}},
    )
    assert result.status == 400 and result.body["field"] == "check", result


def test_exec_check_from_a_zone_file(tmp_path: Path) -> None:
    flag = tmp_path / "healthy"
    script = write_script(tmp_path / "check.sh", f"test -e {flag} || exit 2\necho up\n")
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "batch.yaml").write_text(
        "services:\n"
        "  batch:\n"
        "    instances:\n"
        "      b-1:\n"
        "        address: 192.0.2.7\n"
        "        port: 80\n"
        f"        check: {{type: exec, command: [{script}], interval: 0.2, timeout: 1}}\n"
    )
    with running(tmp_path, extra_args=["--zones", str(zones)]) as srv:
        wait_until(lambda: _status(srv) == CRITICAL, 5)
        assert srv.addresses("batch.svc.internal") == []
        flag.touch()
        wait_until(lambda: srv.addresses("batch.svc.internal") == ["192.0.2.7"], 5)
        body = srv.http("GET", "/v1/services/batch/instances/b-1").body
        assert body["health"]["checks"][0]["output"] == "exit 0: up", body
        os.unlink(flag)
        wait_until(lambda: srv.addresses("batch.svc.internal") == [], 5)


def _status(srv: DnsdiscProcess) -> str:
    body = srv.http("GET", "/v1/services/batch/instances/b-1").body
    return str(body["health"]["status"]) if body else ""
