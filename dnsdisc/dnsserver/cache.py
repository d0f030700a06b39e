"""The reply cache: replies the responder has already encoded, by query, until a name changes.

A query seen before (the same bytes but the ID) is answered from here: only its balanced RRset
draws an order, and the reply for that order is reused, or encoded once and kept. UDP and TCP
queries are kept apart, as their size limits differ. The index owns one ``ReplyCache`` and
empties it on every change of a name (``forget``); the responder reads the two tables directly
(its hit path is a dictionary lookup) and writes through ``store`` and ``discard``. Memory stays
bounded whatever the clients ask: at ``limit`` replies the cache starts over.
"""

from __future__ import annotations

from dnsdisc.dnsserver.rrset import RRSet, cached_orders

# Replies cached per index (all queries and orders together; 10-30 MB for answers of a few
# hundred bytes).
MAX_CACHED_REPLIES = 50000

Order = tuple[int, ...]  # indices into an RRset's members, as RRSet.next_order draws them
StatKey = tuple[int, int]  # (qtype, rcode), as QueryStats counts a reply
# One encoded reply: without its ID, with its stats key and whether TC is set.
CachedReply = tuple[bytes, StatKey, bool]


class CachedQuery:
    """The replies already encoded for one query: by the order its balanced RRset drew (``()``
    when nothing is balanced)."""

    __slots__ = ("replies", "rrset")

    def __init__(self, rrset: RRSet | None) -> None:
        self.rrset = rrset
        self.replies: dict[Order, CachedReply] = {}


class ReplyCache:
    """Cached queries by their bytes after the ID, in ``udp`` and ``tcp``, and ``count``, the
    replies held in both. Invariants: ``count`` is the sum of ``len(entry.replies)`` over both
    tables and never exceeds ``limit``; the two tables are emptied in place, never replaced, so
    a reader may keep a reference to them."""

    __slots__ = ("count", "limit", "tcp", "udp")

    def __init__(self, limit: int = MAX_CACHED_REPLIES) -> None:
        self.udp: dict[bytes, CachedQuery] = {}
        self.tcp: dict[bytes, CachedQuery] = {}
        self.count = 0
        self.limit = limit

    def forget(self) -> None:
        """Drop every reply: a name changed."""
        if not self.udp and not self.tcp:
            return  # nothing cached since the last time (a build installs many names)
        self.udp.clear()
        self.tcp.clear()
        self.count = 0

    def discard(self, entry: CachedQuery, order: Order) -> None:
        """Drop the reply for an order its RRset's pool has replaced: it would never be read."""
        if entry.replies.pop(order, None) is not None:
            self.count -= 1

    def store(
        self,
        tcp: bool,
        key: bytes,
        entry: CachedQuery | None,
        drawn: RRSet | None,
        order: Order,
        reply: bytes,
        stat: StatKey,
    ) -> None:
        """Keep ``reply``, just encoded for the query ``key`` (its entry, if it had one) with
        ``order`` of ``drawn``, the one RRset it ordered (None: nothing was ordered)."""
        if self.count >= self.limit:
            # A flood of distinct queries, or many large services asked at once: start over.
            self.forget()
            entry = None
        if entry is None or entry.rrset is not drawn:
            if entry is not None:
                self.count -= len(entry.replies)
            entry = CachedQuery(drawn)
            (self.tcp if tcp else self.udp)[key] = entry
        replies = entry.replies
        if len(replies) >= cached_orders(drawn):
            self.count -= len(replies)
            replies.clear()  # orders beyond count (round robin of many): stay bounded
        if order not in replies:
            self.count += 1
        replies[order] = (reply[2:], stat, bool(reply[2] & 0x02))
