"""Out-of-zone names: REFUSED by default, relayed to ``recursors`` when configured (a real dnsmasq
on loopback plays the upstream), SERVFAIL when no upstream answers; and UDP rate limiting."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.frontends import Resolver, started
from tests.support.helpers import DnsdiscProcess, free_port, require_tool


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Resolver]:
    """dnsmasq answering upstream.example from its own records, and nothing else."""
    path = require_tool("dnsmasq")
    port = free_port()
    cmd = [
        path,
        "--keep-in-foreground",
        "--log-facility=-",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        f"--pid-file={tmp_path}/up.pid",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--host-record=upstream.example,192.0.2.99",
    ]
    with started("dnsmasq-upstream", cmd, port, tmp_path / "upstream.log") as resolver:
        yield resolver


@contextmanager
def configured(tmp_path: Path, text: str) -> Iterator[DnsdiscProcess]:
    """A server started with ``text`` as its config file (flags still pick ports and dirs)."""
    conf = tmp_path / "dnsdisc.yaml"
    conf.write_text(text)
    node = DnsdiscProcess(tmp_path / "node", extra_args=["--config", str(conf)]).start()
    try:
        yield node
    finally:
        node.stop()


def recursive(
    node: DnsdiscProcess, name: str, tcp: bool = False, timeout: float = 3.0
) -> dns.message.Message:
    """A query with RD=1: only these are relayed (``node.query`` sends RD=0)."""
    q = dns.message.make_query(name, "A")
    fn = dns.query.tcp if tcp else dns.query.udp
    return fn(q, node.dns_host, port=node.dns_port, timeout=timeout)


def test_out_of_zone_is_refused_without_recursors(server: DnsdiscProcess) -> None:
    msg = server.query("upstream.example", "A")
    assert msg.rcode() == dns.rcode.REFUSED and not msg.answer


def test_recursors_answer_other_names_over_udp_and_tcp(tmp_path: Path, upstream: Resolver) -> None:
    with configured(tmp_path, f"recursors: ['127.0.0.1:{upstream.port}']\n") as node:
        node.register("web", "web-1", address="10.0.0.1", port=80)
        for tcp in (False, True):
            msg = recursive(node, "upstream.example", tcp=tcp)
            assert msg.rcode() == dns.rcode.NOERROR
            assert [rr.to_text() for rr in msg.answer[0]] == ["192.0.2.99"]
        # Our own names are still ours (authoritative, not forwarded).
        own = node.query("web.svc.internal", "A")
        assert own.flags & dns.flags.AA and [rr.to_text() for rr in own.answer[0]] == ["10.0.0.1"]


def test_servfail_when_no_upstream_answers(tmp_path: Path) -> None:
    # A UDP socket that never answers, and a port where nothing listens at all.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        dead = free_port()
        text = f"recursors: ['127.0.0.1:{dead}', '127.0.0.1:{silent.getsockname()[1]}']\nrecursor_timeout: 1\n"
        with configured(tmp_path, text) as node:
            started_at = time.monotonic()
            msg = recursive(node, "anything.example", timeout=5)
            assert msg.rcode() == dns.rcode.SERVFAIL
            assert msg.question[0].name.to_text() == "anything.example."
            assert time.monotonic() - started_at < 4
            assert (
                recursive(node, "anything.example", tcp=True, timeout=5).rcode()
                == dns.rcode.SERVFAIL
            )


def test_rate_limit_slips_and_drops_identical_responses(tmp_path: Path) -> None:
    # One process: a client on one source port always reaches the same worker, which holds
    # a share of the limit (see the next test for the limit across workers).
    text = "rate_limit: {responses_per_second: 5, slip: 2}\ndns: {workers: 0}\n"
    with configured(tmp_path, text) as node:
        node.register("web", "web-1", address="10.0.0.1", port=80)
        query = dns.message.make_query("web.svc.internal", "A")
        full = slipped = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            for _ in range(40):
                s.sendto(query.to_wire(), ("127.0.0.1", node.dns_port))
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                try:
                    data = s.recv(4096)
                except TimeoutError:
                    break
                msg = dns.message.from_wire(data)
                if msg.flags & dns.flags.TC:
                    assert not msg.answer
                    slipped += 1
                else:
                    full += 1
        # 5 per second of burst (plus a refill while sending), half the rest slipped.
        assert 5 <= full <= 8, (full, slipped)
        assert 12 <= slipped <= 20, (full, slipped)
        # TCP is not limited: the client a slip sends there gets its answer.
        assert node.addresses("web.svc.internal", tcp=True) == ["10.0.0.1"]


def test_rate_limit_holds_across_worker_processes(tmp_path: Path) -> None:
    """Queries from one address but many source ports (what a spoofed flood looks like) are
    spread over the workers by the kernel; each enforces its share, so the total stays near
    the configured rate instead of a multiple of it."""
    text = "rate_limit: {responses_per_second: 10, slip: 0}\ndns: {workers: 2}\n"
    with configured(tmp_path, text) as node:
        node.register("web", "web-1", address="10.0.0.1", port=80)
        wire = dns.message.make_query("web.svc.internal", "A").to_wire()
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(80)]
        try:
            for s in socks:
                s.setblocking(False)
                s.sendto(wire, ("127.0.0.1", node.dns_port))
            full = 0
            deadline = time.monotonic() + 1.5
            pending = list(socks)
            while pending and time.monotonic() < deadline:
                time.sleep(0.05)
                for s in list(pending):
                    try:
                        s.recv(4096)
                    except BlockingIOError:
                        continue
                    full += 1
                    pending.remove(s)
        finally:
            for s in socks:
                s.close()
        # Two workers with the whole rate each would let about 20 through; with their shares
        # (5 each) about 10.
        assert 8 <= full <= 14, full
        text = node.http("GET", "/metrics").raw.decode()
        dropped = next(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith('dnsdisc_dns_rate_limited_total{action="drop"}')
        )
        assert dropped == 80 - full
