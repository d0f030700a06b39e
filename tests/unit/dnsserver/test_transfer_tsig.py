"""Queries signed with TSIG that are not transfers (a secondary's SOA query before it
transfers: BIND on every refresh, Knot after a NOTIFY) get signed replies (RFC 8945 5.3); BIND
and Knot drop an unsigned one ("expected a TSIG or SIG(0)", "failed to verify TSIG")."""

from __future__ import annotations

import base64

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig

from dnsdisc.dnsserver.settings import TsigKey
from dnsdisc.dnsserver.tsig import Tsig, ends_with_tsig
from tests.support.world import World, texts

SECRET = b"0123456789abcdef0123456789abcdef"
KEY = dns.tsig.Key("xfr-key.", base64.b64encode(SECRET).decode(), "hmac-sha256")
KEYRING = {dns.name.from_text("xfr-key."): KEY}


def world() -> World:
    w = World()
    tsig = Tsig((TsigKey("xfr-key", "hmac-sha256", SECRET),))
    w.responder.signed = tsig.signed  # as DnsFace wires it when keys are configured
    w.add("web", "a", address="10.0.0.1", port=80)
    return w


def signed_query(
    name: str, rdtype: str, key: dns.tsig.Key = KEY, use_edns: int | None = None
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=use_edns)
    query.use_tsig(key)
    query.to_wire()  # signs: query.mac is the request MAC the reply's signature covers
    return query


def test_ends_with_tsig_is_true_only_of_signed_messages() -> None:
    assert ends_with_tsig(signed_query("svc.internal.", "SOA").to_wire())
    assert ends_with_tsig(signed_query("svc.internal.", "SOA", use_edns=0).to_wire())
    assert not ends_with_tsig(dns.message.make_query("svc.internal.", "SOA").to_wire())
    assert not ends_with_tsig(dns.message.make_query("svc.internal.", "SOA", use_edns=0).to_wire())


def test_a_signed_soa_query_gets_a_signed_reply_over_udp_and_tcp() -> None:
    w = world()
    w.ask("svc.internal.", "SOA")  # an unsigned reply in the cache must not answer a signed one
    for tcp in (False, True):
        for edns in (None, 0):
            query = signed_query("svc.internal.", "SOA", use_edns=edns)
            reply = w.raw(query.to_wire(), tcp=tcp)
            assert reply is not None
            # Verified against the query's MAC, as a secondary does; raises if unsigned or bad.
            msg = dns.message.from_wire(reply, keyring=KEYRING, request_mac=query.mac)
            assert msg.had_tsig and msg.rcode() == dns.rcode.NOERROR
            assert msg.answer[0].rdtype == dns.rdatatype.SOA
    # Any other question too, answered as unsigned ones are.
    query = signed_query("web.svc.internal.", "A")
    reply = w.raw(query.to_wire())
    assert reply is not None
    assert texts(dns.message.from_wire(reply, keyring=KEYRING, request_mac=query.mac)) == [
        "10.0.0.1"
    ]
    # Unsigned queries are untouched (and the signed ones did not land in the reply cache).
    assert not w.ask("svc.internal.", "SOA").had_tsig
    assert not w.ask("web.svc.internal.", "A").had_tsig


def test_a_bad_signature_on_a_query_gets_the_tsig_error() -> None:
    w = world()
    other = dns.tsig.Key("xfr-key.", base64.b64encode(b"x" * 32).decode(), "hmac-sha256")
    reply = w.raw(signed_query("svc.internal.", "SOA", key=other).to_wire())
    assert reply is not None
    msg = dns.message.from_wire(reply, keyring=False)
    assert msg.rcode() == dns.rcode.NOTAUTH and msg.tsig_error == dns.rcode.BADSIG
    unknown = dns.tsig.Key("nobody.", KEY.secret, "hmac-sha256")
    reply = w.raw(signed_query("svc.internal.", "SOA", key=unknown).to_wire())
    assert reply is not None
    msg = dns.message.from_wire(reply, keyring=False)
    assert msg.rcode() == dns.rcode.NOTAUTH and msg.tsig_error == dns.rcode.BADKEY


def test_without_keys_a_signed_query_is_answered_as_before() -> None:
    w = World()
    reply = w.raw(signed_query("svc.internal.", "SOA").to_wire())
    assert reply is not None
    msg = dns.message.from_wire(reply, keyring=False)
    assert msg.rcode() == dns.rcode.NOERROR and not msg.had_tsig


def test_badtime_is_signed_with_the_requests_time_and_ours_in_other_data() -> None:
    # RFC 8945 5.2.3: Time Signed is the client's (the request's), the server's time goes in
    # Other Data; the MAC covers the request's MAC (a client checks it with its own clock).
    import struct
    import time
    from unittest import mock

    w = world()
    query = dns.message.make_query("svc.internal.", "SOA")
    query.use_tsig(KEY)
    asked = int(time.time()) - 3600
    with mock.patch("time.time", return_value=asked):
        data = query.to_wire()
    reply = w.raw(data)
    assert reply is not None
    msg = dns.message.from_wire(reply, keyring=False)
    assert msg.rcode() == dns.rcode.NOTAUTH and msg.tsig_error == dns.rcode.BADTIME
    trd = msg.tsig[0]
    assert trd.time_signed == asked
    high, low = struct.unpack("!HI", trd.other)
    assert abs((high << 32 | low) - time.time()) < 5
    # The MAC checks as RFC 8945 5.3 has it: over the request MAC, the reply and its TSIG.
    ctx = dns.tsig.get_context(KEY)
    tsig_start = reply.rfind(b"\x07xfr-key\x00\x00\xfa")
    arcount = struct.unpack_from("!H", reply, 10)[0] - 1  # without the TSIG
    unsigned = reply[:10] + struct.pack("!H", arcount) + reply[12:tsig_start]
    ctx.update(struct.pack("!H", len(query.mac)) + query.mac)
    ctx.update(unsigned)
    ctx.update(b"\x07xfr-key\x00\x00\xff\x00\x00\x00\x00")
    ctx.update(dns.name.from_text("hmac-sha256.").to_wire() or b"")
    ctx.update(struct.pack("!HIH", 0, asked, trd.fudge))
    ctx.update(struct.pack("!HH", trd.error, len(trd.other)) + trd.other)
    ctx.verify(trd.mac)


def test_a_signed_udp_reply_that_the_tsig_would_push_past_the_size_is_truncated() -> None:
    # RFC 8945 5.3: when the TSIG does not fit, the reply is the question and a TSIG, TC set,
    # NOERROR; the client asks again over TCP. Before: a signed reply of more than the 512
    # bytes the client can take (or its EDNS size) was sent as it was.
    w = world()
    for n in range(2, 30):
        w.add("web", f"i{n}", address=f"10.0.0.{n}", port=80)
    fits = None
    for count in range(1, 40):  # a reply just under 512 bytes unsigned
        w.settings("web", max_answers=count)
        unsigned = w.raw(dns.message.make_query("web.svc.internal.", "A").to_wire())
        assert unsigned is not None
        if len(unsigned) > 512 - 40:
            fits = unsigned
            break
    assert fits is not None and len(fits) <= 512
    query = signed_query("web.svc.internal.", "A")
    reply = w.raw(query.to_wire())
    assert reply is not None and len(reply) <= 512
    msg = dns.message.from_wire(reply, keyring=KEYRING, request_mac=query.mac)
    assert msg.had_tsig and msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.TC and not msg.answer
    # Over TCP the whole answer, signed.
    reply = w.raw(query.to_wire(), tcp=True)
    assert reply is not None
    msg = dns.message.from_wire(reply, keyring=KEYRING, request_mac=query.mac)
    assert not msg.flags & dns.flags.TC and msg.answer
