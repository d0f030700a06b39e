"""DNSSEC (#24) against real validators: dnsdisc with dnssec.enabled, its DS records (from
`dnsdisc dnssec ds`) as unbound's trust anchors, and every kind of answer validating as secure
(AD) through unbound and as "fully validated" through delv: balanced A with max_answers 1 and 2
over many queries (several subsets), AAAA, SRV with glue, TXT, PTR, NODATA, a name that does not
exist and an empty non-terminal."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.support.frontends import Resolver, unbound
from tests.support.helpers import require_tool
from tests.support.validators import signed_dnsdisc


def ask(resolver: Resolver, name: str, rdtype: str) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, want_dnssec=True, payload=1232)
    return dns.query.tcp(q, "127.0.0.1", port=resolver.port, timeout=5)


def secure(reply: dns.message.Message) -> bool:
    return bool(reply.flags & dns.flags.AD) and reply.rcode() == dns.rcode.NOERROR


def test_every_kind_of_answer_validates_through_unbound_and_delv(tmp_path: Path) -> None:
    with signed_dnsdisc(tmp_path) as (server, ds):
        assert server.http("PUT", "/v1/services/one", {"max_answers": 1}).status in (200, 201)
        assert server.http("PUT", "/v1/services/two", {"max_answers": 2}).status in (200, 201)
        for n in range(4):
            for svc in ("one", "two"):
                server.register(svc, f"{svc}{n}", address=f"10.0.0.{n + 1}", port=80 + n)
        server.register("v6", "a", address="2001:db8::1", port=443)
        server.register("web", "w0", address="10.0.1.1", port=8080, meta={"v": "1"})
        anchors = [line.replace(" IN DS ", " DS ") for line in ds]
        with unbound(tmp_path, server, trust_anchors=anchors) as resolver:
            answers: dict[str, set[str]] = {"one": set(), "two": set()}
            for _ in range(20):
                for svc in ("one", "two"):
                    reply = ask(resolver, f"{svc}.svc.internal.", "A")
                    assert secure(reply), (svc, reply)
                    [rrset] = [r for r in reply.answer if r.rdtype == dns.rdatatype.A]
                    answers[svc].add(" ".join(sorted(rd.to_text() for rd in rrset)))
            assert len(answers["one"]) > 1 and len(answers["two"]) > 1  # several subsets
            for name, rdtype in (
                ("v6.svc.internal.", "AAAA"),
                ("_web._tcp.svc.internal.", "SRV"),
                ("w0.web.svc.internal.", "TXT"),
                ("1.1.0.10.in-addr.arpa.", "PTR"),
                ("web.svc.internal.", "MX"),  # NODATA
                ("nothing.svc.internal.", "A"),  # does not exist: compact denial
                ("_tcp.svc.internal.", "A"),  # an empty non-terminal
                ("svc.internal.", "DNSKEY"),
            ):
                reply = ask(resolver, name, rdtype)
                assert secure(reply), (name, rdtype, reply)
            assert "validation failure" not in resolver.log()
            delv = require_tool("delv")
            anchor_file = tmp_path / "anchors.conf"
            entries = "".join(
                f'  {d.split()[0]} static-ds {" ".join(d.split()[3:6])} "{d.split()[6]}";\n'
                for d in ds
            )
            anchor_file.write_text(f"trust-anchors {{\n{entries}}};\n")
            for name, rdtype in (("one.svc.internal", "A"), ("_web._tcp.svc.internal", "SRV"),
                                 ("nothing.svc.internal", "A")):  # fmt: skip
                out = subprocess.run(
                    [delv, "@127.0.0.1", "-p", str(resolver.port), "-a", str(anchor_file),
                     "+root=svc.internal", name, rdtype],
                    capture_output=True, text=True, timeout=20,
                )  # fmt: skip
                text = out.stdout + out.stderr
                assert "fully validated" in text, (name, rdtype, text)
