"""The running server, queried with real clients: dig, kdig, dnspython's resolver, raw sockets."""

from __future__ import annotations

import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest

from tests.support.helpers import DnsdiscProcess, require_tool, running


def dig(server: DnsdiscProcess, *args: str) -> str:
    path = require_tool("dig")
    result = subprocess.run(
        [path, f"@{server.dns_host}", "-p", str(server.dns_port), "+time=2", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(params=["batched", "unbatched"])
def udp_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DnsdiscProcess]:
    """A server reading UDP in batches (recvmmsg, the default on Linux), or through the event
    loop's datagram transport (``dns.udp_batch: false``)."""
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(f"dns:\n  udp_batch: {'true' if request.param == 'batched' else 'false'}\n")
    with running(tmp_path, extra_args=["--config", str(config)]) as srv:
        yield srv


def test_dig_a_srv_nxdomain_and_tcp(udp_server: DnsdiscProcess) -> None:
    server = udp_server
    server.register("web", "web-1", address="10.0.0.1", port=8080)
    server.register("web", "web-2", address="10.0.0.2", port=8080, weight=50)
    assert sorted(dig(server, "+short", "web.svc.internal").split()) == ["10.0.0.1", "10.0.0.2"]
    srv = dig(server, "+short", "_web._tcp.svc.internal", "SRV").splitlines()
    assert sorted(srv) == [
        "0 100 8080 web-1.web.svc.internal.",
        "0 50 8080 web-2.web.svc.internal.",
    ]
    full = dig(server, "+norec", "missing.svc.internal")
    assert "status: NXDOMAIN" in full and "flags: qr aa;" in full
    assert "IN\tSOA\tns.svc.internal. hostmaster.svc.internal." in full
    assert sorted(dig(server, "+tcp", "+short", "web.svc.internal").split()) == [
        "10.0.0.1",
        "10.0.0.2",
    ]
    assert "status: REFUSED" in dig(server, "example.com")
    assert dig(server, "+short", "-x", "10.0.0.2").strip() == "web-2.web.svc.internal."


def test_kdig_reads_the_same_answers(server: DnsdiscProcess) -> None:
    kdig = require_tool("kdig")
    server.register("web", "web-1", address="10.0.0.1", port=8080)
    out = subprocess.run(
        [kdig, "@127.0.0.1", "-p", str(server.dns_port), "+short", "web.svc.internal", "A"],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout
    assert out.split() == ["10.0.0.1"]


def test_dnspython_resolver(server: DnsdiscProcess) -> None:
    server.register("api", "api-1", address="10.0.1.1", port=443, tags=["canary"])
    server.register("api", "api-2", address="2001:db8::2", port=443)
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = server.dns_port
    assert [r.to_text() for r in res.resolve("api.svc.internal", "A")] == ["10.0.1.1"]
    assert [r.to_text() for r in res.resolve("api.svc.internal", "AAAA")] == ["2001:db8::2"]
    assert [r.to_text() for r in res.resolve("canary.api.svc.internal", "A")] == ["10.0.1.1"]
    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve("nothing.svc.internal", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        res.resolve("api.svc.internal", "MX")


def test_udp_truncates_and_the_resolver_retries_over_tcp(server: DnsdiscProcess) -> None:
    for i in range(40):
        server.register("big", f"node-{i}", address=f"10.2.0.{i + 1}", port=7000 + i)
    udp = server.query("big.svc.internal", "SRV", use_edns=False)
    assert udp.flags & dns.flags.TC
    tcp = server.query("big.svc.internal", "SRV", tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert sum(len(r) for r in tcp.answer) == 40
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = server.dns_port
    res.use_edns(-1)
    assert len(res.resolve("big.svc.internal", "SRV")) == 40  # dnspython falls back to TCP on TC
    out = dig(server, "+noedns", "+ignore", "big.svc.internal", "SRV")
    assert "flags: qr aa tc" in out


def test_tcp_several_queries_on_one_connection(server: DnsdiscProcess) -> None:
    server.register("web", "web-1", address="10.0.0.1", port=80)
    names = ["web.svc.internal.", "missing.svc.internal.", "web-1.web.svc.internal."]
    queries = [dns.message.make_query(n, "A") for n in names]
    with socket.create_connection(("127.0.0.1", server.dns_port), timeout=5) as sock:
        # All three in one write: pipelined, as RFC 7766 allows.
        sock.sendall(
            b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries))
        )
        replies = []
        buf = b""
        while len(replies) < 3:
            chunk = sock.recv(4096)
            assert chunk, "server closed the connection early"
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                n = struct.unpack("!H", buf[:2])[0]
                replies.append(dns.message.from_wire(buf[2 : 2 + n]))
                buf = buf[2 + n :]
    by_id = {r.id: r for r in replies}
    assert [by_id[q.id].rcode() for q in queries] == [
        dns.rcode.NOERROR,
        dns.rcode.NXDOMAIN,
        dns.rcode.NOERROR,
    ]


def test_garbage_never_stops_the_server(udp_server: DnsdiscProcess) -> None:
    server = udp_server
    server.register("web", "web-1", address="10.0.0.1", port=80)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for packet in (
            b"",
            b"\x00",
            b"\xff" * 12,
            b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\x3fabc",
            bytes(range(256)) * 2,
        ):
            s.sendto(packet, ("127.0.0.1", server.dns_port))
        s.sendto(
            b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab",
            ("127.0.0.1", server.dns_port),
        )
        reply = b""
        for _ in range(10):  # earlier garbage may be answered too (FORMERR); find ours by id
            reply = s.recv(4096)
            if reply[:2] == b"\xab\xcd":
                break
        assert reply[:2] == b"\xab\xcd" and reply[3] & 0xF == dns.rcode.FORMERR
    with socket.create_connection(("127.0.0.1", server.dns_port), timeout=5) as t:
        t.sendall(b"\x00\x05abc")  # a frame that never completes
        assert server.addresses("web.svc.internal") == ["10.0.0.1"]
    assert server.proc is not None and server.proc.poll() is None


def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    node = DnsdiscProcess(tmp_path / "node").start()
    try:
        for i in range(20):
            node.register("web", f"web-{i}", address=f"10.3.0.{i + 1}", port=80)
        node.http("PUT", "/v1/services/web", {"policy": "random", "ttl": 7})
        assert node.http("DELETE", "/v1/services/web/instances/web-0").status == 204
        node.kill()
        node.start()
        # Over TCP: a UDP answer shows at most dns.udp_answer_limit (16) of the 19.
        answer = node.query("web.svc.internal", "A", tcp=True)
        assert sorted(rr.to_text() for rr in answer.answer[0]) == sorted(
            f"10.3.0.{i + 1}" for i in range(1, 20)
        )
        assert answer.answer[0].ttl == 7
        assert node.http("GET", "/v1/services/web").body["policy"] == "random"
    finally:
        node.stop()


def test_memory_storage_forgets_on_restart(tmp_path: Path) -> None:
    node = DnsdiscProcess(tmp_path / "node", extra_args=["--storage", "memory"]).start()
    try:
        node.register("web", "web-1", address="10.0.0.1", port=80)
        node.stop()
        node.start()
        assert node.query("web.svc.internal", "A").rcode() == dns.rcode.NXDOMAIN
    finally:
        node.stop()


def test_ipv6_listener(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 is not configured")
    with running(tmp_path, dns_host="::1") as node:
        node.register("web", "web-1", address="10.0.0.1", port=80)
        assert node.addresses("web.svc.internal") == ["10.0.0.1"]
        assert node.addresses("web.svc.internal", tcp=True) == ["10.0.0.1"]
        out = subprocess.run(
            [require_tool("dig"), "@::1", "-p", str(node.dns_port), "+short", "web.svc.internal"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
        assert out.split() == ["10.0.0.1"]


def test_custom_domain_with_trailing_dot(tmp_path: Path) -> None:
    with running(tmp_path, extra_args=["--domain", "Disco.Example."]) as node:
        node.register("web", "web-1", address="10.0.0.1", port=80)
        assert node.addresses("web.disco.example") == ["10.0.0.1"]
        assert node.query("web.svc.internal", "A").rcode() == dns.rcode.REFUSED
