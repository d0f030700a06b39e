"""The batched UDP transport (recvmmsg/sendmmsg through ctypes) on real loopback sockets.

Queries are sent in bursts before the event loop runs, so that they wait in the socket buffer
and one system call reads many of them: each reply must still reach the client that asked, with
its own ID and question, whatever the other datagrams of the batch got (no reply, a slow-path
reply, a large query)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Callable

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dnsdisc.dnsserver import udpbatch
from dnsdisc.dnsserver.answer import Responder
from dnsdisc.dnsserver.ratelimit import RateLimiter
from dnsdisc.dnsserver.transport import UDPProtocol
from tests.support.world import World, texts

# CI runs on 64-bit Linux, where batching must work: there these tests run (and fail) anyway.
pytestmark = pytest.mark.skipif(
    not udpbatch.AVAILABLE and os.environ.get("CI") != "true",
    reason="batched UDP needs 64-bit Linux (recvmmsg/sendmmsg)",
)

QUESTIONS = [
    ("web.svc.internal.", "A"),
    ("_web._tcp.svc.internal.", "SRV"),
    ("nothing-here.svc.internal.", "A"),
    ("web.svc.internal.", "AAAA"),
]


@pytest.fixture(scope="module")
def world() -> World:
    w = World()
    w.add("web", "web-1", address="10.0.0.1", port=8080)
    w.add("web", "web-2", address="10.0.0.2", port=8080, weight=50)
    w.add("web", "web-6", address="2001:db8::6", port=8081)
    return w


async def exchange(
    protocol: UDPProtocol, host: str, family: int, plan: list[list[bytes]]
) -> tuple[list[list[bytes]], udpbatch.BatchedUDPTransport]:
    """Send every client's datagrams at once, then run the loop until the replies stop."""
    transport = await udpbatch.create_endpoint(protocol, host, 0, family, False)
    server = transport.get_extra_info("sockname")
    clients = []
    try:
        for _ in plan:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind((host, 0))
            clients.append(sock)
        # Round robin over the clients, so that every batch mixes them.
        for n in range(max(len(p) for p in plan)):
            for sock, datagrams in zip(clients, plan, strict=True):
                if n < len(datagrams):
                    sock.sendto(datagrams[n], server[:2])
        got: list[list[bytes]] = [[] for _ in plan]
        quiet_since = time.monotonic()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.5:
            await asyncio.sleep(0.01)
            for sock, replies in zip(clients, got, strict=True):
                while True:
                    try:
                        replies.append(sock.recv(65535))
                    except BlockingIOError:
                        break
                    quiet_since = time.monotonic()
        return got, transport
    finally:
        for sock in clients:
            sock.close()
        transport.close()


def burst(clients: int, per_client: int) -> tuple[list[list[bytes]], list[dict[int, str]]]:
    """Per client: queries (with a junk datagram every 7th), and the question asked per ID."""
    plan: list[list[bytes]] = []
    asked: list[dict[int, str]] = []
    for c in range(clients):
        datagrams, ids = [], {}
        for n in range(per_client):
            if n % 7 == 3:
                datagrams.append(b"\x00\x01\x02")  # too short to answer: no reply at all
                continue
            name, rdtype = QUESTIONS[(c + n) % len(QUESTIONS)]
            query = dns.message.make_query(name, rdtype)
            query.id = c * 1000 + n
            ids[query.id] = f"{name} {rdtype}"
            datagrams.append(query.to_wire())
        plan.append(datagrams)
        asked.append(ids)
    return plan, asked


def check_replies(got: list[list[bytes]], asked: list[dict[int, str]]) -> None:
    for replies, ids in zip(got, asked, strict=True):
        seen = {}
        for wire in replies:
            msg = dns.message.from_wire(wire)
            question = msg.question[0]
            seen[msg.id] = f"{question.name} {dns.rdatatype.to_text(question.rdtype)}"
            if seen[msg.id] == "web.svc.internal. A":
                assert texts(msg) == ["10.0.0.1", "10.0.0.2"]
            if question.name.to_text().startswith("nothing-here"):
                assert msg.rcode() == dns.rcode.NXDOMAIN
        assert seen == ids  # every query answered once, to the client that asked it


def test_a_burst_is_read_in_batches_and_every_reply_goes_to_its_own_client(world: World) -> None:
    # 120 datagrams: well within the default receive buffer (about 256 of these), so none is
    # dropped before the loop reads them.
    plan, asked = burst(clients=6, per_client=20)
    got, transport = asyncio.run(
        exchange(UDPProtocol(world.responder), "127.0.0.1", socket.AF_INET, plan)
    )
    check_replies(got, asked)
    assert transport.datagrams == sum(len(p) for p in plan)
    # Batches really happened: far fewer reads than datagrams.
    assert transport.reads * 4 <= transport.datagrams


def test_ipv6_clients_get_their_replies(world: World) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this host")
    plan, asked = burst(clients=3, per_client=20)
    got, transport = asyncio.run(
        exchange(UDPProtocol(world.responder), "::1", socket.AF_INET6, plan)
    )
    check_replies(got, asked)
    assert transport.reads < transport.datagrams


def test_replies_that_need_more_than_sending_take_the_slow_path(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # With the query log on, every reply goes through UDPProtocol.reply_to, sent to the client's
    # address as decoded from the kernel's sockaddr (each client gets its own replies).
    plan, asked = burst(clients=3, per_client=10)
    proto = UDPProtocol(world.responder, log_queries=True)
    with caplog.at_level(logging.INFO, logger="dnsdisc.query"):
        got, _ = asyncio.run(exchange(proto, "127.0.0.1", socket.AF_INET, plan))
    check_replies(got, asked)
    lines = [r.getMessage() for r in caplog.records if r.name == "dnsdisc.query"]
    assert len(lines) == sum(len(p) for p in plan)  # junk included, as "no reply"
    assert all(line.startswith("udp 127.0.0.1 ") for line in lines)
    assert sum("no reply" in line for line in lines) == sum(
        len(p) - len(a) for p, a in zip(plan, asked, strict=True)
    )


def test_a_query_larger_than_any_reply_is_read_whole(world: World) -> None:
    # 8 KB of EDNS padding: the whole datagram reaches the responder, which answers as it would
    # answer those bytes directly.
    query = dns.message.make_query(
        "nothing-here.svc.internal.",
        "A",
        use_edns=0,
        options=[dns.edns.GenericOption(12, bytes(8000))],
    )
    data = query.to_wire(max_size=65535)
    assert len(data) > 8000
    got, _ = asyncio.run(
        exchange(UDPProtocol(world.responder), "127.0.0.1", socket.AF_INET, [[data, data]])
    )
    assert len(got[0]) == 2
    assert got[0][0] == world.raw(data)


def test_sendto_a_closed_port_raises_nothing_and_close_frees_the_port(world: World) -> None:
    async def scenario() -> tuple[bool, bool]:
        proto = UDPProtocol(world.responder)
        transport = await udpbatch.create_endpoint(proto, "127.0.0.1", 0, socket.AF_INET, False)
        port = transport.get_extra_info("sockname")[1]
        transport.sendto(b"x" * 100, ("127.0.0.1", 9))  # nobody listens: no exception
        transport.close()
        await asyncio.sleep(0)
        again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            again.bind(("127.0.0.1", port))  # the port is free once closed
        finally:
            again.close()
        return transport.is_closing(), proto.transport is transport

    assert asyncio.run(scenario()) == (True, True)


class EchoForwarder:
    """Stands in for the upstream: answers a relayed query at once with the query, QR set."""

    def __init__(self) -> None:
        self.relayed = 0

    def allowed(self, host: str) -> bool:
        return True

    def submit(self, query: bytes, tcp: bool, send: Callable[[bytes], None]) -> None:
        self.relayed += 1
        send(query[:2] + bytes([query[2] | 0x80]) + query[3:])


def test_fast_and_relayed_replies_in_one_batch_each_reach_their_client(world: World) -> None:
    # Names outside our zones are relayed (the slow path, sent at once) while the others wait in
    # the batch's send buffer: mixing them must not shift any reply to another client.
    plan, asked = burst(clients=4, per_client=24)
    for c, (datagrams, ids) in enumerate(zip(plan, asked, strict=True)):
        for n in range(0, 24, 3):
            query = dns.message.make_query(f"host{n}.example.org.", "A")
            query.id = 50000 + c * 100 + n
            ids[query.id] = f"host{n}.example.org. A"
            datagrams.insert(n, query.to_wire())
    forwarder = EchoForwarder()
    responder = Responder(world.index, forwarding=True)
    proto = UDPProtocol(responder, forwarder)  # type: ignore[arg-type]
    assert proto.plain
    got, transport = asyncio.run(exchange(proto, "127.0.0.1", socket.AF_INET, plan))
    check_replies(got, asked)
    assert forwarder.relayed == 4 * 8
    assert transport.reads < transport.datagrams


def test_the_sockaddr_is_decoded_as_asyncio_does() -> None:
    v4 = struct.pack("!HH4s8x", socket.AF_INET, 5353, socket.inet_pton(socket.AF_INET, "10.1.2.3"))
    assert udpbatch._address(v4, socket.AF_INET) == ("10.1.2.3", 5353)
    v6 = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 53, 7)
    v6 += socket.inet_pton(socket.AF_INET6, "fe80::1") + (3).to_bytes(4, sys.byteorder)
    assert udpbatch._address(v6, socket.AF_INET6) == ("fe80::1", 53, 7, 3)


def test_the_rate_limit_is_applied_in_the_batch(world: World) -> None:
    # RRL used to take every reply out of the batch (sent one by one: 40% of a worker). Now the
    # batch applies it: one client asking the same question 30 times at 5 responses/s gets 5
    # answers, then every second one slipped (TC, empty), the others dropped; all sent in
    # batches, none through the transport's one-by-one sendto.
    clock = [100.0]
    limiter = RateLimiter(5, slip=2, clock=lambda: clock[0])
    proto = UDPProtocol(world.responder, limiter=limiter)
    queries = []
    for n in range(30):
        query = dns.message.make_query("web.svc.internal.", "A")
        query.id = n
        queries.append(query.to_wire())
    one_by_one = []
    original = udpbatch.BatchedUDPTransport.sendto

    def counted(self: udpbatch.BatchedUDPTransport, data: bytes, addr: object = None) -> None:
        one_by_one.append(data)
        original(self, data, addr)

    udpbatch.BatchedUDPTransport.sendto = counted  # type: ignore[method-assign]
    try:
        got, transport = asyncio.run(exchange(proto, "127.0.0.1", socket.AF_INET, [queries]))
    finally:
        udpbatch.BatchedUDPTransport.sendto = original  # type: ignore[method-assign]
    replies = [dns.message.from_wire(w) for w in got[0]]
    full = [r for r in replies if not r.flags & dns.flags.TC]
    slipped = [r for r in replies if r.flags & dns.flags.TC]
    assert [r.id for r in full] == [0, 1, 2, 3, 4]
    assert all(texts(r) == ["10.0.0.1", "10.0.0.2"] for r in full)
    assert [r.id for r in slipped] == list(range(6, 30, 2)) and not any(r.answer for r in slipped)
    assert (limiter.slipped, limiter.dropped) == (12, 13)
    assert one_by_one == [] and transport.reads < transport.datagrams
