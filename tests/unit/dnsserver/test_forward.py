"""The relay's pieces: who may recurse, and relayed UDP replies cut to the client's size."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from dnsdisc.dnsserver.forward import Forwarder, fit_udp, refused
from dnsdisc.netaddr import NetRules


def test_recursion_allow_matches_networks_and_v4_mapped_clients() -> None:
    fwd = Forwarder(
        (), allow=NetRules.parse(["10.0.0.0/8", "2001:db8::/32"], "", "recursion_allow")
    )
    assert fwd.allowed("10.1.2.3") and fwd.allowed("::ffff:10.1.2.3")
    assert fwd.allowed("2001:db8::5") and fwd.allowed("2001:db8::5%eth0")
    assert not fwd.allowed("192.0.2.1") and not fwd.allowed("::ffff:192.0.2.1")
    assert not fwd.allowed("not-an-address") and fwd.refused == 3


def _big_reply(query: dns.message.Message, records: int) -> bytes:
    reply = dns.message.make_response(query)
    texts = [f'"{i:03d}{"x" * 196}"' for i in range(records)]
    reply.answer.append(dns.rrset.from_text_list(query.question[0].name, 60, "IN", "TXT", texts))
    return reply.to_wire(max_size=65535)


def test_relayed_replies_are_cut_to_the_clients_udp_size() -> None:
    for edns, payload, limit in ((-1, 0, 512), (0, 4096, 1232), (0, 700, 700)):
        q = dns.message.make_query("big.example.", "TXT", use_edns=edns, payload=payload)
        out = fit_udp(q.to_wire(), _big_reply(q, 20))
        assert len(out) <= limit
        msg = dns.message.from_wire(out)
        assert msg.flags & dns.flags.TC and not msg.answer and msg.id == q.id
        assert (msg.edns >= 0) == (edns >= 0)
    small = _big_reply(dns.message.make_query("s.example.", "TXT"), 1)
    assert fit_udp(dns.message.make_query("s.example.", "TXT").to_wire(), small) == small


def test_refused_echoes_the_question() -> None:
    q = dns.message.make_query("x.example.", "A", use_edns=0)
    msg = dns.message.from_wire(refused(q.to_wire()))
    assert msg.rcode() == dns.rcode.REFUSED and msg.question == q.question and msg.edns == 0
