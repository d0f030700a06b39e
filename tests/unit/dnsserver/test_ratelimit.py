"""Response rate limiting: a token bucket per (client prefix, response), with slip."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from dnsdisc.dnsserver.ratelimit import ALLOW, DROP, SLIP, RateLimiter, truncated


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reply(name: str = "web.svc.internal.", rcode: int = 0) -> bytes:
    msg = dns.message.make_response(dns.message.make_query(name, "A"))
    msg.set_rcode(rcode)
    return msg.to_wire()


def test_rate_then_slip_every_second_and_refill() -> None:
    clock = Clock()
    rrl = RateLimiter(5, slip=2, clock=clock)
    r = reply()
    verdicts = [rrl.check("192.0.2.7", r) for _ in range(11)]
    assert verdicts[:5] == [ALLOW] * 5
    assert verdicts[5:] == [DROP, SLIP, DROP, SLIP, DROP, SLIP]
    assert (rrl.slipped, rrl.dropped) == (3, 3)
    clock.now += 0.4  # 2 tokens back at 5/s
    assert [rrl.check("192.0.2.7", r) for _ in range(3)][:2] == [ALLOW, ALLOW]


def test_buckets_are_per_prefix_and_per_response() -> None:
    rrl = RateLimiter(1, slip=0, clock=Clock())
    r = reply()
    assert rrl.check("192.0.2.7", r) == ALLOW
    assert rrl.check("192.0.2.200", r) == DROP  # same /24
    assert rrl.check("198.51.100.1", r) == ALLOW  # another /24
    assert rrl.check("192.0.2.7", reply("api.svc.internal.")) == ALLOW  # another response
    assert rrl.check("192.0.2.7", reply(rcode=dns.rcode.NXDOMAIN)) == ALLOW  # another rcode
    # 0x20 case randomisation does not make a new response.
    assert rrl.check("192.0.2.7", reply("WeB.svc.internal.")) == DROP
    assert rrl.check("2001:db8:0:1::1", r) == ALLOW
    assert rrl.check("2001:db8:0:1::2", r) == DROP  # same /56


def test_slip_reply_is_an_empty_truncated_answer() -> None:
    full = reply()
    slip = dns.message.from_wire(truncated(full))
    assert slip.flags & dns.flags.TC and not slip.answer
    assert slip.question[0].name.to_text() == "web.svc.internal."
    assert slip.id == dns.message.from_wire(full).id


def test_header_only_replies_are_limited_too() -> None:
    rrl = RateLimiter(1, slip=1, clock=Clock())
    bare = bytes.fromhex("abcd8001000000000000000000")[:12]
    assert rrl.check("192.0.2.1", bare) == ALLOW
    assert rrl.check("192.0.2.1", bare) == SLIP
    assert truncated(bare)[:2] == b"\xab\xcd"


# -- found in review: each of these failed before its fix --------------------------------------


def test_rate_limit_is_not_bypassed_by_random_names() -> None:
    rrl = RateLimiter(5, slip=0, clock=Clock())
    allowed = sum(
        rrl.check("192.0.2.1", reply(f"r{i}.svc.internal.", dns.rcode.NXDOMAIN)) == ALLOW
        for i in range(1000)
    )
    assert allowed == 5


def test_v4_mapped_clients_are_limited_by_their_ipv4_prefix() -> None:
    from dnsdisc.dnsserver.ratelimit import ALLOW, DROP, RateLimiter, unmapped

    now = [0.0]
    limiter = RateLimiter(1, slip=0, clock=lambda: now[0])
    reply = bytes.fromhex("0001818000010001000000000377656200000100 01".replace(" ", ""))
    assert limiter.check("::ffff:10.0.1.1", reply) == ALLOW
    assert limiter.check("10.0.1.2", reply) == DROP  # the same /24, mapped or not
    assert limiter.check("::ffff:10.0.2.1", reply) == ALLOW  # another /24: its own bucket
    assert unmapped("::ffff:192.0.2.1") == "192.0.2.1" and unmapped("2001:db8::1") == "2001:db8::1"


def test_a_packed_address_keys_the_same_buckets_as_its_text() -> None:
    # check_packed (the UDP worker's: the address as the socket gives it, no text parsed) and
    # check must count a client in one bucket, IPv4, IPv6 and v4-mapped alike.
    from dnsdisc.dnsserver.cookies import packed_address

    rrl = RateLimiter(1, slip=0, clock=Clock())
    r = reply()
    assert rrl.check_packed(packed_address("192.0.2.7"), r) == ALLOW
    assert rrl.check("192.0.2.200", r) == DROP  # the same /24, by text
    assert rrl.check_packed(packed_address("::ffff:192.0.2.9"), r) == DROP  # mapped: the same
    assert rrl.check_packed(packed_address("192.0.3.1"), r) == ALLOW  # another /24
    assert rrl.check("2001:db8:0:1::1", r) == ALLOW
    assert rrl.check_packed(packed_address("2001:db8:0:1:ff::2"), r) == DROP  # the same /56
    assert rrl.check_packed(packed_address("2001:db8:0:100::1"), r) == ALLOW  # another /56
    assert rrl.check_packed(b"", r) == ALLOW  # no address: nothing to key by
    assert len(rrl.buckets) == 4  # two /24s, two /56s
