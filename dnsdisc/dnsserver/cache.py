"""The reply cache: replies the responder has already encoded, by normalised question, until a
name changes; bounded in bytes.

A query is keyed (``key_of``) by what its reply depends on: the question's name lower-cased,
its type and class, the RD and CD bits (echoed), EDNS and its DO bit (echoed), the transport, and
for UDP the size class of the client's payload size (``udp_limit``: the reply limit is the
class's floor, so that every query of a class gets the same reply). Odd queries are answered
without the cache: other opcodes, QR set, records besides one OPT, EDNS versions above 0,
options other than ``_USUAL_OPTIONS``, packets over ``MAX_KEYED`` bytes. Of those the reply
depends on NSID alone (RFC 5001: it carries our identifier), which is in the key; an option that
changes a reply must go in the key first. Replies keep the EDNS options they were made with
(``CachedQuery.options``: their bytes, at the end of the reply's OPT record, its last record), so
that what is added after (an ECS echo, a cookie) goes behind them.

Replies are kept without their ID, with the question as the key's first query spelled it. A
query sent again byte for byte (after the ID) is found with one lookup of its bytes (``udp``,
``tcp``: a few exact queries per key) and answered as before; another spelling is found by its
key and its question patched in from the query (0x20 resolvers check the letter case).
Compression pointers into the question stay valid: its labels lie where they lie in every
spelling.

Under one key, only the balanced RRset draws an order, and the reply for that order is reused,
or encoded once and kept (``CachedQuery.replies``). A reply is kept only if its order has no
more places than the reply could show (a 5,000-long order of a large service is not kept). The
index owns one ``ReplyCache`` and empties it on every change of a name (``forget``); the
responder reads the tables directly (its hit path is a lookup) and writes through ``store``,
``alias`` and ``discard``. ``size`` counts the bytes held, objects included (a conservative
estimate); past ``limit`` the oldest keys go first.
"""

from __future__ import annotations

from collections import OrderedDict

from dnsdisc.dnsserver.rrset import RRSet, cached_orders
from dnsdisc.dnsserver.settings import REPLY_CACHE_BYTES

# Longer queries are answered without the cache: a name of 255 octets with a cookie fits.
MAX_KEYED = 512
# UDP payload sizes of an EDNS reply (the floors of the size classes); 1232 and above: 1232.
EDNS_SIZE = 1232
# EDNS options a keyed query may carry: client subnet (answered without it, and echoed after:
# see ecs.py), cookie (added after: cookies.py), TCP keepalive, padding, none of which changes
# the reply made from the index; and NSID, which does, and is the key's bit _NSID_BIT.
_USUAL_OPTIONS = frozenset({3, 8, 10, 11, 12})
_NSID = 3
_NSID_BIT = 64

# Exact queries indexed to one key at most (see ReplyCache.alias).
MAX_RAWS = 8
# Estimated bytes of the objects around each kept reply, key and exact query (tuples, dict
# slots, the entry), measured with tracemalloc on CPython 3.11 and rounded up (tests check it).
REPLY_OVERHEAD = 320
KEY_OVERHEAD = 640
RAW_OVERHEAD = 160
# An order's place: its slot in the tuple and the int, which an order drawn afresh owns.
PLACE_BYTES = 40
# The most places a reply can show: each record takes at least a 2-byte owner and 10 bytes.
_FIT_UDP = EDNS_SIZE // 12 + 1
_FIT_TCP = 65535 // 12 + 1

# The header's four counts of a keyed query: one question, no records; or one OPT.
_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_WITH_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"
# The 3 bytes an OPT record starts with: the root, type 41.
_OPT_START = b"\x00\x00\x29"
# The last byte of a key: RD (1), CD (2), DO (4), the size class (see key_of) times 8, NSID (64).
_KEY_BYTE = [bytes((i,)) for i in range(128)]
_TCP_PLAIN, _TCP_EDNS = 1 << 3, 6 << 3

Order = tuple[int, ...]  # indices into an RRset's members, as RRSet.next_order draws them
StatKey = tuple[int, int]  # (qtype, rcode), as QueryStats counts a reply
# One encoded reply: without its ID, with its stats key and whether TC is set.
CachedReply = tuple[bytes, StatKey, bool]


def udp_limit(udp_size: int) -> int:
    """The payload a UDP reply to an EDNS query may take: the floor of the size class of the
    client's ``udp_size`` (512, 768, 1024, or 1232 for 1232 and above). A server may send less
    than the client offers (RFC 6891 7); classes keep the cache's keys few."""
    if udp_size >= EDNS_SIZE:
        return EDNS_SIZE
    return max(512, udp_size & 0xFF00)


def key_of(data: bytes, tcp: bool) -> bytes | None:
    """The cache key of a query (see the module's docstring); None: answer it uncached.

    The name ends at its first zero octet. A name with a zero octet inside a label makes this
    wrong; such a key cannot equal the key of a well-formed name (the same octets would parse
    the same way), and ``store`` keeps no reply for it."""
    size = len(data)
    if not 17 <= size <= MAX_KEYED or data[2] & 0xF8:  # QR or an opcode other than QUERY
        return None
    end = data.find(0, 12)
    if end < 0:
        return None
    counts = data[4:12]
    bits = (data[2] & 0x01) | (data[3] & 0x10) >> 3  # RD, CD
    if counts == _PLAIN:
        if size != end + 5:
            return None
        bits |= _TCP_PLAIN if tcp else 0
    elif counts == _WITH_OPT:
        opt = end + 5
        if size < opt + 11 or data[opt : opt + 3] != _OPT_START or data[opt + 6]:  # version
            return None
        options = opt + 11
        if size != options + (data[opt + 9] << 8 | data[opt + 10]):
            return None
        if size > options:
            usual = _usual(data, options, size)
            if usual < 0:
                return None
            bits |= usual
        if data[opt + 7] & 0x80:  # DO
            bits |= 4
        if tcp:
            bits |= _TCP_EDNS
        else:
            payload = data[opt + 3] << 8 | data[opt + 4]
            bits |= 40 if payload >= EDNS_SIZE else max(2, payload >> 8) << 3
    else:
        return None
    return data[12:end].lower() + data[end : end + 5] + _KEY_BYTE[bits]


def _usual(data: bytes, pos: int, end: int) -> int:
    """-1 unless the EDNS options from ``pos`` to ``end`` are all usual ones, well framed; else
    the key's bits they set (``_NSID_BIT`` for an NSID option, whatever it holds: see nsid.py)."""
    bits = 0
    while pos < end:
        if pos + 4 > end:
            return -1
        code = data[pos] << 8 | data[pos + 1]
        if code not in _USUAL_OPTIONS:
            return -1
        if code == _NSID:
            bits = _NSID_BIT
        pos += 4 + (data[pos + 2] << 8 | data[pos + 3])
    return bits if pos == end else -1


def _name_end(data: bytes) -> int:
    """Where the question's name really ends (the offset of its last octet), -1 if it runs
    past the packet."""
    pos, size = 12, len(data)
    while pos < size:
        length = data[pos]
        if length == 0:
            return pos
        pos += length + 1
    return -1


class CachedQuery:
    """The replies already encoded for one key: by the order its balanced RRset drew (``()``
    when nothing is balanced), each without its ID, with the question as ``spelled`` (the
    first query's, from 12 to ``qend``); ``raws``, the exact queries (after the ID) indexed to
    it; ``size``, the bytes counted for all of it; ``options``, the bytes of EDNS options that
    end each of its replies (NSID, extended errors: the same for every order of one key, as
    they depend on the key and on what empties the cache)."""

    __slots__ = ("key", "options", "qend", "raws", "replies", "rrset", "size", "spelled", "tcp")

    def __init__(
        self,
        key: bytes,
        rrset: RRSet | None,
        data: bytes,
        qend: int,
        tcp: bool,
        options: int = 0,
    ) -> None:
        self.key = key
        self.rrset = rrset
        self.options = options
        self.qend = qend
        self.spelled = data[12:qend]
        self.tcp = tcp
        self.replies: dict[Order, CachedReply] = {}
        self.raws: list[bytes] = []
        self.size = KEY_OVERHEAD + len(key) + qend


def _reply_size(order: Order, reply: CachedReply) -> int:
    return REPLY_OVERHEAD + len(reply[0]) + PLACE_BYTES * len(order)


class ReplyCache:
    """Cached queries by key, oldest first, in ``table``; the same entries by the exact bytes of
    queries after the ID in ``udp`` and ``tcp`` (a query sent again is found with one lookup,
    and its reply needs no patching); ``size`` the bytes counted for all of them (within
    ``limit`` after a store) and ``evicted`` the keys dropped to stay within it.

    Invariants: ``size`` is the sum of ``CachedQuery.size`` over ``table``; every entry of
    ``udp`` and ``tcp`` is in ``table`` and lists its key there in ``raws``; the three tables
    are emptied in place, never replaced, so that a reader may keep references to them."""

    __slots__ = ("evicted", "limit", "size", "table", "tcp", "udp")

    def __init__(self, limit: int = REPLY_CACHE_BYTES) -> None:
        self.table: OrderedDict[bytes, CachedQuery] = OrderedDict()
        self.udp: dict[bytes, CachedQuery] = {}
        self.tcp: dict[bytes, CachedQuery] = {}
        self.size = 0
        self.limit = limit
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.table)

    def forget(self) -> None:
        """Drop every reply: a name changed."""
        if self.table:  # else nothing was cached since the last time (a build installs many)
            self.table.clear()
            self.udp.clear()
            self.tcp.clear()
            self.size = 0

    def discard(self, entry: CachedQuery, order: Order) -> None:
        """Drop the reply for an order its RRset's pool has replaced: it would never be read.
        ``entry`` was just read from the tables."""
        reply = entry.replies.pop(order, None)
        if reply is not None:
            freed = _reply_size(order, reply)
            entry.size -= freed
            self.size -= freed

    def alias(self, entry: CachedQuery, data: bytes) -> None:
        """Index the query ``data``, found by its key and spelled as ``entry`` is, under its
        exact bytes too (a few per key: clients differ in EDNS options and flags). Nothing is
        evicted for it (the entry being answered could go): past the limit it is not indexed."""
        if len(entry.raws) < MAX_RAWS and self.size + RAW_OVERHEAD + len(data) <= self.limit:
            self._index(entry, data[2:])

    def _index(self, entry: CachedQuery, raw: bytes) -> None:
        (self.tcp if entry.tcp else self.udp)[raw] = entry
        entry.raws.append(raw)
        grown = RAW_OVERHEAD + len(raw)
        entry.size += grown
        self.size += grown

    def store(
        self,
        tcp: bool,
        key: bytes,
        data: bytes,
        entry: CachedQuery | None,
        drawn: RRSet | None,
        order: Order,
        reply: bytes,
        stat: StatKey,
        options: int = 0,
    ) -> None:
        """Keep ``reply``, just encoded for the query ``data`` of ``key`` (its entry, read from
        the tables for this query, if it had one) with ``order`` of ``drawn``, the one RRset it
        ordered (None: nothing was ordered); ``options``: the bytes of EDNS options ending it.
        Not kept: a reply whose order has more places than it could show, or to a query whose
        name ``key_of`` misread."""
        if self.limit <= 0 or len(order) > (_FIT_TCP if tcp else _FIT_UDP):
            return
        if entry is not None and entry.options != options:
            # Cannot happen while what sets the options empties the cache when it changes;
            # should it, the entry's replies would be read with the wrong options: drop them.
            self._drop(entry)
            entry = None
        if entry is None or entry.rrset is not drawn:
            qend = _name_end(data) + 5
            if qend != data.find(0, 12) + 5:
                return
            if entry is not None:
                self._drop(entry)
            entry = CachedQuery(key, drawn, data, qend, tcp, options)
            self.table[key] = entry
            self.size += entry.size
            self._index(entry, data[2:])
        replies = entry.replies
        if len(replies) >= cached_orders(drawn, len(order)):
            # Orders beyond count (round robin of many): stay bounded.
            freed = sum(_reply_size(o, r) for o, r in replies.items())
            replies.clear()
            entry.size -= freed
            self.size -= freed
        # Kept in the spelling of the entry's first query, patched for others (see respond).
        body = reply[2:] if data[12 : entry.qend] == entry.spelled else _respell(reply, entry)
        cached = (body, stat, bool(reply[2] & 0x02))
        old = replies.get(order)
        grown = _reply_size(order, cached) - (_reply_size(order, old) if old is not None else 0)
        replies[order] = cached
        entry.size += grown
        self.size += grown
        if self.size > self.limit:
            self._evict()

    def _drop(self, entry: CachedQuery) -> None:
        del self.table[entry.key]
        raws = self.tcp if entry.tcp else self.udp
        for raw in entry.raws:
            del raws[raw]
        self.size -= entry.size

    def _evict(self) -> None:
        """Drop the oldest keys until the bytes held are within ``limit``."""
        table = self.table
        while self.size > self.limit and table:
            self._drop(next(iter(table.values())))
            self.evicted += 1


def _respell(reply: bytes, entry: CachedQuery) -> bytes:
    """``reply`` after its ID, with the question as ``entry`` spells it."""
    return reply[2:12] + entry.spelled + reply[entry.qend :]
