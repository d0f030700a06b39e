"""DNS cookies (RFC 7873) with server cookies made as RFC 9018 says, so that every process and
every node holding the same secret (``dns.cookie_secret``) makes and accepts the same cookies.

A client cookie (8 bytes) gets a server cookie back: version 1, three zero bytes, a timestamp
and SipHash-2-4 (keyed with the secret) of the client cookie, those 8 bytes and the client's
address. A query that brings a server cookie this server made, less than an hour ago for this
client cookie and address, comes from an address that took a reply from us: the rate limit lets
it through (as BIND does). A wrong or stale server cookie is treated as none (RFC 7873 5.2.3,
the third choice): the query is answered with a fresh cookie. A COOKIE option of a length no
cookie has gets FORMERR (5.2.2). When the rate limit would slip a reply to a client that sent a
client cookie, it gets BADCOOKIE with a fresh cookie instead of TC (5.4): a client that does
cookies retries with it and is then exempt.

Replies are made (and cached) without the option; it is added to the encoded reply, whose OPT
record is always its last record and carries no option.
"""

from __future__ import annotations

import enum
import hmac
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from siphash24 import siphash24

from dnsdisc.dnsserver import ednsopt

OPTION = 10  # the COOKIE EDNS option code
VERSION = 1
# RFC 9018 4.3: a server cookie is good for an hour, and up to 5 minutes ahead of our clock
# (another node's); one older than half an hour is replaced by a fresh one in the reply.
LIFETIME = 3600
SKEW = 300
RENEW = 1800
BADCOOKIE = 23  # extended rcode: 7 in the header, 1 in the OPT record
# A resolver sends one cookie with query after query. What a SipHash decided is remembered per
# cookie and address (a lookup costs a tenth of a hash), at most MEMORY of each kind, forgotten
# all at once when full; a server cookie made for a client cookie and address is handed out
# again for REUSE seconds (RFC 9018 asks for none newer than that).
MEMORY = 4096
REUSE = 60
FORMERR = 1

_OPT_START = b"\x00\x00\x29"  # an OPT record: the root, type 41
# How an OPT record with one COOKIE option ends a query: its RDLENGTH, then the option's code
# and length, for a client cookie alone and for one with a 16-byte (RFC 9018) server cookie.
_ONLY_CLIENT = b"\x00\x0c\x00\x0a\x00\x08"
_WITH_SERVER = b"\x00\x1c\x00\x0a\x00\x18"
_U16 = struct.Struct("!H")
_HEAD = struct.Struct("!HHHHHH")
_OPT_TAIL = struct.Struct("!HHIH")  # type, class (the UDP size), TTL, RDLENGTH
_TS = struct.Struct("!I")


class Verdict(enum.IntEnum):
    NONE = 0  # no COOKIE option
    CLIENT = 1  # a client cookie, and no server cookie or one we do not accept
    VALID = 2  # a server cookie we made for this client cookie and address
    MALFORMED = 3


_NONE, _CLIENT, _VALID, _MALFORMED = Verdict  # looked up as globals on the hot path


Malformed = ednsopt.Malformed


def may_carry(data: bytes) -> bool:
    """Cheap: whether the query may hold an EDNS option (no additional record, or an OPT record
    last with none, cannot). The reply path looks closer only when it may."""
    if data[10:12] == b"\x00\x00":
        return False
    return not (data[-11:-8] == _OPT_START and data[-2:] == b"\x00\x00")


def find(data: bytes) -> tuple[bytes, int] | None:
    """The COOKIE option's data in the query and the query's UDP size; None without one.
    Raises Malformed for a query whose records cannot be walked."""
    # The usual layouts, found without walking the message: one option, in the last OPT (this
    # runs for every query that carries a cookie, so it is written out).
    tail = data[-39:]
    if tail[9:15] == _WITH_SERVER and tail[:3] == _OPT_START:
        return tail[15:], tail[3] << 8 | tail[4]
    tail = data[-23:]
    if tail[9:15] == _ONLY_CLIENT and tail[:3] == _OPT_START:
        return tail[15:], tail[3] << 8 | tail[4]
    return ednsopt.find(data, OPTION)


_MAPPED = b"\x00" * 10 + b"\xff\xff"


def packed_address(host: str) -> bytes:
    """The client's address as the hash takes it: 4 or 16 bytes (a v4-mapped one as IPv4);
    b"" for what is no IP address."""
    host = host.partition("%")[0]
    try:
        return unmapped(socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host))
    except OSError:
        return b""


def unmapped(address: bytes) -> bytes:
    """``::ffff:a.b.c.d`` (how a dual-stack socket names an IPv4 client) as the 4 bytes."""
    return address[12:] if len(address) == 16 and address[:12] == _MAPPED else address


class Cookies:
    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        if len(secret) != 16:
            raise ValueError("a cookie secret is 16 bytes")
        self._secret = secret
        self.clock = clock
        # The time in whole seconds, as the steady state reads it: kept by ``tick`` (the DNS
        # face calls it every second), so a query does not pay for reading the clock.
        self.now = int(clock())
        self._valid: dict[bytes, int] = {}  # cookie + address: echoed as valid until then
        self._made: dict[bytes, tuple[int, bytes]] = {}  # client + address: (when, cookie)

    def __repr__(self) -> str:
        return "Cookies(<secret>)"

    def tick(self) -> None:
        self.now = int(self.clock())

    def server_cookie(self, client: bytes, address: bytes, now: int) -> bytes:
        head = b"\x01\x00\x00\x00" + _TS.pack(now & 0xFFFFFFFF)
        digest: bytes = siphash24(client + head + address, key=self._secret).digest()
        return head + digest

    def judge(self, option: bytes, address: bytes) -> tuple[Verdict, bytes]:
        """The verdict on a query's COOKIE option data from ``address`` (packed, see
        ``packed_address``), and the option data to answer with."""
        if len(option) != 8 and not 16 <= len(option) <= 40:
            return _MALFORMED, b""
        client = option[:8]
        if not address:
            return _CLIENT, b""  # not an IP client (a test harness): no cookie back
        now = int(self.clock())
        if len(option) == 24:
            key = option + address
            if now <= self._valid.get(key, -1):
                return _VALID, option
            if option[8:12] == b"\x01\x00\x00\x00":
                stamp = _TS.unpack_from(option, 12)[0]
                age = (now - stamp) & 0xFFFFFFFF  # serial arithmetic (RFC 1982), as 9018 says
                fresh = age <= LIFETIME or 0x100000000 - age <= SKEW
                if fresh and hmac.compare_digest(
                    option[8:], self.server_cookie(client, address, stamp)
                ):
                    if age <= RENEW:
                        _remember(self._valid, key, now + RENEW - age)
                        return _VALID, option
                    if age <= LIFETIME:
                        return _VALID, self._fresh(client, address, now)
                    return _VALID, option  # made by a node whose clock is ahead
        return _CLIENT, self._fresh(client, address, now)

    def _fresh(self, client: bytes, address: bytes, now: int) -> bytes:
        """A server cookie for this client cookie and address: one made in the last REUSE
        seconds, or a new one."""
        key = client + address
        made = self._made.get(key)
        if made is not None and 0 <= now - made[0] < REUSE:
            return made[1]
        ours = client + self.server_cookie(client, address, now)
        _remember(self._made, key, (now, ours))
        return ours

    def answer(
        self, query: bytes, reply: bytes, address: bytes, tcp: bool = False, present: int = 0
    ) -> tuple[bytes, Verdict]:
        """``reply`` with the COOKIE option this query earns, and the verdict on the query.
        ``present``: bytes of options the reply's OPT record (its last record) already holds."""
        # A resolver's steady state, written out (it runs for each of its queries): the cookie
        # we gave it, checked within the last half hour, in the usual place of the query.
        tail = query[-39:]
        if (
            not present
            and tail[9:15] == _WITH_SERVER
            and tail[:3] == _OPT_START
            and self.now <= self._valid.get(tail[15:] + address, -1)
            and reply[-11:-8] == _OPT_START
            and (tcp or len(reply) <= 484 or len(reply) + 28 <= (tail[3] << 8 | tail[4]))
        ):
            return reply[:-2] + tail[9:], _VALID
        try:
            found = find(query)
        except Malformed:
            return reply, _NONE  # the responder has said what it thinks of the query
        if found is None:
            return reply, _NONE
        option, udp_size = found
        verdict, ours = self.judge(option, address)
        if verdict is _MALFORMED:
            return error(query, FORMERR), verdict
        # Our replies' OPT record is last: its 11 bytes, then the options it holds, end it.
        opt = len(reply) - 11 - present
        if ours and reply[opt : opt + 3] == _OPT_START:
            # Our option is always a client cookie and a 16-byte server cookie.
            with_cookie = b"".join(
                (
                    reply[: opt + 9],
                    _U16.pack(present + 28),
                    reply[opt + 11 :],
                    _WITH_SERVER[2:],
                    ours,
                )
            )
            # Over UDP the client's size holds (the reply was cut to it before the option);
            # without room the reply goes without the option, as from a server without cookies.
            if len(with_cookie) <= (65535 if tcp else max(udp_size, 512)):
                return with_cookie, verdict
        return reply, verdict

    def badcookie(self, query: bytes, address: bytes) -> bytes | None:
        """BADCOOKIE with a fresh cookie for a query with a client cookie (RFC 7873 5.4), in
        place of a slipped TC reply; None when the query has none."""
        try:
            found = find(query)
        except Malformed:
            return None
        if found is None:
            return None
        verdict, ours = self.judge(found[0], address)
        if verdict is Verdict.MALFORMED or not ours:
            return None
        return error(query, BADCOOKIE, _option(ours))


def _remember(memory: dict[bytes, Any], key: bytes, value: Any) -> None:
    if len(memory) >= MEMORY:
        memory.clear()
    memory[key] = value


def _option(data: bytes) -> bytes:
    return _U16.pack(OPTION) + _U16.pack(len(data)) + data


def error(query: bytes, rcode: int, options: bytes | None = None) -> bytes:
    """A reply with only the question (if readable) and, for ``options``, an OPT record; the
    extended rcode's upper bits go into the OPT record."""
    qid, flags = struct.unpack_from("!HH", query)
    end = 12
    try:
        if _HEAD.unpack_from(query)[2]:
            end = ednsopt.skip_name(query, 12) + 4
    except IndexError:
        end = 12
    question = query[12:end] if end <= len(query) else b""
    out_flags = 0x8000 | (flags & 0x7900) | (rcode & 0xF)  # QR, opcode, RD
    ar = 1 if options is not None else 0
    head = _HEAD.pack(qid, out_flags, 1 if question else 0, 0, 0, ar)
    if options is None:
        return head + question
    opt = b"\x00" + _OPT_TAIL.pack(41, 1232, (rcode >> 4) << 24, len(options)) + options
    return head + question + opt
