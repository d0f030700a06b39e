"""The responder: query bytes in, reply bytes out, from the answer index.

One pass per query: parse the header and question, look the lower-cased name up, let the RRset's
policy order its items, and splice pre-encoded bodies behind compression pointers into the
question (which is copied from the client byte for byte, so the case it sent comes back). Every
exception is caught here, at the boundary: a bad packet costs a FORMERR or nothing, never the
server. The rcode for each kind of failure is decided in this module only.
"""

from __future__ import annotations

import logging
import random
import struct
from bisect import bisect_left
from collections.abc import Callable, Sequence
from time import perf_counter

from dnsdisc.dnsserver import ecs, ede, wire
from dnsdisc.dnsserver.cache import CachedQuery, key_of, udp_limit
from dnsdisc.dnsserver.dnssec import Signer
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.locality import Local
from dnsdisc.dnsserver.rrset import Item, RRSet
from dnsdisc.dnsserver.settings import MAX_SIGNATURES, REPLY_CACHE_BYTES
from dnsdisc.dnsserver.signing import Budget, OverBudget, signed_reply
from dnsdisc.dnsserver.stats import LATENCY_BUCKETS, QueryStats, type_key
from dnsdisc.dnsserver.tsig import ends_with_tsig
from dnsdisc.dnsserver.zone import Node, Unserved
from dnsdisc.errors import rcode_of

log = logging.getLogger(__name__)

_PTR = struct.Struct("!H")
# RFC 1034 section 4.3.2 follows CNAME chains inside our data; a loop stops here.
_MAX_CHAIN = 8
# Compression pointers hold 14 bits of offset.
_MAX_POINTER = 0x3FFF
_OPT_START = b"\x00\x00\x29"  # an OPT record: the root, type 41
_UNSEEN = object()
_TRANSFERS = (251, 252)  # IXFR, AXFR
# Header bits copied from the query into the reply: RD and CD (RFC 1035, RFC 4035 3.1.6).
_COPY_FLAGS = wire.FLAG_RD | wire.FLAG_CD


class _Forward:
    """The answer to give is the upstream's: see forward.py."""

    __slots__ = ()


FORWARD = _Forward()


class Responder:
    def __init__(
        self,
        index: AnswerIndex,
        rng: random.Random | None = None,
        *,
        forwarding: bool = False,
        any_full: bool = False,
        reply_cache_bytes: int = REPLY_CACHE_BYTES,
        udp_answer_limit: int | None = None,
        nsid: bytes | None = None,
        max_signatures: int = MAX_SIGNATURES,
    ) -> None:
        self.reply_cache_bytes = reply_cache_bytes  # 0: no reply is cached
        # Set while this node cannot refresh its data (the shared store is out of reach): its
        # answers say they may be stale (RFC 8914 Stale Answer). See ``stale``.
        self._stale = False
        # DNSSEC (dnssec.py, signing.py): answers to DO queries are signed; None: unsigned.
        self.signer: Signer | None = None
        self.dnskey_ttl = 3600
        # New signatures this process may make per second (signing.Budget); kept ones are free.
        self.budget = Budget(max_signatures)
        self.index = index  # binds the index's reply cache too (see the property)
        self.rng = rng or random.Random()
        # With recursors configured, names outside our zones are FORWARDed instead of REFUSED.
        self.forwarding = forwarding
        # ANY gets one RRset of the name (RFC 8482 section 4.1) unless ``dns.any: full``.
        self.any_full = any_full
        # Records of a balanced A/AAAA answer over UDP when its service sets no max_answers
        # (None or 0: no cap); also how many places of its order are drawn.
        self.udp_cap = udp_answer_limit or None
        # The NSID option (RFC 5001, see nsid.py) for queries that ask; None: not configured.
        self.nsid = nsid
        # The bytes of EDNS options the reply just encoded ends with (see cache.CachedQuery).
        self._options = 0
        self.errors = 0
        self.stats = QueryStats()
        # Filled while answering one query: the RRsets whose order was drawn, and whether the
        # reply came out of the normal path (so that it may be cached) and its stats key.
        self._drawn: list[RRSet] = []
        self._stat: tuple[int, int] | None = None
        # The names a CNAME chain went through (the reply is made from them too: a change of
        # one drops it, see cache.ReplyCache.forget_name).
        self._chain: list[bytes] = []
        # The ECS scope of the last answer that depended on the client (see _optioned), and
        # the bytes of options the last reply carries at the end of its OPT record (what adds
        # an option after the responder, a cookie, goes behind them).
        self._scope = 0
        self.echoed = 0
        # What queries with options said of their client, by their bytes after the ID.
        self._subnets: dict[bytes, ecs.Found | None] = {}
        # Queries signed with TSIG go here (``Tsig.signed``: checked, answered, the reply
        # signed); None: no keys configured, and a signed query is answered as any other.
        self.signed: Callable[[bytes, Callable[[bytes], object], bool], object] | None = None
        # The size a signed UDP reply may take (set for each query, see _respond).
        self._room = 65535

    @property
    def stale(self) -> bool:
        return self._stale

    @stale.setter
    def stale(self, stale: bool) -> None:
        """Say whether answers come from data this node cannot refresh now. The cached replies
        were made with the other value: they go (this changes when the store's reachability
        does, seldom), so that the hit path needs no check."""
        if stale != self._stale:
            self._stale = stale
            self._cache.forget()

    @property
    def index(self) -> AnswerIndex:
        return self._index

    @index.setter
    def index(self, index: AnswerIndex) -> None:
        """Answer from ``index`` from the next query on (a reload, a worker's swap). Its cache's
        tables are bound here, so that a query seen before costs one lookup to find them."""
        self._index = index
        if self.signer is not None:
            index.publish_keys(self.signer, self.dnskey_ttl)
        if self._stale:
            index.cache.forget()  # what it holds was made by a responder that was not stale
        self._cache = index.cache
        self._cache.limit = self.reply_cache_bytes
        self._table = index.cache.table
        self._udp = index.cache.udp
        self._tcp = index.cache.tcp

    def respond(
        self, data: bytes, tcp: bool = False, source: bytes = b"", prefix: int = -1
    ) -> bytes | _Forward | None:
        """The reply to one query from ``source`` (the client's address packed: 4 or 16 bytes;
        b"" when unknown); None when the packet gets no reply at all; FORWARD when the name is
        outside our zones and an upstream should answer it. ``prefix`` >= 0: ``source`` is
        the client subnet of that prefix that the query's ECS option named (see _optioned).

        A question seen before (see cache.py for what keys it) is answered from the replies
        already encoded for it, with this query's ID and question: only its balanced RRset draws
        an order, and a reply for that order is reused, put together from the key's layout
        (cache.Layout: the same bytes), or encoded. The index drops the replies made from a
        name when it changes. A query sent before byte for byte never carries ECS (a query with
        it is kept as the query without it); any other query that may carry EDNS options is
        looked at for one first (``_optioned``)."""
        started = perf_counter()
        # The query as sent before (after the ID): the reply needs no patching.
        entry = (self._tcp if tcp else self._udp).get(data[2:])
        if entry is None:
            if (
                prefix < 0
                and data[10:12] != b"\x00\x00"
                and not (data[-11:-8] == _OPT_START and data[-2:] == b"\x00\x00")
            ):
                if self.signed is not None and ends_with_tsig(data):
                    return self._signed(data, tcp, source)
                return self._optioned(data, tcp, source)
            return self._respond_keyed(data, tcp, started, source, prefix)
        self.echoed = entry.options  # a query with options (a cookie) can be one sent before
        rrset = entry.rrset
        order: tuple[int, ...] = ()
        if rrset is not None:
            cap = None if tcp else self.udp_cap
            local = rrset.local
            if local is None:
                order = rrset.next_order(self.rng, cap, tcp)
            else:
                order = self._located(local, cap, tcp, source, prefix)
            dropped = rrset.dropped
            if dropped is not None:  # out of the pool (only after a redraw)
                rrset.dropped = None
                self._cache.discard(entry, dropped)
        hit = entry.replies.get(order)
        if hit is None and entry.layout is not None:
            hit = self._cache.assemble(entry, order)  # an order not kept: ~2 µs, not ~25
        if hit is not None:
            body, stat, truncated = hit
            stats = self.stats
            stats.by_type_rcode[stat] += 1
            if truncated:
                stats.truncated += 1
            # QueryStats.observe, inline: this is the path nearly every query takes.
            took = perf_counter() - started
            latency = stats.latency
            latency.buckets[bisect_left(LATENCY_BUCKETS, took)] += 1
            latency.total += took
            latency.count += 1
            return data[:2] + body
        return self._encode(data, tcp, started, entry.key, entry, order, source, prefix)

    def _signed(self, data: bytes, tcp: bool, source: bytes) -> bytes | _Forward | None:
        """``respond`` for a query that ends with a TSIG record: answered without it, the
        reply signed. Never cached by these bytes (each signature is new)."""
        assert self.signed is not None
        reply = self.signed(data, lambda plain: self._optioned(plain, tcp, source), tcp)
        # The reply ends with its TSIG record now, not our OPT: nothing may go after it (a
        # cookie would break the signature; cookies.answer adds one only behind an OPT).
        self.echoed = 0
        return reply if reply is None or isinstance(reply, bytes) else FORWARD

    def _optioned(self, data: bytes, tcp: bool, source: bytes) -> bytes | _Forward | None:
        """``respond`` for a query that may carry EDNS options: with a client subnet (RFC 7871)
        the client is where it says, and the reply echoes it with the scope the answer holds
        for; a malformed one gets FORMERR. What a query says is remembered by its bytes (a
        resolver asks the same for a subnet again and again); a query with the option in the
        usual place is answered, and cached, as the same query without it."""
        self.echoed = 0
        raw = data[2:]
        found = self._subnets.get(raw, _UNSEEN)
        if found is _UNSEEN:
            if len(data) < 12:  # too short for any: dropped there
                return self._respond_keyed(data, tcp, perf_counter(), source, -1)
            try:
                found = ecs.find(data)
            except ecs.Malformed:
                return self._bare(data, wire.FORMERR)
            if len(self._subnets) >= ecs.MEMORY:
                self._subnets.clear()
            self._subnets[raw] = found
        if found is None:
            return self._respond_keyed(data, tcp, perf_counter(), source, -1)
        assert isinstance(found, ecs.Found)
        subnet = found.subnet
        self._scope = 0
        # SOURCE PREFIX-LENGTH 0: the resolver tells nothing of the client (RFC 7871 7.1.2),
        # which is then unknown, and the answer holds for everyone (scope 0).
        where = subnet.address if subnet.source else b""
        query = data if found.plain is None else data[:2] + found.plain
        reply = self.respond(query, tcp, where, subnet.source)
        if not isinstance(reply, bytes):
            return reply
        limit = 65535 if tcp else max(512, found.udp_size)
        out, self.echoed = ecs.echo(reply, found, self._scope, limit, self.echoed)
        return out

    def _located(
        self, local: Local, cap: int | None, tcp: bool, where: bytes, prefix: int
    ) -> tuple[int, ...]:
        """The order a client at ``where`` gets from an RRset that answers by the client; the
        scope it holds for goes to ``_scope``."""
        if not where:  # no address known (not an IP client): as if it were unknown
            return local.whole.next_order(self.rng, cap, tcp)
        order, self._scope = local.order(
            self.rng, cap, tcp, where, prefix if prefix >= 0 else len(where) * 8,
            self._index.locality,
        )  # fmt: skip
        return order

    def _respond_keyed(
        self, data: bytes, tcp: bool, started: float, where: bytes, prefix: int
    ) -> bytes | _Forward | None:
        """``respond`` for a query not sent before byte for byte: by its key, from a reply
        cached for another spelling of its question (patched with this one), or encoded."""
        key = key_of(data, tcp)
        entry = self._table.get(key) if key is not None else None
        if entry is None:
            return self._encode(data, tcp, started, key, None, (), where, prefix)
        qend = entry.qend
        spelled = data[12:qend] == entry.spelled
        if spelled:
            self._cache.alias(entry, data)  # found in one lookup from now on
        rrset = entry.rrset
        order: tuple[int, ...] = ()
        if rrset is not None:
            cap = None if tcp else self.udp_cap
            local = rrset.local
            if local is None:
                order = rrset.next_order(self.rng, cap, tcp)
            else:
                order = self._located(local, cap, tcp, where, prefix)
            dropped = rrset.dropped
            if dropped is not None:
                rrset.dropped = None
                self._cache.discard(entry, dropped)
        hit = entry.replies.get(order)
        if hit is None and entry.layout is not None:
            hit = self._cache.assemble(entry, order)
        if hit is None:
            return self._encode(data, tcp, started, key, entry, order, where, prefix)
        body, stat, truncated = hit
        stats = self.stats
        stats.by_type_rcode[stat] += 1
        if truncated:
            stats.truncated += 1
        stats.observe(perf_counter() - started)
        self.echoed = entry.options
        if spelled:
            return data[:2] + body
        # The question as this query spells it (0x20 resolvers check the case): it has the
        # entry's length and labels, so compression pointers into it stay right.
        return b"".join((data[:2], body[:10], data[12:qend], body[qend - 2 :]))

    def _encode(
        self,
        data: bytes,
        tcp: bool,
        started: float,
        key: bytes | None,
        entry: CachedQuery | None,
        order: tuple[int, ...],
        where: bytes = b"",
        prefix: int = -1,
    ) -> bytes | _Forward | None:
        """Answer from the index; keep the reply under ``key`` (None: the query is not kept)
        with ``order``, the order drawn for ``entry``'s RRset, or the one drawn now."""
        rrset = entry.rrset if entry is not None else None
        if rrset is not None:
            rrset.forced = order  # encode this order now (it was drawn and counted above)
        self._drawn.clear()
        self._chain.clear()
        self._stat = None
        self._options = self.echoed = 0
        try:
            reply = self._respond(data, tcp, where, prefix)
        except wire.ShortPacketError:
            return None
        except Exception as exc:
            self.errors += 1
            log.debug("failed to answer a packet", exc_info=True)
            return _bare(data, rcode_of(exc)) if len(data) >= 12 else None
        finally:
            if rrset is not None:
                rrset.forced = None
        self.echoed = self._options
        self.stats.observe(perf_counter() - started)
        made = self._stat
        if made is not None and key is not None and len(self._drawn) <= 1:
            # Cached only when at most one RRset was ordered: the order then keys the reply.
            assert isinstance(reply, bytes)  # what _finish returns
            drawn = self._drawn[0] if self._drawn else None
            order = () if drawn is None else drawn.last if rrset is None else order
            chain = tuple(self._chain) if self._chain else ()
            self._cache.store(
                tcp, key, data, entry, drawn, order, reply, made, self._options, chain
            )
        return reply

    def _respond(
        self, data: bytes, tcp: bool, where: bytes = b"", prefix: int = -1
    ) -> bytes | _Forward | None:
        try:
            q = wire.parse_query(data)
        except wire.FormatError as exc:
            return self._bare(data, rcode_of(exc))
        flags = q.flags
        if flags & wire.FLAG_QR:
            return None  # a response sent to us: replying could start a loop
        if flags & wire.OPCODE_MASK:
            return self._bare(data, wire.NOTIMP)
        if q.qdcount != 1:
            return self._bare(data, wire.FORMERR)
        reply_flags = wire.FLAG_QR | (flags & _COPY_FLAGS)
        if q.edns and q.edns_version > 0:
            out = bytearray(wire.header(q.id, reply_flags, 1, 0, 0, 1))
            out += q.question
            # DO is echoed here too (RFC 3225 3): genreport's edns1do expects it on BADVERS.
            out += wire.opt_record(
                wire.EDNS_SIZE, wire.BADVERS >> 4, bool(q.edns_flags & wire.DO_BIT)
            )
            self.stats.by_type_rcode[(type_key(q.qtype), wire.BADVERS)] += 1
            return bytes(out)
        if q.qclass != wire.CLASS_IN:
            # No zone of another class is ours (CHAOS id.server and the like included).
            return self._finish(
                q, reply_flags | wire.REFUSED, bytearray(), 0, 0, 0, ede.NOT_AUTHORITATIVE_OPTION
            )
        if q.qtype in _TRANSFERS:
            # Zone transfers go over TCP only (transport.py hands them to transfer.py before
            # they reach here): over UDP, or DoH, REFUSED (RFC 5936 4.2).
            return self._finish(
                q, reply_flags | wire.REFUSED, bytearray(), 0, 0, 0, ede.TRANSFER_OPTION
            )

        cap = None if tcp else self.udp_cap
        if tcp:
            limit = 65535
        elif q.edns:
            limit = udp_limit(q.udp_size)  # by size class: the reply cache keys on it
        else:
            limit = wire.UDP_LEGACY_SIZE
        self._room = limit
        if q.edns:
            limit -= 11  # room for our OPT record, and the options it carries
            if q.nsid and self.nsid is not None:
                limit -= len(self.nsid)
            if self._stale:
                limit -= len(ede.STALE_OPTION)

        index = self._index
        qkey = q.qname.lower()
        node = index.nodes.get(qkey)
        body = bytearray(12)
        body += q.question
        if node is None:
            zone = index.find_zone(qkey)
            if zone is None:
                if self.forwarding and flags & wire.FLAG_RD:
                    return FORWARD  # recursion only when asked for (RD=0 gets REFUSED)
                return self._finish(
                    q, reply_flags | wire.REFUSED, body, 0, 0, 0, ede.NOT_AUTHORITATIVE_OPTION
                )
            rcode = wire.NOERROR if qkey in index.ents else wire.NXDOMAIN
            # The apex is a label suffix of the name, so the SOA owner points into the question.
            body += _PTR.pack(0xC000 | (12 + len(qkey) - len(zone.apex)))
            body += zone.soa
            return self._finish(q, reply_flags | wire.FLAG_AA | rcode, body, 0, 1, 0)

        an = 0
        truncated = False
        glue: list[tuple[bytes, tuple[bytes, ...]]] = []
        owner = b"\xc0\x0c"
        qtype = q.qtype
        name = qkey
        for _ in range(_MAX_CHAIN):
            rrsets = _select(node, qtype, self.any_full)
            if rrsets is None:
                cname = node.rrsets.get(wire.CNAME)
                if cname is not None and qtype != wire.CNAME:
                    # Answer the alias and go on with its target, if the target is ours.
                    item = cname.items[0]
                    if len(body) + len(owner) + len(item.body) > limit:
                        truncated = True
                        break
                    body += owner
                    body += item.body
                    an += 1
                    name = item.target
                    self._chain.append(name)
                    nxt = index.nodes.get(name)
                    if nxt is None:
                        zone = index.find_zone(name)
                        if zone is not None and name not in index.ents:
                            # The alias points at a name of ours that does not exist: the
                            # rcode is the last name's (RFC 6604), with the zone's SOA.
                            body += wire.owner_pointer(zone.apex, qkey)
                            body += zone.soa
                            flags_nx = reply_flags | wire.FLAG_AA | wire.NXDOMAIN
                            return self._finish(q, flags_nx, body, an, 1, 0)
                        break
                    node = nxt
                    owner = wire.owner_pointer(name, qkey)
                    continue
                if an == 0:
                    body += node.soa
                    why = (
                        ede.UNHEALTHY_OPTION
                        if isinstance(node, Unserved) and qtype in node.types
                        else b""
                    )
                    return self._finish(q, reply_flags | wire.FLAG_AA, body, 0, 1, 0, why)
                break
            for rrset in rrsets:
                if not rrset.fixed:
                    self._drawn.append(rrset)
                local = rrset.local
                if local is not None and rrset.forced is None:
                    members = rrset.members
                    located = self._located(local, cap, tcp, where, prefix)
                    items: Sequence[Item] = [members[i] for i in located]
                else:
                    items = rrset.ordered(self.rng, cap, tcp)
                if not items and an == 0 and len(rrsets) == 1:
                    # Pinned to a zone with nothing to hand out: NODATA, as for no RRset.
                    body += node.soa
                    return self._finish(q, reply_flags | wire.FLAG_AA, body, 0, 1, 0)
                count, full = _add_records(body, owner, items, limit, glue)
                an += count
                if not full:
                    truncated = True
                    break
            break

        ar = 0
        for glue_owner, bodies in glue:
            for gbody in bodies:
                if len(body) + len(glue_owner) + len(gbody) > limit:
                    # Glue is optional (RFC 2181 section 9): leaving it out needs no TC.
                    break
                body += glue_owner
                body += gbody
                ar += 1
        flags_out = reply_flags | wire.FLAG_AA
        if truncated:
            flags_out |= wire.FLAG_TC
        return self._finish(q, flags_out, body, an, 0, ar)

    def _bare(self, data: bytes, rcode: int) -> bytes:
        # Counted under type 0: the question was not read.
        self.stats.by_type_rcode[(0, rcode)] += 1
        return _bare(data, rcode)

    def _finish(
        self,
        q: wire.Query,
        flags: int,
        body: bytearray,
        an: int,
        ns: int,
        ar: int,
        why: bytes = b"",
    ) -> bytes:
        """The reply: header, ``body``, and with EDNS our OPT record, with the extended error
        ``why`` (an ede option), Stale Answer on answers from our data while stale, and NSID
        when asked."""
        if not body:
            body += bytes(12)
            body += q.question
        if q.edns:
            options = why
            if self._stale and flags & wire.FLAG_AA:
                options += ede.STALE_OPTION
            if q.nsid and self.nsid is not None:
                options += self.nsid
            body += wire.opt_record(wire.EDNS_SIZE, 0, bool(q.edns_flags & wire.DO_BIT), options)
            self._options = len(options)
            ar += 1
        wire.HEADER.pack_into(body, 0, q.id, flags, 1, an, ns, ar)
        reply = bytes(body)
        whole = True
        if self.signer is not None and flags & wire.FLAG_AA and q.edns_flags & wire.DO_BIT:
            try:
                reply, whole = self._signed_answer(q, reply)
            except OverBudget:
                return self._over_budget(q, flags)
            flags = int.from_bytes(reply[2:4])
        stats = self.stats
        stat = (type_key(q.qtype), flags & 0x0F)
        # A reply whose glue the signing budget left out is not kept: the next one may have it.
        self._stat = stat if whole else None
        stats.by_type_rcode[stat] += 1
        if flags & wire.FLAG_TC:
            stats.truncated += 1
        return reply

    def _over_budget(self, q: wire.Query, flags: int) -> bytes:
        """SERVFAIL, saying why (RFC 8914), for an answer that needs signatures the signing
        budget cannot pay for now (signing.py). Never cached: the next query may be answered."""
        base = flags & (wire.FLAG_QR | _COPY_FLAGS)
        reply = self._finish(q, base | wire.SERVFAIL, bytearray(), 0, 0, 0, ede.SIGNING_OPTION)
        self._stat = None
        return reply

    def sign_with(self, signer: Signer | None, dnskey_ttl: int) -> None:
        """Sign answers to DO queries with ``signer``'s keys (None: stop), and publish them."""
        self.signer, self.dnskey_ttl = signer, dnskey_ttl
        self._index.publish_keys(signer, dnskey_ttl)

    def _signed_answer(self, q: wire.Query, reply: bytes) -> tuple[bytes, bool]:
        """Our answer to a DO query, signed, its denial compact (signing.py), and whether it is
        whole (see signed_reply). Raises OverBudget."""
        assert self.signer is not None
        index = self._index
        qkey = q.qname.lower()
        zone = index.find_zone(qkey)
        if zone is None:
            return reply, True
        node = index.nodes.get(qkey)
        types: list[int] | None = list(node.rrsets) if node is not None else None
        if types is None and qkey in index.ents:
            types = []  # an empty non-terminal: it exists, with nothing of its own
        return signed_reply(reply, self.signer, index.apex_of, qkey, types, self._room, self.budget)


def _select(node: Node, qtype: int, any_full: bool) -> Sequence[RRSet] | None:
    rrset = node.rrsets.get(qtype)
    if rrset is not None:
        return (rrset,)
    if qtype == wire.ANY and node.rrsets:
        if any_full:
            return tuple(node.rrsets.values())
        # RFC 8482 4.1: one RRset the name has (the first), a real answer a client can use
        # where HINFO "RFC8482" would be a made-up one; the reply stays pre-encoded.
        return (next(iter(node.rrsets.values())),)
    return None


def _add_records(
    body: bytearray,
    owner: bytes,
    items: Sequence[Item],
    limit: int,
    glue: list[tuple[bytes, tuple[bytes, ...]]],
) -> tuple[int, bool]:
    """Append records while they fit; return how many went in and whether all of them did."""
    added = 0
    for item in items:
        start = len(body)
        if start + len(owner) + len(item.body) > limit:
            return added, False
        body += owner
        body += item.body
        added += 1
        if item.glue:
            target_at = start + len(owner) + item.target_off
            glue_owner = _PTR.pack(0xC000 | target_at) if target_at <= _MAX_POINTER else item.target
            glue.append((glue_owner, item.glue))
    return added, True


def _bare(data: bytes, rcode: int) -> bytes:
    """A header-only reply: for queries whose question we cannot or will not read."""
    qid, flags = struct.unpack_from("!HH", data)
    out_flags = wire.FLAG_QR | (flags & wire.OPCODE_MASK) | rcode
    # RD and CD are defined for opcode QUERY only (RFC 1035 4.1.1, RFC 6895 2): a reply to any
    # other opcode leaves them clear, as ISC's genreport checks (opcodeflg).
    if not flags & wire.OPCODE_MASK:
        out_flags |= flags & _COPY_FLAGS
    return wire.header(qid, out_flags, 0, 0, 0, 0)
