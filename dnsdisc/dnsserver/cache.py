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
index owns one ``ReplyCache`` and, when a name changes, drops the replies that can depend on
it (``forget_names``: those to questions of that name, or whose CNAME chain went through it),
and on a new SOA serial every reply that carries the SOA (``forget_negative``: NXDOMAIN and
NODATA); what changes every reply (zones, keys, staleness) empties it (``forget``). The
responder reads the tables directly (its hit path is a lookup) and writes through ``store``,
``alias``, ``discard`` and ``assemble``. ``size`` counts the bytes held, objects included (a
conservative estimate); past ``limit`` the oldest keys go first.

An order not yet kept need not be encoded (a weighted service of 5 has 120 orders): the first
reply of a key is read into a ``Layout`` (the bytes before its RRset's records, the records'
owner, the OPT record after the glue), checked by rebuilding it byte for byte from the RRset's
members, and the reply to another order is put together from it (``assemble``): the members'
records in that order, their glue behind, each glue owner a pointer to its member's target at
the member's new place, as the responder's encoder places them. That is the encoder's own reply
when it would show every record: when the reply fits the key's size limit (the encoder then cuts
nothing and sets no TC), and only for members a checked reply of the key has shown (``allowed``:
an order with another one is encoded, and its reply widens the layout). Signed replies (DO) have
none: their RRSIGs cover what each shows. Assembled replies are kept as encoded ones are while
the cache is at most ``KEEP_ASSEMBLED`` full; past it they are made again when asked (a few
microseconds), so that the cache holds more keys instead of more orders of a few.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

from dnsdisc.dnsserver.rrset import Item, RRSet, cached_orders
from dnsdisc.dnsserver.settings import REPLY_CACHE_BYTES
from dnsdisc.policies.balance import round_robin

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
# Estimated bytes per name a key is listed under (``ReplyCache.names``: its slot in the name's
# list, the list, the dict's slot, the name's bytes besides their length) and per key listed as
# negative (a set's slot).
NAME_OVERHEAD = 160
NEGATIVE_OVERHEAD = 64
# Estimated bytes of a Layout's object and the bytes objects it holds (besides their lengths).
LAYOUT_OVERHEAD = 400
# A layout's tuples by member (``bodies``, ``single``, ``target_offs``): their objects, and a
# slot in each per member (the bytes and ints are the members' own); up to FLAT_MEMBERS members.
TUPLES_OVERHEAD = 3 * 56
MEMBER_BYTES = 3 * 8
FLAT_MEMBERS = 64
# Assembled replies are kept while the bytes held are at most this share of the limit.
KEEP_ASSEMBLED = 0.5
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
# The size limit of a reply by its key's size class (the last byte's bits 3-5, see key_of): UDP
# without EDNS, TCP without, UDP with EDNS by the floor of the client's class, TCP with EDNS.
_ROOM = (512, 65535, 512, 768, 1024, EDNS_SIZE, 65535, 65535)
_DO_BIT = 4

# A reply after its ID: flags and the four counts.
_FLAGS_COUNTS = struct.Struct("!HHHHH")
_PTR = struct.Struct("!H")
_POINTER = 0xC0
_MAX_POINTER = 0x3FFF
# The first byte of the header's flags after the ID (TC), and the second's rcode.
_TC = 0x02
_RCODE = 0x0F

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


class Layout:
    """How the reply of one key is put together for any order of its RRset (see the module's
    docstring): after the ID, the header's ``flags`` and counts (``an`` records before the
    RRset's, ``opt``: 1 with an OPT record), ``head`` (the question and those records, from 12 to
    ``start``), then each member's record (``owner`` and its body), their glue, and ``tail``
    (the OPT record). ``allowed``: 1 for each member (by index) that a checked reply showed
    (``full``: all of them); ``room``: the most bytes a reply to the key may take; ``header``:
    the flags and counts of a reply of ``places`` places and ``glue`` glue records."""

    __slots__ = (
        "allowed",
        "an",
        "bodies",
        "flags",
        "full",
        "glue",
        "glued",
        "head",
        "header",
        "members",
        "opt",
        "owner",
        "places",
        "room",
        "single",
        "start",
        "stat",
        "tail",
        "target_offs",
    )

    def __init__(
        self,
        flags: int,
        an: int,
        opt: int,
        head: bytes,
        start: int,
        owner: bytes,
        tail: bytes,
        members: tuple[Item, ...],
        room: int,
        stat: StatKey,
        places: int,
        glue: int,
    ) -> None:
        self.flags = flags
        self.an = an
        self.opt = opt
        self.head = head
        self.start = start
        self.owner = owner
        self.tail = tail
        self.members = members
        self.room = room
        self.stat = stat
        self.allowed = bytearray(len(members))
        self.full = False
        # Without glue the records need no places: one join.
        self.glued = any([m.glue for m in members])
        self.places = places
        self.glue = glue
        self.header = _FLAGS_COUNTS.pack(flags, 1, an + places, 0, glue + opt)
        # The members' bodies, glue records (one each) and targets' offsets in flat tuples: a
        # reply is put together from these few objects instead of each member's Item, body and
        # glue tuple. Spread over 10,000 services nearly every object a query reads is a cache
        # miss, and the flat tuples took 4-7% off the CPU per query (bench/spread.py). Not for
        # a large RRset (each tuple would hold every member), nor for other glue: None.
        flat = len(members) <= FLAT_MEMBERS
        self.bodies = tuple([m.body for m in members]) if flat else None
        self.single = (
            tuple([m.glue[0] for m in members])
            if flat and self.glued and all([len(m.glue) == 1 for m in members])
            else None
        )
        self.target_offs = tuple([m.target_off for m in members]) if self.single else None

    def size(self) -> int:
        """The bytes counted for it."""
        return (
            LAYOUT_OVERHEAD
            + len(self.head)
            + len(self.owner)
            + len(self.tail)
            + len(self.allowed)
            + (TUPLES_OVERHEAD + MEMBER_BYTES * len(self.members) if self.bodies is not None else 0)
        )

    def allow(self, order: Order) -> list[int]:
        """Allow ``order``'s members; those newly allowed."""
        allowed = self.allowed
        new = [i for i in order if not allowed[i]]
        for i in new:
            allowed[i] = 1
        self.full = 0 not in allowed
        return new

    def build(self, order: Order) -> bytes | None:
        """The reply after its ID for ``order``, as the responder encodes it; None if a member
        is not ``allowed`` or the reply would not fit in ``room`` (the encoder would cut it),
        or the order is empty (a located RRset pinned to a zone with nothing: NODATA)."""
        if not order:
            return None
        members = self.members
        if not self.full:
            allowed = self.allowed
            for i in order:
                if not allowed[i]:
                    return None
        places = len(order)
        bodies = self.bodies
        owner = self.owner
        if bodies is None:
            return self._build(order)
        if not self.glued:
            header = self.header if places == self.places else self._header(places, 0)
            records = owner.join([bodies[i] for i in order])
            reply = b"".join((header, self.head, owner, records, self.tail))
            return reply if len(reply) + 2 <= self.room else None
        single = self.single
        offs = self.target_offs
        if single is None or offs is None:
            return self._build(order)
        # One glue record a member, its owner a pointer to the member's target at its new place.
        width = len(owner)
        pos = self.start + width  # where the first record's body starts in the message
        glue: list[bytes] = []
        for i in order:
            at = pos + offs[i]
            glue.append(_PTR.pack(0xC000 | at) if at <= _MAX_POINTER else members[i].target)
            glue.append(single[i])
            pos += len(bodies[i]) + width
        header = self.header if places == self.places == self.glue else self._header(places, places)
        records = owner.join([bodies[i] for i in order])
        reply = b"".join((header, self.head, owner, records, b"".join(glue), self.tail))
        return reply if len(reply) + 2 <= self.room else None

    def _build(self, order: Order) -> bytes | None:
        """``build`` from the members' own objects: a large RRset, or glue of other shapes."""
        members = self.members
        owner = self.owner
        places = len(order)
        if not self.glued:
            header = self.header if places == self.places else self._header(places, 0)
            records = owner.join([members[i].body for i in order])
            reply = b"".join((header, self.head, owner, records, self.tail))
            return reply if len(reply) + 2 <= self.room else None
        width = len(owner)
        pos = self.start + width  # where the first record's body starts in the message
        bodies = []
        glue: list[bytes] = []
        for i in order:
            item = members[i]
            body = item.body
            bodies.append(body)
            addresses = item.glue
            if addresses:
                # As _add_records places it: a pointer to the target in this member's record.
                at = pos + item.target_off
                glue_owner = _PTR.pack(0xC000 | at) if at <= _MAX_POINTER else item.target
                if len(addresses) == 1:  # the usual: one address
                    glue.append(glue_owner)
                    glue.append(addresses[0])
                else:
                    for record in addresses:
                        glue.append(glue_owner)
                        glue.append(record)
            pos += len(body) + width
        count = len(glue) >> 1
        if places == self.places and count == self.glue:
            header = self.header
        else:
            header = self._header(places, count)
        glued = b"".join(glue)  # one join of its own: cheaper than unpacking it into the next
        reply = b"".join((header, self.head, owner, owner.join(bodies), glued, self.tail))
        return reply if len(reply) + 2 <= self.room else None

    def _header(self, places: int, glue: int) -> bytes:
        return _FLAGS_COUNTS.pack(self.flags, 1, self.an + places, 0, glue + self.opt)


def _skip_name(data: bytes, pos: int) -> int:
    """Where the name at ``pos`` ends (after its zero octet or pointer); -1 if malformed."""
    size = len(data)
    while pos < size:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & _POINTER == _POINTER:
            return pos + 2 if pos + 2 <= size else -1
        if length & _POINTER:
            return -1
        pos += length + 1
    return -1


def _skip_record(data: bytes, pos: int) -> int:
    """Where the record at ``pos`` ends; -1 if it runs past ``data``."""
    pos = _skip_name(data, pos)
    if pos < 0 or pos + 10 > len(data):
        return -1
    end = pos + 10 + (data[pos + 8] << 8 | data[pos + 9])
    return end if end <= len(data) else -1


def read_layout(body: bytes, entry: CachedQuery, order: Order, stat: StatKey) -> Layout | None:
    """The layout of ``body``, the reply after its ID to ``entry``'s key for ``order`` of its
    RRset, if the layout rebuilds it byte for byte: the question and any records before the
    RRset's (a CNAME chain), each record of the order with the same owner, all their glue, and
    the OPT record last; else None (the key's replies are then encoded, as before)."""
    rrset = entry.rrset
    if rrset is None or not order or len(body) < 10:
        return None
    flags, qd, an, ns, ar = _FLAGS_COUNTS.unpack_from(body)
    places = len(order)
    if flags >> 8 & _TC or flags & _RCODE or qd != 1 or ns or an < places:
        return None
    pos = entry.qend - 2
    for _ in range(an - places):
        pos = _skip_record(body, pos)
        if pos < 0:
            return None
    owner_end = _skip_name(body, pos)
    size_class = entry.key[-1] >> 3 & 7
    opt = 0 if size_class < 2 else 1  # classes 0 and 1: no EDNS (see key_of)
    if owner_end < 0 or ar < opt:
        return None
    # Our OPT record, last: 11 bytes and the options the entry's replies end with.
    tail = body[len(body) - 11 - entry.options :] if opt else b""
    layout = Layout(flags, an - places, opt, body[10:pos], pos + 2, body[pos:owner_end], tail,
                    rrset.members, _ROOM[size_class], stat, places, ar - opt)  # fmt: skip
    layout.allow(order)
    return layout if layout.build(order) == body else None


def _widen(layout: Layout, body: bytes, order: Order, widen: bool) -> bool:
    """Whether ``body``, the reply just encoded for ``order``, is what ``layout`` builds for it
    once ``order``'s members are allowed (they then stay allowed; not if ``widen`` is false)."""
    new = layout.allow(order) if widen and not layout.full else []
    if layout.build(order) == body:
        return True
    allowed = layout.allowed
    for i in new:
        allowed[i] = 0
    layout.full = False if new else layout.full
    return False


class CachedQuery:
    """The replies already encoded for one key: by the order its balanced RRset drew (``()``
    when nothing is balanced), each without its ID, with the question as ``spelled`` (the
    first query's, from 12 to ``qend``); ``raws``, the exact queries (after the ID) indexed to
    it; ``size``, the bytes counted for all of it; ``options``, the bytes of EDNS options that
    end each of its replies (NSID, extended errors: the same for every order of one key, as
    they depend on the key and on what empties the cache); ``layout``, how to put together the
    reply to an order not kept (None: none was read)."""

    __slots__ = (
        "chain",
        "key",
        "layout",
        "options",
        "qend",
        "raws",
        "replies",
        "rrset",
        "size",
        "spelled",
        "tcp",
    )

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
        self.layout: Layout | None = None
        # The names besides the question's that its replies were made from (a CNAME chain's
        # targets), as listed in ``ReplyCache.names``.
        self.chain: tuple[bytes, ...] = ()
        self.size = KEY_OVERHEAD + len(key) + qend


def _reply_size(order: Order, reply: CachedReply) -> int:
    return REPLY_OVERHEAD + len(reply[0]) + PLACE_BYTES * len(order)


class ReplyCache:
    """Cached queries by key, oldest first, in ``table``; the same entries by the exact bytes of
    queries after the ID in ``udp`` and ``tcp`` (a query sent again is found with one lookup,
    and its reply needs no patching); ``size`` the bytes counted for all of them (within
    ``limit`` after a store), ``evicted`` the keys dropped to stay within it and ``trimmed``
    the times a key gave up the replies its layout makes again instead.

    What a change drops is found through ``names``: each name (lower-cased, in wire form) the
    kept replies were made from, with the keys of those replies (the question's name, and the
    targets of a CNAME chain followed); and ``negative``, the keys whose replies carry the SOA
    record (NXDOMAIN, NODATA), which a new serial changes.

    Invariants: ``size`` is the sum of ``CachedQuery.size`` over ``table``; every entry of
    ``udp`` and ``tcp`` is in ``table`` and lists its key there in ``raws``; every key in
    ``table`` is listed in ``names`` under its question's name and each name of its ``chain``,
    and every key listed there or in ``negative`` is in ``table``; the three tables are emptied
    in place, never replaced, so that a reader may keep references to them."""

    __slots__ = (
        "evicted",
        "limit",
        "names",
        "negative",
        "size",
        "table",
        "tcp",
        "trimmed",
        "udp",
    )

    def __init__(self, limit: int = REPLY_CACHE_BYTES) -> None:
        self.table: OrderedDict[bytes, CachedQuery] = OrderedDict()
        self.udp: dict[bytes, CachedQuery] = {}
        self.tcp: dict[bytes, CachedQuery] = {}
        # A list, not a set, per name: most names have a key or two, and a set of one takes
        # 216 bytes where a list takes 64.
        self.names: dict[bytes, list[bytes]] = {}
        self.negative: set[bytes] = set()
        self.size = 0
        self.limit = limit
        self.evicted = 0
        self.trimmed = 0

    def __len__(self) -> int:
        return len(self.table)

    def forget(self) -> None:
        """Drop every reply: what every reply may depend on changed (zones, keys, staleness)."""
        if self.table:  # else nothing was cached since the last time (a build installs many)
            self.table.clear()
            self.udp.clear()
            self.tcp.clear()
            self.names.clear()
            self.negative.clear()
            self.size = 0

    def forget_name(self, name: bytes) -> None:
        """Drop every reply made from ``name`` (lower-cased wire form): its records, or
        whether it exists, changed. The replies to other names stay."""
        keys = self.names.pop(name, None)
        if keys is not None:
            table = self.table
            for key in keys:
                entry = table.get(key)
                if entry is not None:
                    self._drop(entry)

    def forget_negative(self) -> None:
        """Drop every reply that carries the SOA record (NXDOMAIN, NODATA): the serial
        changed. A name a write creates has its own replies dropped by ``forget_name``; this
        keeps the serial that negative replies show the zone's."""
        negative = self.negative
        if negative:
            table = self.table
            for key in list(negative):
                entry = table.get(key)
                if entry is not None:
                    self._drop(entry)
            negative.clear()

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
        chain: tuple[bytes, ...] = (),
    ) -> None:
        """Keep ``reply``, just encoded for the query ``data`` of ``key`` (its entry, read from
        the tables for this query, if it had one) with ``order`` of ``drawn``, the one RRset it
        ordered (None: nothing was ordered); ``options``: the bytes of EDNS options ending it;
        ``chain``: the names besides the question's it was made from (a CNAME chain's targets).
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
            self._list(entry, key[:-5])  # the question's name, lower-cased (see key_of)
        if chain:
            for name in chain:
                if name not in entry.chain:
                    entry.chain += (name,)
                    self._list(entry, name)
        if reply[8:10] != b"\x00\x00" and key not in self.negative:
            # Our replies have records in the authority section only when negative: the SOA
            # (and, signed, its RRSIG and the NSEC records).
            self.negative.add(key)
            entry.size += NEGATIVE_OVERHEAD
            self.size += NEGATIVE_OVERHEAD
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
        grown = 0
        rebuilt = False  # the layout makes this reply again
        if drawn is not None and order and not key[-1] & _DO_BIT:
            layout = entry.layout
            if layout is None:
                layout = read_layout(body, entry, order, stat)
                if layout is not None:
                    entry.layout = layout
                    grown = layout.size()
                    rebuilt = True
            else:
                # Round robin's windows come round in turn, and all of them are kept (see
                # cached_orders): each is encoded once, as before, not put together from
                # members another window showed.
                rebuilt = _widen(layout, body, order, drawn.policy is not round_robin)
        size = _reply_size(order, cached)
        if not rebuilt or self.size + grown + size <= self.limit * KEEP_ASSEMBLED:
            # Past that share a key keeps its layout alone: more keys, not more orders of few.
            old = replies.get(order)
            grown += size - (_reply_size(order, old) if old is not None else 0)
            replies[order] = cached
        entry.size += grown
        self.size += grown
        if self.size > self.limit:
            self._evict()

    def assemble(self, entry: CachedQuery, order: Order) -> CachedReply | None:
        """The reply to ``order``, not kept under ``entry`` (which has a layout), put together
        from its layout; kept too while the cache is at most ``KEEP_ASSEMBLED`` full. None: it
        must be encoded."""
        layout = entry.layout
        assert layout is not None
        body = layout.build(order)
        if body is None:
            return None
        reply = (body, layout.stat, False)
        if self.size <= self.limit * KEEP_ASSEMBLED:  # else the common case: nothing to keep
            size = _reply_size(order, reply)
            if (
                self.size + size <= self.limit * KEEP_ASSEMBLED
                and len(order) <= (_FIT_TCP if entry.tcp else _FIT_UDP)
                and len(entry.replies) < cached_orders(entry.rrset, len(order))
            ):
                entry.replies[order] = reply
                entry.size += size
                self.size += size
        return reply

    def _trim(self, entry: CachedQuery) -> None:
        """Drop every reply of ``entry``: its layout makes them again (but those the encoder
        cut to the size limit, or of members no checked reply showed: encoded again if asked)."""
        replies = entry.replies
        freed = sum(_reply_size(o, r) for o, r in replies.items())
        replies.clear()
        entry.size -= freed
        self.size -= freed

    def _list(self, entry: CachedQuery, name: bytes) -> None:
        """List ``entry``'s key under ``name`` in ``names``."""
        keys = self.names.get(name)
        if keys is None:
            self.names[name] = [entry.key]
        else:
            keys.append(entry.key)
        grown = NAME_OVERHEAD + len(name)
        entry.size += grown
        self.size += grown

    def _drop(self, entry: CachedQuery) -> None:
        key = entry.key
        del self.table[key]
        raws = self.tcp if entry.tcp else self.udp
        for raw in entry.raws:
            del raws[raw]
        self.size -= entry.size
        names = self.names
        for name in (key[:-5], *entry.chain):
            keys = names.get(name)
            if keys is not None:  # None: ``forget_name`` took the list off before dropping
                keys.remove(key)
                if not keys:
                    del names[name]
        self.negative.discard(key)

    def _evict(self) -> None:
        """Drop the oldest keys until the bytes held are within ``limit``. A key with a layout
        first gives up its replies and goes to the back (``trimmed``): orders go before keys."""
        table = self.table
        while self.size > self.limit and table:
            entry = next(iter(table.values()))
            if entry.layout is not None and entry.replies:
                self._trim(entry)
                table.move_to_end(entry.key)
                self.trimmed += 1
            else:
                self._drop(entry)
                self.evicted += 1


def _respell(reply: bytes, entry: CachedQuery) -> bytes:
    """``reply`` after its ID, with the question as ``entry`` spells it."""
    return reply[2:12] + entry.spelled + reply[entry.qend :]
