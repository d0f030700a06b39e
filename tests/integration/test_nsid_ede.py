"""NSID (RFC 5001) and Extended DNS Errors (RFC 8914) as real clients see them: dig's ``NSID:``
and ``EDE:`` lines, and dnspython's parsed options, against running servers (DNS in workers and
in the main process); bad options do not stop the answers."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.etcdcluster import EtcdCluster
from tests.support.helpers import LOOPBACK_CHECKS, DnsdiscProcess, free_port, require_tool

ZONE = "svc.internal"


def config(tmp: Path, name: str, text: str) -> list[str]:
    path = tmp / f"{name}.yaml"
    path.write_text(LOOPBACK_CHECKS + text)
    return ["--config", str(path)]


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A UDP port nobody listens on: a query sent there comes back as ICMP port unreachable."""
    return free_port()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, closed_port: int) -> Iterator[DnsdiscProcess]:
    """Two DNS workers; recursors that cannot be reached, recursion allowed from loopback."""
    tmp = tmp_path_factory.mktemp("nsid-workers")
    args = config(
        tmp,
        "w",
        f"dns:\n  nsid: node1\nrecursors: ['127.0.0.1:{closed_port}']\nrecursor_timeout: 1\n",
    )
    srv = DnsdiscProcess(tmp / "node", extra_args=[*args, "--workers", "2"]).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory, closed_port: int) -> Iterator[DnsdiscProcess]:
    """DNS in the main process; recursion offered to 10/8 only (so not to this test)."""
    tmp = tmp_path_factory.mktemp("nsid-main")
    args = config(
        tmp,
        "m",
        f"dns:\n  nsid: node1\nrecursors: ['127.0.0.1:{closed_port}']\n"
        "recursion_allow: ['10.0.0.0/8']\n",
    )
    srv = DnsdiscProcess(tmp / "node", extra_args=[*args, "--workers", "0"]).start()
    try:
        yield srv
    finally:
        srv.stop()


def dig(server: DnsdiscProcess, *args: str) -> str:
    result = subprocess.run(
        [require_tool("dig"), f"@{server.dns_host}", "-p", str(server.dns_port),
         "+time=3", "+tries=1", *args],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def nsid_text(out: str) -> str | None:
    found = re.search(r'; NSID: [0-9a-f ]+ \("([^"]*)"\)', out)
    return found.group(1) if found else None


def status(out: str) -> str:
    found = re.search(r"status: (\w+)", out)
    assert found is not None, out
    return found.group(1)


def test_dig_nsid_names_the_worker_that_answered(workers: DnsdiscProcess) -> None:
    workers.register("web", "w1", address="10.0.0.1", port=80)
    seen = set()
    # Each dig uses a new source port: the kernel spreads them over both workers.
    for _ in range(16):
        out = dig(workers, "+nsid", "+norec", f"web.{ZONE}", "A")
        assert status(out) == "NOERROR"
        name = nsid_text(out)
        assert name is not None and re.fullmatch(r"node1/w[01]", name), out
        seen.add(name)
        if len(seen) == 2:
            break
    assert seen, "no NSID"
    # Not asked: not given.
    assert "NSID" not in dig(workers, "+norec", f"web.{ZONE}", "A")


def test_dig_nsid_names_the_main_process(main: DnsdiscProcess) -> None:
    out = dig(main, "+nsid", "+norec", f"{ZONE}", "SOA")
    assert nsid_text(out) == "node1/main", out


def test_dnspython_reads_nsid_and_ede_and_cached_replies_stay_apart(main: DnsdiscProcess) -> None:
    main.register("api", "a1", address="10.0.1.1", port=80)
    for _ in range(3):  # the later ones come from the reply cache
        asked = dns.message.make_query(f"api.{ZONE}", "A", use_edns=0, options=[
            dns.edns.GenericOption(dns.edns.NSID, b"")])  # fmt: skip
        got = dns.query.udp(asked, main.dns_host, port=main.dns_port, timeout=3)
        assert [o.to_wire() for o in got.options if o.otype == dns.edns.NSID] == [  # type: ignore[no-untyped-call]
            b"node1/main"
        ]
        plain = main.query(f"api.{ZONE}", "A", use_edns=0)
        assert plain.options == () or all(o.otype != dns.edns.NSID for o in plain.options)
        refused = main.query("example.com", "A", use_edns=0)
        assert refused.rcode() == dns.rcode.REFUSED
        ede = [o for o in refused.options if o.otype == dns.edns.EDE]
        assert [int(o.code) for o in ede] == [20]  # type: ignore[attr-defined]


def test_dig_shows_not_authoritative_for_a_name_outside_our_zones(main: DnsdiscProcess) -> None:
    out = dig(main, "+norec", "example.com", "A")
    assert status(out) == "REFUSED"
    assert "; EDE: 20 (Not Authoritative)" in out, out
    # Without EDNS there is no OPT record to carry it.
    assert "EDE" not in dig(main, "+norec", "+noedns", "example.com", "A")


def test_dig_shows_prohibited_when_recursion_is_not_offered(main: DnsdiscProcess) -> None:
    out = dig(main, "+rec", "example.com", "A")
    assert status(out) == "REFUSED"
    assert "; EDE: 18 (Prohibited)" in out, out


def test_dig_shows_a_network_error_when_the_recursors_fail(workers: DnsdiscProcess) -> None:
    out = dig(workers, "+rec", "+nsid", "example.com", "A")
    assert status(out) == "SERVFAIL"
    assert "; EDE: 23 (Network Error)" in out, out
    name = nsid_text(out)
    assert name is not None and name.startswith("node1/w"), out


def test_dig_shows_no_healthy_instance_on_nodata_by_health(main: DnsdiscProcess) -> None:
    main.register("db", "d1", address="10.0.2.1", port=5432, ttl=60)
    assert "EDE" not in dig(main, "+norec", f"db.{ZONE}", "A")
    assert "EDE" not in dig(main, "+norec", f"db.{ZONE}", "AAAA")  # never had one: plain
    main.http("POST", "/v1/services/db/instances/d1/heartbeat", {"status": "critical"})
    deadline = time.monotonic() + 5
    out = ""
    while time.monotonic() < deadline:
        out = dig(main, "+norec", f"db.{ZONE}", "A")
        if "EDE" in out:
            break
        time.sleep(0.05)
    assert status(out) == "NOERROR" and "ANSWER: 0" in out
    assert "; EDE: 0 (Other): (no healthy instance)" in out, out
    assert "EDE" not in dig(main, "+norec", f"db.{ZONE}", "AAAA")


def test_a_non_empty_nsid_and_a_huge_options_section_keep_the_server_answering(
    workers: DnsdiscProcess,
) -> None:
    # RFC 5001 wants the query's NSID empty; like NSD and Knot we answer it anyway.
    out = dig(workers, "+norec", "+ednsopt=3:6a756e6b", f"{ZONE}", "SOA")
    assert status(out) == "NOERROR"
    assert (nsid_text(out) or "").startswith("node1/w"), out
    q = dns.message.make_query(f"{ZONE}", "SOA", use_edns=0, options=[
        *[dns.edns.GenericOption(65001, b"x" * 16) for _ in range(1000)],
        dns.edns.GenericOption(dns.edns.NSID, b"")])  # fmt: skip
    q.flags = 0
    big = q.to_wire(max_size=65535)
    got = dns.query.tcp(dns.message.from_wire(big), workers.dns_host, port=workers.dns_port,
                        timeout=5)  # fmt: skip
    assert got.rcode() == dns.rcode.NOERROR
    # The same as one UDP datagram (too big for one reply over UDP; any answer or none is fine),
    # then an OPT whose length runs past the packet: FORMERR or nothing.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.sendto(big[:60000], (workers.dns_host, workers.dns_port))
        small = dns.message.make_query(f"{ZONE}", "SOA", use_edns=0, options=[
            dns.edns.GenericOption(dns.edns.NSID, b"")]).to_wire()  # fmt: skip
        s.sendto(small[:-6] + b"\x00\x40" + small[-4:], (workers.dns_host, workers.dns_port))
    for _ in range(5):
        assert dig(workers, "+norec", f"{ZONE}", "SOA").count("status: NOERROR") == 1


def test_answers_say_stale_while_etcd_is_out_of_reach(tmp_path: Path, etcd: EtcdCluster) -> None:
    require_tool("dig")
    node = DnsdiscProcess(
        tmp_path / "a",
        extra_args=[
            "--storage", "etcd", "--etcd-endpoints", etcd.endpoints,
            "--etcd-prefix", "/dnsdisc-stale", "--workers", "1",
        ],
    ).start()  # fmt: skip
    try:
        node.register("web", "w1", address="10.0.3.1", port=80)
        assert "EDE" not in dig(node, "+norec", f"web.{ZONE}", "A")
        for m in etcd.members:
            etcd.freeze(m)
        deadline = time.monotonic() + 20
        out = ""
        while time.monotonic() < deadline:
            out = dig(node, "+norec", f"web.{ZONE}", "A")
            if "EDE" in out:
                break
            time.sleep(0.2)
        assert "; EDE: 3 (Stale Answer)" in out, out
        assert "10.0.3.1" in out  # still answered, from the last view
        for m in etcd.members:
            etcd.freeze(m, False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = dig(node, "+norec", f"web.{ZONE}", "A")
            if "EDE" not in out:
                break
            time.sleep(0.2)
        assert "EDE" not in out, out
    finally:
        node.stop()
