"""Operations: metrics families, the query log, graceful shutdown, and the README's commands."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import dns.message
from prometheus_client.parser import text_string_to_metric_families

from tests.support.helpers import DnsdiscProcess, console_steps, readme_block, require_tool


def samples(server: DnsdiscProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    result = server.http("GET", "/metrics")
    assert result.status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(result.raw.decode())
        for s in family.samples
    }


def test_dns_and_registry_metrics(server: DnsdiscProcess) -> None:
    for i in range(40):
        server.register("big", f"node-{i}", address=f"10.4.0.{i + 1}", port=80)
    for _ in range(3):
        # 40 A records, no TC: a UDP answer carries dns.udp_answer_limit (16) of them.
        server.query("big.svc.internal", "A", use_edns=False)
    for _ in range(3):
        server.query("_big._tcp.svc.internal", "SRV", use_edns=False)  # 40 SRV records: TC
    for _ in range(2):
        server.query("nothing.svc.internal", "A")
    server.query("node-1.big.svc.internal", "SRV")
    got = samples(server)
    assert got[("dnsdisc_dns_queries_total", (("rcode", "NOERROR"), ("type", "A")))] == 3
    assert got[("dnsdisc_dns_queries_total", (("rcode", "NXDOMAIN"), ("type", "A")))] == 2
    assert got[("dnsdisc_dns_queries_total", (("rcode", "NOERROR"), ("type", "SRV")))] == 4
    assert got[("dnsdisc_dns_truncated_total", ())] == 3
    assert got[("dnsdisc_dns_answer_seconds_count", ())] == 9
    assert got[("dnsdisc_dns_answer_seconds_bucket", (("le", "+Inf"),))] == 9
    assert 0 < got[("dnsdisc_dns_answer_seconds_sum", ())] < 1
    assert got[("dnsdisc_registry_writes_total", (("kind", "put_instance"),))] == 40
    assert got[("dnsdisc_store_up", ())] == 1


def test_query_log(tmp_path: Path) -> None:
    node = DnsdiscProcess(tmp_path / "node", extra_args=["--query-log"]).start()
    try:
        node.register("web", "web-1", address="10.0.0.1", port=80)
        node.query("web.svc.internal", "A")
        node.query("web.svc.internal", "A", tcp=True)
        node.query("nope.svc.internal", "A")
        deadline = time.monotonic() + 5
        while "nope" not in node.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = node.log()
        assert "udp 127.0.0.1 web.svc.internal. type 1: rcode 0 answers 1" in log
        assert "tcp 127.0.0.1 web.svc.internal. type 1: rcode 0 answers 1" in log
        assert "nope.svc.internal. type 1: rcode 3 answers 0" in log
    finally:
        node.stop()


def test_sigterm_is_graceful(tmp_path: Path) -> None:
    node = DnsdiscProcess(tmp_path / "node").start()
    node.register("web", "web-1", address="10.0.0.1", port=80)
    with socket.create_connection(("127.0.0.1", node.dns_port), timeout=5) as conn:
        query = dns.message.make_query("web.svc.internal", "A").to_wire()
        conn.sendall(struct.pack("!H", len(query)) + query)
        assert conn.recv(2)  # the connection is being served
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(10) == 0
        # The open connection was closed by the server, not left hanging.
        conn.settimeout(5)
        rest = b""
        while chunk := conn.recv(4096):
            rest += chunk
    assert "shutting down" in node.log() and "Traceback" not in node.log()
    assert " ERROR " not in node.log()  # a clean stop reports nothing as broken
    node.start()  # and everything acknowledged is there after the restart
    try:
        assert node.addresses("web.svc.internal") == ["10.0.0.1"]
    finally:
        node.stop()


def test_readme_operations_block(server: DnsdiscProcess) -> None:
    require_tool("curl")
    server.register("web", "web-1", address="10.0.0.1", port=80)
    for command, expected in console_steps(readme_block("Operations")):
        cmd = command.replace("localhost:8054", f"127.0.0.1:{server.http_port}")
        result = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.splitlines() == expected, command
