"""dnsdisc behind the resolvers people actually put in front of it: unbound (stub-zone),
dnsmasq (per-domain server) and the glibc stub resolver (getaddrinfo, getent) in a network
namespace where dnsdisc owns port 53. Every process here is started by the test, listens on
loopback (or inside the test's own namespace) and is stopped by its PID."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.support.frontends import (
    DOMAIN,
    Namespace,
    Resolver,
    dnsdisc_in,
    dnsmasq,
    namespace,
    unbound,
)
from tests.support.helpers import IN_CI, DnsdiscProcess, free_port, require_tool, running

# -- a resolver process in front of dnsdisc ----------------------------------------------------


def rrs(msg: dns.message.Message, rdtype: str, section: str = "answer") -> list[str]:
    want = dns.rdatatype.from_text(rdtype)
    return [rr.to_text() for rrset in getattr(msg, section) for rr in rrset if rrset.rdtype == want]


def register_web(server: DnsdiscProcess) -> None:
    server.register("web", "web-1", address="10.0.0.1", port=8080)
    server.register("web", "web-2", address="10.0.0.2", port=8080, weight=50)
    server.register("web", "web-6", address="2001:db8::6", port=8443)


def assert_web_answers(r: Resolver) -> None:
    """The answers a client behind resolver ``r`` must see for ``register_web``'s instances."""
    a = r.query(f"web.{DOMAIN}", "A")
    assert a.rcode() == dns.rcode.NOERROR, a
    assert a.flags & dns.flags.RA, "no RA: the reply did not come from the resolver"
    assert sorted(rrs(a, "A")) == ["10.0.0.1", "10.0.0.2"]

    aaaa = r.query(f"web.{DOMAIN}", "AAAA")
    assert rrs(aaaa, "AAAA") == ["2001:db8::6"]

    srv = r.query(f"_web._tcp.{DOMAIN}", "SRV")
    assert srv.rcode() == dns.rcode.NOERROR, srv
    assert sorted(rrs(srv, "SRV")) == [
        f"0 100 8080 web-1.web.{DOMAIN}.",
        f"0 100 8443 web-6.web.{DOMAIN}.",
        f"0 50 8080 web-2.web.{DOMAIN}.",
    ]
    # The SRV targets are names a client then resolves through the same resolver.
    assert rrs(r.query(f"web-2.web.{DOMAIN}", "A"), "A") == ["10.0.0.2"]
    assert rrs(r.query(f"web-6.web.{DOMAIN}", "AAAA"), "AAAA") == ["2001:db8::6"]

    nx = r.query(f"missing.{DOMAIN}", "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN, nx
    assert not nx.answer
    # The SOA lets the resolver cache the negative answer (RFC 2308); it must survive the trip.
    assert [
        rrset.name.to_text() for rrset in nx.authority if rrset.rdtype == dns.rdatatype.SOA
    ] == [f"{DOMAIN}."]

    # A known name without the type asked for is NODATA, not NXDOMAIN.
    nodata = r.query(f"web.{DOMAIN}", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer, nodata

    ptr = r.query("1.0.0.10.in-addr.arpa", "PTR")
    assert rrs(ptr, "PTR") == [f"web-1.web.{DOMAIN}."]


# -- unbound -----------------------------------------------------------------------------------


def test_unbound_stub_zone_resolves_a_aaaa_srv_ptr_and_nxdomain(
    tmp_path: Path, server: DnsdiscProcess
) -> None:
    register_web(server)
    with unbound(tmp_path, server) as r:
        assert_web_answers(r)
        # Outside the stubbed zones unbound refuses locally: proof the config sent nothing out.
        assert r.query("example.com", "A").rcode() == dns.rcode.REFUSED


def test_unbound_with_0x20_case_randomisation(tmp_path: Path, server: DnsdiscProcess) -> None:
    server.register("web", "web-1", address="10.0.0.1", port=8080)
    # dnsdisc must copy the question's letters exactly; unbound compares them with what it sent.
    q = dns.message.make_query("wEb.SvC.iNtErNaL.", "A")
    q.flags &= ~dns.flags.RD
    wire = q.to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(wire, (server.dns_host, server.dns_port))
        raw = sock.recv(65535)
    assert raw[:2] == wire[:2]
    assert raw[12 : len(wire)] == wire[12:], "question not echoed byte for byte"

    with unbound(tmp_path, server, "use-caps-for-id: yes") as r:
        # No cache: each query reaches dnsdisc with fresh random case and is checked.
        for name in (
            f"web.{DOMAIN}",
            f"WEB.{DOMAIN}",
            f"web-1.web.{DOMAIN}",
            f"Web-1.Web.{DOMAIN}",
        ):
            msg = r.query(name, "A")
            assert msg.rcode() == dns.rcode.NOERROR, msg
            assert rrs(msg, "A") == ["10.0.0.1"], name
        srv = r.query(f"_web._tcp.{DOMAIN}", "SRV")
        assert rrs(srv, "SRV") == [f"0 100 8080 web-1.web.{DOMAIN}."]
        nx = r.query(f"absent.{DOMAIN}", "A")
        assert nx.rcode() == dns.rcode.NXDOMAIN, nx
        # A case mismatch would still resolve through unbound's fallback (it asks again and
        # compares answers), so the log is what tells that the 0x20 check passed first time.
        log = r.log()
        assert "Capsforid" not in log and "0x20" not in log, log


def test_unbound_retries_truncated_answers_over_tcp(tmp_path: Path, server: DnsdiscProcess) -> None:
    # 40 SRV records do not fit the 1232-byte UDP limit: dnsdisc sets TC, unbound must go to
    # dnsdisc over TCP and hand the client the whole set.
    for i in range(40):
        server.register("big", f"node-{i}", address=f"10.2.0.{i + 1}", port=7000 + i)
    with unbound(tmp_path, server) as r:
        msg = r.query(f"_big._tcp.{DOMAIN}", "SRV", tcp=True)
        assert msg.rcode() == dns.rcode.NOERROR, msg
        ports = sorted(int(rr.split()[2]) for rr in rrs(msg, "SRV"))
        assert ports == list(range(7000, 7040))


def test_unbound_reaches_dnsdisc_on_ipv6_loopback(tmp_path: Path) -> None:
    try:
        port = free_port("::1")
    except OSError as exc:
        if IN_CI:
            pytest.fail(f"no IPv6 loopback: {exc}")
        pytest.skip(f"no IPv6 loopback: {exc}")
    with running(tmp_path, "v6", dns_host="::1", dns_port=port) as server:
        server.register("web", "web-1", address="10.0.0.1", port=8080)
        with unbound(tmp_path, server) as r:
            assert rrs(r.query(f"web.{DOMAIN}", "A"), "A") == ["10.0.0.1"]
            assert r.query(f"missing.{DOMAIN}", "A").rcode() == dns.rcode.NXDOMAIN


# -- dnsmasq -----------------------------------------------------------------------------------


def test_dnsmasq_forwards_a_aaaa_srv_ptr_and_nxdomain(
    tmp_path: Path, server: DnsdiscProcess
) -> None:
    register_web(server)
    with dnsmasq(tmp_path, server) as r:
        assert_web_answers(r)
        # dnsmasq passes the additional section through: the SRV targets' addresses come along.
        srv = r.query(f"_web._tcp.{DOMAIN}", "SRV")
        assert sorted(rrs(srv, "A", "additional")) == ["10.0.0.1", "10.0.0.2"]
        assert rrs(srv, "AAAA", "additional") == ["2001:db8::6"]


def test_dnsmasq_passes_truncation_and_forwards_tcp(tmp_path: Path, server: DnsdiscProcess) -> None:
    for i in range(40):
        server.register("big", f"node-{i}", address=f"10.2.0.{i + 1}", port=7000 + i)
    with dnsmasq(tmp_path, server) as r:
        q = dns.message.make_query(f"_big._tcp.{DOMAIN}", "SRV", use_edns=0, payload=1232)
        msg, used_tcp = dns.query.udp_with_fallback(q, "127.0.0.1", port=r.port, timeout=5)
        assert used_tcp, "a 40-record SRV answer should not fit in UDP"
        assert msg.rcode() == dns.rcode.NOERROR, msg
        assert len(rrs(msg, "SRV")) == 40


@pytest.fixture
def netns() -> Iterator[Namespace]:
    with namespace() as ns:
        yield ns


def test_getaddrinfo_and_getent_in_a_netns(tmp_path: Path, netns: Namespace) -> None:
    getent = require_tool("getent")
    registrations = [
        ("PUT", "/v1/services/web/instances/web-1", {"address": "10.0.0.1", "port": 80}),
        ("PUT", "/v1/services/web/instances/web-2", {"address": "10.0.0.2", "port": 80}),
        ("PUT", "/v1/services/api/instances/api-1", {"address": "2001:db8::5", "port": 443}),
    ]
    with dnsdisc_in(netns, tmp_path, registrations):
        lookup = netns.python(
            """
            import json, socket, sys
            out = {}
            for host, family in (("web.svc.internal", 0), ("web", 0),
                                 ("api.svc.internal", socket.AF_INET6),
                                 ("nothing-here.svc.internal", 0)):
                try:
                    infos = socket.getaddrinfo(host, 80, family, proto=socket.IPPROTO_TCP)
                    out[host] = sorted({info[4][0] for info in infos})
                except socket.gaierror as exc:
                    out[host] = f"gaierror {exc.errno}"
            print(json.dumps(out))
            """
        )
        assert lookup.returncode == 0, lookup.stderr
        found = json.loads(lookup.stdout)
        assert found["web.svc.internal"] == ["10.0.0.1", "10.0.0.2"]
        # The short name goes through resolv.conf's search list.
        assert found["web"] == ["10.0.0.1", "10.0.0.2"]
        assert found["api.svc.internal"] == ["2001:db8::5"]
        assert str(found["nothing-here.svc.internal"]).startswith("gaierror"), found

        ahosts = netns.run(getent, "ahostsv4", f"web.{DOMAIN}")
        assert ahosts.returncode == 0, ahosts
        assert {line.split()[0] for line in ahosts.stdout.splitlines()} == {"10.0.0.1", "10.0.0.2"}
        # getent exits 2 for "not found"; any other failure would be something else.
        missing = netns.run(getent, "ahostsv4", f"nothing-here.{DOMAIN}")
        assert missing.returncode == 2, missing
