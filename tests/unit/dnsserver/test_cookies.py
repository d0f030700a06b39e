"""DNS cookies: RFC 9018's test vectors, the verdicts of RFC 7873 5.2, and the option added to an
encoded reply, read back by dnspython."""

from __future__ import annotations

import dns.edns
import dns.message
import dns.rcode
import pytest

from dnsdisc.dnsserver.cookies import Cookies, Verdict, find, may_carry, packed_address

SECRET = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
CLIENT = bytes.fromhex("2464c4abcf10c957")
IP = bytes([198, 51, 100, 100])
A1 = bytes.fromhex("010000005cf79f111f8130c3eee29480")  # RFC 9018 A.1, at 1559731985
A2 = bytes.fromhex("010000005cf7a871d4a564a1442aca77")  # A.2: renewed at 1559734385


def at(now: float) -> Cookies:
    return Cookies(SECRET, clock=lambda: now)


def query(cookie: bytes | None, *more: dns.edns.Option) -> bytes:
    options: list[dns.edns.Option] = list(more)
    if cookie is not None:
        options.insert(0, dns.edns.GenericOption(dns.edns.COOKIE, cookie))
    return dns.message.make_query("web.svc.internal.", "A", use_edns=0, options=options).to_wire()


def test_the_rfc_9018_vectors() -> None:
    assert at(0).server_cookie(CLIENT, bytes([198, 51, 100, 100]), 1559731985) == A1
    # A.1: a client cookie alone learns the server cookie.
    assert at(1559731985).judge(CLIENT, IP) == (Verdict.CLIENT, CLIENT + A1)
    # Within half an hour it is echoed; 40 minutes on (A.2) it is valid and renewed.
    assert at(1559731985 + 600).judge(CLIENT + A1, IP) == (Verdict.VALID, CLIENT + A1)
    assert at(1559734385).judge(CLIENT + A1, IP) == (Verdict.VALID, CLIENT + A2)


def test_wrong_stale_and_foreign_cookies_are_not_valid() -> None:
    now = 1559731985
    fresh = CLIENT + A1
    tampered = fresh[:-1] + bytes([fresh[-1] ^ 1])
    assert at(now).judge(tampered, IP)[0] is Verdict.CLIENT
    assert at(now).judge(fresh, bytes([198, 51, 100, 101]))[0] is Verdict.CLIENT  # another
    assert at(now + 3601).judge(fresh, IP)[0] is Verdict.CLIENT  # older than an hour
    assert at(now - 299).judge(fresh, IP)[0] is Verdict.VALID  # 5 minutes ahead is tolerated
    assert at(now - 301).judge(fresh, IP)[0] is Verdict.CLIENT
    other = Cookies(bytes(16), clock=lambda: now)  # another secret: another node's cookie
    assert other.judge(fresh, IP)[0] is Verdict.CLIENT
    # A server cookie of another shape (8..32 bytes) is not ours either, but well-formed.
    assert at(now).judge(CLIENT + bytes(8), IP)[0] is Verdict.CLIENT
    assert at(now).judge(CLIENT + bytes(32), IP)[0] is Verdict.CLIENT
    for bad in (bytes(7), bytes(9), bytes(15), bytes(41)):
        assert at(now).judge(bad, IP)[0] is Verdict.MALFORMED


def test_the_option_is_found_quickly_or_by_walking() -> None:
    plain = dns.message.make_query("web.svc.internal.", "A").to_wire()
    bare_edns = dns.message.make_query("web.svc.internal.", "A", use_edns=0).to_wire()
    assert not may_carry(plain) and not may_carry(bare_edns)
    assert may_carry(query(CLIENT))
    assert find(query(CLIENT)) == (CLIENT, 1232)
    assert find(query(CLIENT + A1)) == (CLIENT + A1, 1232)
    padded = query(CLIENT, dns.edns.GenericOption(12, bytes(20)))
    assert may_carry(padded) and find(padded) == (CLIENT, 1232)
    assert find(query(None, dns.edns.GenericOption(12, bytes(4)))) is None


def _reply_to(wire: bytes) -> bytes:
    q = dns.message.from_wire(wire)
    r = dns.message.make_response(q)
    r.use_edns(0, payload=1232, options=[])
    return r.to_wire()


def test_the_option_is_added_to_the_encoded_reply() -> None:
    cookies = at(1559731985)
    wire = query(CLIENT)
    reply, verdict = cookies.answer(wire, _reply_to(wire), IP)
    assert verdict is Verdict.CLIENT
    got = dns.message.from_wire(reply)
    assert [(o.otype, o.to_wire()) for o in got.options] == [(dns.edns.COOKIE, CLIENT + A1)]
    # Back with the cookie: valid, echoed.
    back = query(CLIENT + A1)
    reply, verdict = cookies.answer(back, _reply_to(back), IP)
    assert verdict is Verdict.VALID
    assert dns.message.from_wire(reply).options[0].to_wire() == CLIENT + A1
    # A malformed option: FORMERR with the question.
    bad = query(bytes(5))
    reply, verdict = cookies.answer(bad, _reply_to(wire), IP)  # dnspython refuses to read it
    assert verdict is Verdict.MALFORMED
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


def test_badcookie_carries_a_fresh_cookie() -> None:
    cookies = at(1559731985)
    reply = cookies.badcookie(query(CLIENT + bytes(16)), IP)
    assert reply is not None
    got = dns.message.from_wire(reply)
    assert got.rcode() == dns.rcode.BADCOOKIE
    assert got.options[0].to_wire() == CLIENT + A1
    assert got.question[0].name.to_text() == "web.svc.internal."
    assert cookies.badcookie(query(None), IP) is None


def test_addresses_are_packed_and_v4_mapped_ones_unmapped() -> None:
    assert packed_address("198.51.100.100") == IP
    assert packed_address("::ffff:198.51.100.100") == IP
    assert packed_address("2001:db8::1%eth0") == bytes.fromhex("20010db8" + "0" * 23 + "1")
    assert packed_address("-") == b""
    assert at(0).judge(CLIENT, b"") == (Verdict.CLIENT, b"")


def test_a_secret_is_16_bytes_and_never_shown() -> None:
    with pytest.raises(ValueError):
        Cookies(bytes(8))
    assert SECRET.hex() not in repr(at(0))


def test_a_run_of_queries_with_one_cookie_costs_one_hash() -> None:
    now = [1559731985]
    cookies = Cookies(SECRET, clock=lambda: now[0])
    hashed = []
    original = cookies.server_cookie

    def counting(client: bytes, address: bytes, stamp: int) -> bytes:
        hashed.append(stamp)
        return original(client, address, stamp)

    cookies.server_cookie = counting  # type: ignore[method-assign]
    for _ in range(50):
        assert cookies.judge(CLIENT + A1, IP) == (Verdict.VALID, CLIENT + A1)
        assert cookies.judge(CLIENT, IP) == (Verdict.CLIENT, CLIENT + A1)
    assert len(hashed) == 2  # one check, one cookie made
    tampered = CLIENT + A1[:-1] + b"\x00"
    for _ in range(3):
        assert cookies.judge(tampered, IP)[0] is Verdict.CLIENT  # never remembered as valid
    # Half an hour on, the remembered verdict has run out: checked again, and renewed.
    now[0] += 2400
    assert cookies.judge(CLIENT + A1, IP) == (Verdict.VALID, CLIENT + A2)
    now[0] += 3600
    assert cookies.judge(CLIENT + A1, IP)[0] is Verdict.CLIENT  # older than an hour


def test_the_steady_state_reads_the_ticked_clock() -> None:
    now = [1559731985]
    cookies = Cookies(SECRET, clock=lambda: now[0])
    back = query(CLIENT + A1)
    for _ in range(2):
        reply, verdict = cookies.answer(back, _reply_to(back), IP)
        assert verdict is Verdict.VALID
        assert dns.message.from_wire(reply).options[0].to_wire() == CLIENT + A1
    now[0] += 2400  # past the renewal point: once the clock is ticked, the cookie is renewed
    cookies.tick()
    reply, verdict = cookies.answer(back, _reply_to(back), IP)
    assert verdict is Verdict.VALID
    assert dns.message.from_wire(reply).options[0].to_wire() == CLIENT + A2
