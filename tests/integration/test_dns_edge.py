"""The DNS edge against abusive clients (#16 items 6, 9, 10, 11, 15), with real sockets on
loopback: TCP clients that stop reading, recursion for strangers, amplification by ANY and by
relayed replies, client-chosen metric labels, and IPv4 clients of a ``[::]`` listener. Every
loop is bounded in count and time; every socket and process is closed by the test."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from tests.support.helpers import IN_CI, DnsdiscProcess, free_port

WEB = "web.svc.internal."


@contextlib.contextmanager
def configured(tmp_path: Path, text: str, **kw: object) -> Iterator[DnsdiscProcess]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    conf = tmp_path / "dnsdisc.yaml"
    conf.write_text(text)
    node = DnsdiscProcess(tmp_path / "node", extra_args=["--config", str(conf)], **kw)  # type: ignore[arg-type]
    node.start()
    try:
        yield node
    finally:
        node.stop()


def frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def udp_ask(
    wire: bytes, port: int, host: str = "127.0.0.1", source: str = "127.0.0.1", wait: float = 3.0
) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(wait)
        s.sendto(wire, (host, port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def count_replies(wire: bytes, port: int, n: int, source: str, host: str = "127.0.0.1") -> int:
    """Send ``n`` copies of ``wire`` from one socket on ``source``; replies got within 1.5 s."""
    got = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((source, 0))
        for i in range(n):
            if i % 50 == 49:
                time.sleep(0.002)  # no overflow of the server's receive buffer
            s.sendto(wire, (host, port))
        s.settimeout(0.3)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                s.recv(65535)
            except TimeoutError:
                break
            got += 1
    return got


def metric_lines(node: DnsdiscProcess, prefix: str) -> list[str]:
    text = node.http("GET", "/metrics").raw.decode()
    return [line for line in text.splitlines() if line.startswith(prefix)]


# -- item 6: TCP clients that stop reading ----------------------------------------------------


def stuck_client(port: int) -> socket.socket:
    """A TCP client that pipelines queries and never reads: the server's replies pile up."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    query = frame(dns.message.make_query(WEB, "A", use_edns=0, payload=4096).to_wire())
    deadline = time.monotonic() + 3
    sent = 0
    while time.monotonic() < deadline and sent < 4 << 20:
        try:
            sent += s.send(query * 64)
        except BlockingIOError:
            time.sleep(0.05)  # server stopped reading: its write buffer is full
            try:
                sent += s.send(query * 64)
            except BlockingIOError:
                break
    return s


def test_tcp_clients_that_never_read_do_not_hold_the_connection_cap(tmp_path: Path) -> None:
    text = "dns: {workers: 0, tcp_max_connections: 5, tcp_idle_timeout: 3}\n"
    with configured(tmp_path, text) as node:
        for i in range(20):
            node.register("web", f"web-{i}", address=f"10.0.0.{i + 1}", port=80)
        stuck = [stuck_client(node.dns_port) for _ in range(5)]
        try:
            started = time.monotonic()
            answered = None
            while answered is None and time.monotonic() - started < 3 + 2:
                with contextlib.suppress(OSError, EOFError, dns.exception.Timeout):
                    answered = node.query(WEB, "A", tcp=True, timeout=1)
                if answered is None:
                    time.sleep(0.2)
            # Within the idle timeout (plus slack for a loaded machine), not never.
            assert answered is not None and answered.rcode() == dns.rcode.NOERROR
        finally:
            for s in stuck:
                s.close()


def test_tcp_connections_per_client_are_capped(tmp_path: Path) -> None:
    text = "dns: {workers: 0, tcp_max_connections_per_client: 2, tcp_idle_timeout: 10}\n"
    with configured(tmp_path, text) as node:
        node.register("web", "web-1", address="10.0.0.1", port=80)
        held = []
        try:
            for _ in range(2):
                s = socket.create_connection(("127.0.0.1", node.dns_port), timeout=3)
                held.append(s)
            wire = dns.message.make_query(WEB, "A").to_wire()
            with socket.create_connection(("127.0.0.1", node.dns_port), timeout=3) as third:
                with contextlib.suppress(OSError):
                    third.sendall(frame(wire))
                try:
                    got = third.recv(2)
                except ConnectionResetError:
                    got = b""
                assert got == b"", "a third connection from one client was answered"
            # Another client (another loopback address) is not affected.
            with socket.create_connection(
                ("127.0.0.1", node.dns_port), timeout=3, source_address=("127.0.0.2", 0)
            ) as other:
                other.sendall(frame(wire))
                assert len(other.recv(2)) == 2
        finally:
            for s in held:
                s.close()


# -- item 9: recursion ------------------------------------------------------------------------


@contextlib.contextmanager
def fake_upstream(records: int) -> Iterator[int]:
    """A UDP upstream answering every query with ``records`` TXT records of 200 bytes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            reply.answer.append(
                dns.rrset.from_text_list(
                    query.question[0].name,
                    60,
                    "IN",
                    "TXT",
                    [f'"{i:03d}{"x" * 196}"' for i in range(records)],
                )
            )
            sock.sendto(reply.to_wire(max_size=65535), addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        done.set()
        thread.join(2)
        sock.close()


def test_recursion_needs_rd_and_an_allowed_source(tmp_path: Path) -> None:
    with fake_upstream(1) as up:
        text = f"recursors: ['127.0.0.1:{up}']\nrecursion_allow: ['127.0.0.1/32']\ndns: {{workers: 0}}\n"
        with configured(tmp_path, text) as node:
            asked = dns.message.make_query("relayed.example.", "TXT")
            got = dns.message.from_wire(udp_ask(asked.to_wire(), node.dns_port) or b"")
            assert got.rcode() == dns.rcode.NOERROR and got.answer  # allowed, RD=1: relayed
            asked.flags &= ~dns.flags.RD
            for tcp in (False, True):
                fn = dns.query.tcp if tcp else dns.query.udp
                got = fn(asked, "127.0.0.1", port=node.dns_port, timeout=3)
                assert got.rcode() == dns.rcode.REFUSED and not got.answer, tcp
            asked.flags |= dns.flags.RD
            # A source outside recursion_allow: REFUSED over UDP and TCP.
            wire = udp_ask(asked.to_wire(), node.dns_port, source="127.0.0.2")
            assert wire is not None and dns.message.from_wire(wire).rcode() == dns.rcode.REFUSED
            got = dns.query.tcp(
                asked, "127.0.0.1", port=node.dns_port, timeout=3, source="127.0.0.2"
            )
            assert got.rcode() == dns.rcode.REFUSED and not got.answer


def test_relayed_udp_replies_are_cut_to_the_clients_size(tmp_path: Path) -> None:
    with fake_upstream(20) as up:  # about 4.4 KB
        text = f"recursors: ['127.0.0.1:{up}']\ndns: {{workers: 0}}\n"
        with configured(tmp_path, text) as node:
            for edns, limit in ((-1, 512), (0, 1232)):
                asked = dns.message.make_query("big.example.", "TXT", use_edns=edns, payload=4096)
                wire = udp_ask(asked.to_wire(), node.dns_port)
                assert wire is not None and len(wire) <= limit, (edns, wire and len(wire))
                got = dns.message.from_wire(wire)
                assert got.flags & dns.flags.TC and got.id == asked.id and not got.answer


def test_rate_limit_applies_to_relayed_replies(tmp_path: Path) -> None:
    with fake_upstream(1) as up:
        text = (
            f"recursors: ['127.0.0.1:{up}']\ndns: {{workers: 0}}\n"
            "rate_limit: {responses_per_second: 3, slip: 0}\n"
        )
        with configured(tmp_path, text) as node:
            wire = dns.message.make_query("relayed.example.", "TXT").to_wire()
            got = count_replies(wire, node.dns_port, 30, "127.0.0.1")
            assert 1 <= got <= 8, got


# -- item 10: amplification by ANY, RRL by default ----------------------------------------------


def test_any_gets_a_minimal_answer_and_any_full_the_old_one(tmp_path: Path) -> None:
    for mode, rrsets in (("minimal", 1), ("full", 3)):
        with configured(tmp_path / mode, f"dns: {{workers: 0, any: {mode}}}\n") as node:
            node.register("web", "web-1", address="10.0.0.1", port=80, meta={"v": "1"})
            for tcp in (False, True):
                msg = node.query("web-1.web.svc.internal.", "ANY", tcp=tcp)
                assert msg.rcode() == dns.rcode.NOERROR, mode
                assert len(msg.answer) == rrsets, (mode, tcp, msg.answer)


def test_rate_limit_is_on_by_default_beyond_loopback_only(tmp_path: Path) -> None:
    wire = dns.message.make_query(WEB, "A").to_wire()
    with configured(tmp_path / "lo", "dns: {workers: 0}\n") as node:
        node.register("web", "web-1", address="10.0.0.1", port=80)
        assert not metric_lines(node, "dnsdisc_dns_rate_limited")
        assert count_replies(wire, node.dns_port, 300, "127.0.0.1") >= 280
    # A wildcard listen (reached over loopback here): NSD's default of 200/s per /24 applies.
    with configured(tmp_path / "any", "dns: {workers: 0}\n", dns_host="0.0.0.0") as node:
        node.register("web", "web-1", address="10.0.0.1", port=80)
        assert metric_lines(node, "dnsdisc_dns_rate_limited")
        got = count_replies(wire, node.dns_port, 1000, "127.0.0.1")
        dropped = metric_lines(node, 'dnsdisc_dns_rate_limited_total{action="drop"}')
        assert got < 850 and float(dropped[0].split()[-1]) >= 150, (got, dropped)


# -- item 11: metric labels chosen by clients ---------------------------------------------------


def test_distinct_qtypes_give_a_bounded_number_of_series(server: DnsdiscProcess) -> None:
    server.register("web", "web-1", address="10.0.0.1", port=80)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for qtype in range(1000, 2000):
            q = dns.message.make_query(WEB, "A")
            q.question[0].rdtype = dns.rdatatype.RdataType.make(qtype)
            s.sendto(q.to_wire(), ("127.0.0.1", server.dns_port))
            if qtype % 50 == 0:
                time.sleep(0.01)  # keep the socket's buffer from overflowing
        time.sleep(0.5)
    lines = metric_lines(server, "dnsdisc_dns_queries_total{")
    assert any('type="OTHER"' in line for line in lines), lines
    assert len(lines) <= 40, len(lines)


# -- item 15: [::] listeners and v4-mapped clients ---------------------------------------------


def have_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def require_ipv6() -> None:
    if not have_ipv6_loopback():
        if IN_CI:
            pytest.fail("no IPv6 loopback on a CI machine")
        pytest.skip("no IPv6 loopback")


def test_ipv4_clients_reach_tcp_on_a_wildcard_ipv6_listen(tmp_path: Path) -> None:
    require_ipv6()
    port = free_port("::")
    with configured(tmp_path, "dns: {workers: 0}\n", dns_host="::", dns_port=port) as node:
        node.register("web", "web-1", address="10.0.0.1", port=80)
        q = dns.message.make_query(WEB, "A")
        for host in ("127.0.0.1", "::1"):
            assert dns.query.udp(q, host, port=port, timeout=3).answer, host
            assert dns.query.tcp(q, host, port=port, timeout=3).answer, host


def test_v4_mapped_clients_of_different_24s_have_their_own_rrl_buckets(tmp_path: Path) -> None:
    require_ipv6()
    port = free_port("::")
    text = "dns: {workers: 0}\nrate_limit: {responses_per_second: 3, slip: 0}\n"
    with configured(tmp_path, text, dns_host="::", dns_port=port) as node:
        node.register("web", "web-1", address="10.0.0.1", port=80)
        wire = dns.message.make_query(WEB, "A").to_wire()
        first = count_replies(wire, port, 20, "127.0.1.1")
        second = count_replies(wire, port, 20, "127.0.2.1")
        assert 1 <= first <= 8 and 1 <= second <= 8, (first, second)
