"""DNS over TLS (RFC 7858, #17): kdig and dnspython against worker processes, the same answers
and balancing as TCP, pipelining, the idle timeout, the per-client cap, and garbage."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.certs import Ca, Pair
from tests.support.helpers import DnsdiscProcess, free_port, require_tool, running, wait_until

NAME = "web.svc.internal."
ADDRESSES = {"10.0.0.1", "10.0.0.2", "10.0.0.3"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ca, Pair]:
    d = tmp_path_factory.mktemp("pki")
    ca = Ca.make(d)
    return ca, ca.issue(d, "server", "dns.test")


@pytest.fixture
def dot(tmp_path: Path, pki: tuple[Ca, Pair]) -> Iterator[tuple[DnsdiscProcess, int]]:
    _, pair = pki
    port = free_port()
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(
        "dns:\n"
        f"  tls_listen: ['127.0.0.1:{port}']\n"
        f"  tls: {{cert_file: {pair.cert}, key_file: {pair.key}}}\n"
        "  tcp_idle_timeout: 2\n"
        "  tcp_max_connections_per_client: 3\n"
    )
    args = [
        "--config",
        str(config),
        "--workers",
        "1",
        "--storage",
        "memory",
    ]  # caps are per process
    with running(tmp_path, extra_args=args, loopback_checks=False) as server:
        for n, address in enumerate(sorted(ADDRESSES)):
            server.register("web", f"w{n}", address=address, port=80)
        yield server, port


def _context(ca: Ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    ctx.check_hostname = False  # the server is reached by address; its name is checked below
    return ctx


def _connect(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def _read_reply(sock: ssl.SSLSocket) -> dns.message.Message:
    head = _read_exactly(sock, 2)
    return dns.message.from_wire(_read_exactly(sock, struct.unpack("!H", head)[0]))


def _read_exactly(sock: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _addresses(reply: dns.message.Message) -> list[str]:
    return [rr.to_text() for rrset in reply.answer for rr in rrset]


def test_kdig_and_dnspython_get_over_tls_what_tcp_gets(
    dot: tuple[DnsdiscProcess, int], pki: tuple[Ca, Pair]
) -> None:
    server, port = dot
    ca, _ = pki
    assert f"DNS over TLS 127.0.0.1:{port}" in server.log()
    require_tool("kdig")
    out = subprocess.run(
        ["kdig", "@127.0.0.1", "-p", str(port), "+tls", f"+tls-ca={ca.cert}",
         "+tls-hostname=localhost", "+time=5", "+retry=0", NAME, "A"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "status: NOERROR" in out.stdout and "TLS" in out.stdout, out.stdout
    assert {a for a in ADDRESSES if a in out.stdout} == ADDRESSES, out.stdout
    # A CA that did not sign the certificate: kdig refuses the server.
    wrong = subprocess.run(
        ["kdig", "@127.0.0.1", "-p", str(port), "+tls", f"+tls-ca={server.log_path}",
         "+tls-hostname=localhost", "+time=3", "+retry=0", NAME, "A"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "status: NOERROR" not in wrong.stdout
    q = dns.message.make_query(NAME, "SRV")
    over_tls = dns.query.tls(
        q, "127.0.0.1", port=port, ssl_context=_context(ca), server_hostname="localhost", timeout=5
    )
    over_tcp = dns.query.tcp(q, "127.0.0.1", port=server.dns_port, timeout=5)
    assert over_tls.rcode() == dns.rcode.NOERROR
    assert sorted(_addresses(over_tls)) == sorted(_addresses(over_tcp))
    assert len(_addresses(over_tls)) == 3


def test_pipelined_queries_are_balanced_as_over_tcp(
    dot: tuple[DnsdiscProcess, int], pki: tuple[Ca, Pair]
) -> None:
    _, port = dot
    ca, _ = pki
    count = 300
    queries = [dns.message.make_query(NAME, "A") for _ in range(count)]
    wire = b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries))
    with _connect(port, _context(ca)) as sock:
        cert = sock.getpeercert()
        assert cert is not None and ("DNS", "localhost") in cert["subjectAltName"]
        sock.sendall(wire)  # every query in one go: answered in order, on one connection
        replies = [_read_reply(sock) for _ in range(count)]
    assert [r.id for r in replies] == [q.id for q in queries]
    firsts = Counter(_addresses(r)[0] for r in replies)
    assert set(firsts) == ADDRESSES
    # Equal weights: each leads about a third of the answers (a policy that never moved the
    # first record would give 300 to one).
    assert min(firsts.values()) >= 60, firsts


def test_idle_and_over_the_cap_connections_are_closed(
    dot: tuple[DnsdiscProcess, int], pki: tuple[Ca, Pair]
) -> None:
    server, port = dot
    ca, _ = pki
    ctx = _context(ca)
    # A TLS client that never speaks after the handshake, and a TCP client that never starts
    # one: both are closed after the idle timeout (2 s).
    started = time.monotonic()
    with _connect(port, ctx) as idle, socket.create_connection(("127.0.0.1", port)) as mute:
        mute.settimeout(10)
        idle.settimeout(10)
        assert mute.recv(1) == b""
        with contextlib.suppress(ConnectionResetError):
            assert idle.recv(1) == b""
    assert time.monotonic() - started < 8
    # Five connections from one address with a per-client cap of 3: three are answered.
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(_connect(port, ctx)) for _ in range(5)]
        answered = 0
        for sock in socks:
            q = dns.message.make_query(NAME, "A").to_wire()
            try:
                sock.sendall(struct.pack("!H", len(q)) + q)
                _read_reply(sock)
                answered += 1
            except (EOFError, OSError):
                pass
    assert answered == 3, answered
    # Garbage where a ClientHello belongs: dropped; the server answers on.
    for junk in (b"\x16\x03\x01\x02\x00\x01" + os.urandom(512), os.urandom(64)):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(junk)
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                s.recv(64)
    wait_until(lambda: _addresses(_tls_query(port, ctx)) != [], 5)
    assert server.addresses(NAME)


def _tls_query(port: int, ctx: ssl.SSLContext) -> dns.message.Message:
    q = dns.message.make_query(NAME, "A")
    return dns.query.tls(q, "127.0.0.1", port=port, ssl_context=ctx, timeout=5)
