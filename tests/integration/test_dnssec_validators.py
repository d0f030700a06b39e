"""DNSSEC (#24) against more real parts: knot-resolver (kresd) as a second validator beside
unbound (test_dnssec.py), both refusing an answer whose address was changed on the way, and
genreport's battery on a signed zone.

- kresd with dnsdisc's DS records (``dnsdisc dnssec ds``) as trust anchors answers AD for balanced
  A with max_answers 1 and 2 over many queries (several subsets), AAAA, SRV (whose glue dnsdisc
  signs: kresd passes no additional section on, so the glue is checked in dnsdisc's own reply),
  TXT, PTR, NODATA, a name that does not exist (compact denial, RFC 9824: kresd 5.6 does not know
  NXNAME and takes the NSEC as a NODATA proof, as unbound 1.17 does) and an empty non-terminal.
- A proxy between the validators and dnsdisc that flips one bit of an A record's address (its
  RRSIG left alone): unbound and kresd answer SERVFAIL for that name, and the address with CD
  set (so the change did reach them); other names through the same proxy, and the same name
  once the proxy stops changing it, stay AD.
- genreport's probes, default and full mode, against a signed zone: every verdict ``ok``, and its
  report line says ``signed=ok,yes`` (the ``do`` probe's reply carried RRSIGs).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import dns.dnssec
import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdata
import dns.rdatatype
import pytest

from tests.support.frontends import Resolver, unbound, upstream_addr
from tests.support.genreport import DEFAULT, FULL, NSID, PROBES, ZONE, probe, report, section
from tests.support.helpers import DnsdiscProcess, running, wait_for
from tests.support.validators import (
    TamperingProxy,
    anchors,
    signed_dnsdisc,
    validating_kresd,
)

EDE_DNSSEC_BOGUS = 6  # RFC 8914 4.7
A, SRV, RRSIG, NSEC = dns.rdatatype.A, dns.rdatatype.SRV, dns.rdatatype.RRSIG, dns.rdatatype.NSEC
NXNAME = 128  # RFC 9824


def ask(port: int, name: str, rdtype: str, *, cd: bool = False) -> dns.message.Message:
    """A stub's DO query to the validator on ``port`` (over TCP: no truncation to retry)."""
    q = dns.message.make_query(name, rdtype, want_dnssec=True, payload=1232)
    if cd:
        q.flags |= dns.flags.CD
    return dns.query.tcp(q, "127.0.0.1", port=port, timeout=10)


def secure(reply: dns.message.Message) -> bool:
    return bool(reply.flags & dns.flags.AD) and reply.rcode() == dns.rcode.NOERROR


def addresses(reply: dns.message.Message, name: str) -> list[str]:
    return sorted(
        rd.to_text()
        for rrset in reply.answer
        if rrset.rdtype == dns.rdatatype.A and rrset.name.to_text() == name
        for rd in rrset
    )


def test_every_kind_of_answer_validates_through_kresd(tmp_path: Path) -> None:
    with signed_dnsdisc(tmp_path) as (server, ds):
        assert server.http("PUT", "/v1/services/one", {"max_answers": 1}).status in (200, 201)
        assert server.http("PUT", "/v1/services/two", {"max_answers": 2}).status in (200, 201)
        for n in range(4):
            for svc in ("one", "two"):
                server.register(svc, f"{svc}{n}", address=f"10.0.0.{n + 1}", port=80 + n)
        server.register("v6", "a", address="2001:db8::1", port=443)
        server.register("web", "w0", address="10.0.1.1", port=8080, meta={"v": "1"})
        with validating_kresd(tmp_path, upstream_addr(server), anchors(ds)) as kresd:
            seen: dict[str, set[tuple[str, ...]]] = {"one": set(), "two": set()}
            for _ in range(20):
                for svc, size in (("one", 1), ("two", 2)):
                    reply = ask(kresd.port, f"{svc}.svc.internal.", "A")
                    assert secure(reply), (svc, reply, kresd.log())
                    got = addresses(reply, f"{svc}.svc.internal.")
                    assert len(got) == size, reply
                    seen[svc].add(tuple(got))
            # Each subset has its own signature: several were made and validated.
            assert len(seen["one"]) > 1 and len(seen["two"]) > 1, seen
            for name, rdtype, want in (
                ("v6.svc.internal.", "AAAA", dns.rdatatype.AAAA),
                ("_web._tcp.svc.internal.", "SRV", dns.rdatatype.SRV),
                ("w0.web.svc.internal.", "A", dns.rdatatype.A),  # the SRV's target
                ("w0.web.svc.internal.", "TXT", dns.rdatatype.TXT),
                ("1.1.0.10.in-addr.arpa.", "PTR", dns.rdatatype.PTR),
                ("svc.internal.", "DNSKEY", dns.rdatatype.DNSKEY),
            ):
                reply = ask(kresd.port, name, rdtype)
                assert secure(reply), (name, rdtype, reply, kresd.log())
                assert [r.rdtype for r in reply.answer if r.rdtype != dns.rdatatype.RRSIG] == [
                    want
                ], reply
            # Denials: the NSEC at the name asked (compact denial) is what kresd validated;
            # its bitmap: the types the name has, NXNAME for a name that does not exist (kresd
            # 5.6 does not know it, and takes the NSEC as a NODATA proof: NOERROR, as unbound).
            for name, rdtype, types in (
                ("web.svc.internal.", "MX", {A, SRV}),  # NODATA
                ("nothing.svc.internal.", "A", {NXNAME}),  # does not exist
                ("_tcp.svc.internal.", "A", set()),  # an empty non-terminal
                ("nothing.10.in-addr.arpa.", "PTR", {NXNAME}),  # in the reverse zone
            ):
                reply = ask(kresd.port, name, rdtype)
                assert secure(reply), (name, rdtype, reply, kresd.log())
                assert not reply.answer, reply
                [nsec] = [r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC]
                assert nsec.name.to_text() == name, reply
                assert bitmap(nsec[0]) == types | {RRSIG, NSEC}, reply
            # The SRV reply dnsdisc gives carries its target's address, signed: glue. kresd
            # passes no additional section on, so dnsdisc's own reply is checked: its glue
            # validates with the DNSKEY RRset kresd validated.
            keys = ask(kresd.port, "svc.internal.", "DNSKEY")
            assert secure(keys), keys
            [dnskey] = [r for r in keys.answer if r.rdtype == dns.rdatatype.DNSKEY]
        direct = dns.message.make_query("_web._tcp.svc.internal.", "SRV", want_dnssec=True)
        reply = dns.query.tcp(direct, server.dns_host, port=server.dns_port, timeout=5)
        glue = {(r.rdtype, r.covers): r for r in reply.additional}
        address, sig = glue[(A, dns.rdatatype.NONE)], glue[(RRSIG, A)]
        assert address.name.to_text() == "w0.web.svc.internal.", reply
        dns.dnssec.validate(address, sig, {dnskey.name: dnskey})


def bitmap(nsec: dns.rdata.Rdata) -> set[int]:
    """The types an NSEC rdata's bitmap lists."""
    windows: list[tuple[int, bytes]] = nsec.windows  # type: ignore[attr-defined]
    return {
        window * 256 + i * 8 + bit
        for window, octets in windows
        for i, octet in enumerate(octets)
        for bit in range(8)
        if octet & (0x80 >> bit)
    }


@pytest.fixture
def tampered(
    tmp_path: Path,
) -> Iterator[tuple[DnsdiscProcess, TamperingProxy, list[str]]]:
    """A signed dnsdisc with web (10.0.0.1) and api (10.0.0.2), and a proxy in front of it
    that changes web's A records while told to."""
    with signed_dnsdisc(tmp_path) as (server, ds):
        server.register("web", "w0", address="10.0.0.1", port=80)
        server.register("api", "a0", address="10.0.0.2", port=80)
        with TamperingProxy((server.dns_host, server.dns_port), "web.svc.internal.") as proxy:
            yield server, proxy, anchors(ds)


def check_tampering_refused(resolver: Resolver, proxy: TamperingProxy) -> None:
    """Through ``proxy``, changing web's address: SERVFAIL for web, with EDE DNSSEC Bogus, and
    the changed address when checking is disabled (CD); AD for api meanwhile; AD for web once
    the proxy stops changing it. (The changed answers come first: a validator may answer CD
    from a validated copy it still holds, for the second its TTL of 0 lasts.)"""
    port = resolver.port
    proxy.tamper = True
    reply = ask(port, "web.svc.internal.", "A")
    assert reply.rcode() == dns.rcode.SERVFAIL, (reply, resolver.log())
    assert not reply.answer and not reply.flags & dns.flags.AD, reply
    codes = [o.code for o in reply.options if isinstance(o, dns.edns.EDEOption)]
    assert EDE_DNSSEC_BOGUS in codes, reply
    assert proxy.tampered > 0
    # The validator hands over what it got when asked not to check, and that is the changed
    # address: the signature is what it refused.
    reply = ask(port, "web.svc.internal.", "A", cd=True)
    assert reply.rcode() == dns.rcode.NOERROR and not reply.flags & dns.flags.AD, reply
    assert addresses(reply, "web.svc.internal.") == ["10.0.0.0"], reply
    # Only web's A records are changed: the rest of the zone still validates through it.
    reply = ask(port, "api.svc.internal.", "A")
    assert secure(reply) and addresses(reply, "api.svc.internal.") == ["10.0.0.2"], reply
    proxy.tamper = False
    tampered = proxy.tampered

    def validates() -> bool:
        # A validator may keep a bogus result a short while (unbound: val-bogus-ttl, set low).
        again = ask(port, "web.svc.internal.", "A")
        return secure(again) and addresses(again, "web.svc.internal.") == ["10.0.0.1"]

    wait_for(validates, timeout=10, step=0.2)
    # Untouched, but still read and written again by the proxy: its encoding is not refused.
    assert proxy.tampered == tampered and proxy.relayed > 0
    assert proxy.errors == []


def test_unbound_refuses_a_changed_address(
    tmp_path: Path, tampered: tuple[DnsdiscProcess, TamperingProxy, list[str]]
) -> None:
    server, proxy, trust = tampered
    # unbound stubs to the proxy: a DnsdiscProcess here is only where DNS is asked.
    via_proxy = DnsdiscProcess(server.data_dir, dns_host="127.0.0.1", dns_port=proxy.port)
    # ede: extended errors in replies; val-log-level: failures logged.
    extra = ("ede: yes", "val-bogus-ttl: 1", "val-log-level: 2")
    with unbound(tmp_path, via_proxy, *extra, trust_anchors=trust) as resolver:
        check_tampering_refused(resolver, proxy)
        assert "validation failure <web.svc.internal. A IN>" in resolver.log()


def test_kresd_refuses_a_changed_address(
    tmp_path: Path, tampered: tuple[DnsdiscProcess, TamperingProxy, list[str]]
) -> None:
    _, proxy, trust = tampered
    with validating_kresd(tmp_path, proxy.addr, trust) as resolver:
        check_tampering_refused(resolver, proxy)


@pytest.fixture(scope="module")
def signed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsdiscProcess]:
    tmp = tmp_path_factory.mktemp("genreport-signed")
    conf = tmp / "signed.yaml"
    conf.write_text(f"dnssec:\n  enabled: true\ndns:\n  nsid: {NSID}\n")
    with running(tmp, extra_args=["--config", str(conf)]) as srv:
        yield srv


@pytest.mark.parametrize("mode", ["default", "full"])
def test_genreport_on_a_signed_zone(signed_server: DnsdiscProcess, mode: str) -> None:
    """genreport built from ISC's source printed, for such a server, in default mode:
    ``dns=ok edns=ok edns1=ok edns@512=ok ednsopt=ok edns1opt=ok do=ok ednsflags=ok
    optlist=ok,nsid,cookie,subnet signed=ok,yes ednstcp=ok`` (unsigned: ``signed=ok``), and
    ``ok`` for every probe of full mode."""
    names = DEFAULT if mode == "default" else FULL
    outs = {name: probe(signed_server, name) for name in names}
    line = report(outs, names)
    fields = dict(word.split("=", 1) for word in line.split())
    assert list(fields) == [*names[:-1], "signed", "ednstcp"], line
    assert {k: v for k, v in fields.items() if v.split(",")[0] != "ok"} == {}, (line, outs)
    assert line.endswith(" signed=ok,yes ednstcp=ok"), line
    # What the signed probes got, beyond genreport's verdicts: the SOA with its RRSIG for DO
    # (and CD kept for docd), the DNSKEY RRset with the KSK's RRSIG over TCP and within 512
    # bytes over UDP, and BADVERS, DO echoed, to EDNS version 1.
    checked = ["do", "edns@512", "ednstcp"] + (["docd", "edns1do"] if mode == "full" else [])
    for name in checked:
        out = outs[name][1]
        answer = section(out, "ANSWER")
        if name in ("do", "docd"):
            assert re.search(r"\tIN\tRRSIG\tSOA 13 2 ", answer), out
        if name == "docd":
            assert re.search(r";; flags:[^;]* cd[ ;]", out), out
        if name == "ednstcp":
            assert re.search(r"\tIN\tDNSKEY\t257 3 13 ", answer), out
            assert re.search(r"\tIN\tRRSIG\tDNSKEY 13 2 ", answer), out
        if name == "edns@512":
            # Two keys and a signature fit in 512 bytes: the whole signed RRset, no TC.
            assert not re.search(r";; flags:[^;]* tc[ ;]", out), out
            assert re.search(r"\tIN\tRRSIG\tDNSKEY 13 2 ", answer), out
        if name == "edns1do":
            assert "status: BADVERS" in out and re.search(r"; EDNS: [^\n]*flags: do", out), out


def test_the_report_says_signed_only_with_signatures() -> None:
    """``signed=ok,yes`` needs an RRSIG in the ``do`` reply's answer section: not one in its
    authority section, not none."""
    head = (
        ";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1\n"
        ";; flags: qr aa; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1\n"
        "; EDNS: version: 0, flags: do; udp: 1232\n"
    )
    soa = "svc.internal.\t5\tIN\tSOA\tns. h. 1 2 3 4 5\n"
    sig = "svc.internal.\t5\tIN\tRRSIG\tSOA 13 2 5 20261218130000 20261204130000 1 svc.internal. "
    sig += "AA==\n"
    dnskey = head + ";; ANSWER SECTION:\nsvc.internal.\t60\tIN\tDNSKEY\t257 3 13 AA==\n"
    names = ("do", "ednstcp")
    args = {name: PROBES[name].replace("<zone>", ZONE) for name in names}
    for do_out, want in (
        (head + ";; ANSWER SECTION:\n" + soa + sig, "signed=ok,yes"),
        (head + ";; ANSWER SECTION:\n" + soa + "\n;; AUTHORITY SECTION:\n" + sig, "signed=ok"),
        (head + ";; ANSWER SECTION:\n" + soa, "signed=ok"),
    ):
        outs = {"do": (args["do"], do_out), "ednstcp": (args["ednstcp"], dnskey)}
        assert report(outs, names) == f"do=ok {want} ednstcp=ok"
