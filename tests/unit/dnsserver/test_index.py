"""The answer index's reply cache, fed bytes through the responder: cached replies keep their
own query id, changes empty the cache, and drawn orders keep the policy's shares."""

from __future__ import annotations

from collections import Counter

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.reversename

from dnsdisc.dnsserver.rrset import POOL, REUSE, ROTATION_PLACES, Item, RRSet, cached_orders
from dnsdisc.policies.balance import round_robin
from tests.support.stats import assert_shares, chi_square
from tests.support.world import World, texts


def test_a_repeated_query_is_answered_from_the_cache_with_its_own_id(world: World) -> None:
    query = dns.message.make_query("blue.web.svc.internal.", "A")
    first = world.raw(query.to_wire())
    assert first is not None
    assert world.index.cache.table, "the reply was not cached"
    query.id = (query.id + 1) % 65536
    again = world.raw(query.to_wire())
    assert again is not None
    assert again[:2] == query.id.to_bytes(2, "big") and again[2:] == first[2:]
    before = world.responder.stats.by_type_rcode[(1, 0)]
    world.raw(query.to_wire())
    assert world.responder.stats.by_type_rcode[(1, 0)] == before + 1  # hits are counted


def test_a_change_empties_the_cache(world: World) -> None:
    assert texts(world.ask("web.svc.internal.")) == ["10.0.0.1", "10.0.0.2"]
    assert texts(world.ask("nothing.web.svc.internal.")) == []
    world.add("web", "web-3", address="10.0.0.3", port=8080)
    assert texts(world.ask("web.svc.internal.")) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    # The NXDOMAIN cached before is not kept past the change either.
    world.add("other", "nothing", address="10.0.0.9", port=80)
    assert world.ask("nothing.web.svc.internal.").rcode() == dns.rcode.NXDOMAIN
    world.add("web", "nothing", address="10.0.0.9", port=80)
    assert texts(world.ask("nothing.web.svc.internal.")) == ["10.0.0.9"]


def test_cached_truncated_replies_stay_truncated_and_counted() -> None:
    w = World()
    for n in range(60):
        w.add("big", f"i{n}", address=f"10.1.0.{n}", port=80)
    stats = w.responder.stats
    for _ in range(3):
        assert w.ask("big.svc.internal.", use_edns=False).flags & dns.flags.TC
    assert stats.truncated == 3
    assert len(texts(w.ask("big.svc.internal.", tcp=True))) == 60  # TCP is cached apart


def test_cached_orders_keep_the_weighted_shares() -> None:
    """Replies come from the cache, but every answer still draws its own order."""
    w = World()
    weights = {"10.0.0.1": 1, "10.0.0.2": 2, "10.0.0.3": 3, "10.0.0.4": 4}
    for n, (address, weight) in enumerate(weights.items()):
        w.add("web", f"w{n}", address=address, port=80, weight=weight)
    w.settings("web", max_answers=1)
    query = dns.message.make_query("web.svc.internal.", "A").to_wire()
    firsts: Counter[str] = Counter()
    for _ in range(8000):
        reply = w.raw(query)
        assert reply is not None
        firsts[dns.message.from_wire(reply).answer[0][0].to_text()] += 1
    assert_shares(firsts, weights, max_abs_error=0.02)
    assert len(w.index.cache.table) == 1


def test_many_instances_draw_from_a_resampled_pool_with_the_weight_shares() -> None:
    """8 instances have 40320 orders, too many for a table: orders come from a pool that is
    redrawn as it is read. Shares still follow the weights; cached replies stay bounded."""
    w = World()
    weights = {f"10.0.0.{n}": n for n in range(1, 9)}
    for n, (address, weight) in enumerate(weights.items()):
        w.add("web", f"w{n}", address=address, port=80, weight=weight)
    query = dns.message.make_query("web.svc.internal.", "A").to_wire()
    firsts: Counter[str] = Counter()
    for _ in range(20000):
        reply = w.raw(query)
        assert reply is not None
        msg = dns.message.from_wire(reply)
        assert len(msg.answer[0]) == 8
        firsts[msg.answer[0][0].to_text()] += 1
    # A pooled order serves a geometric number of answers (mean REUSE), so counts vary about
    # E[K^2]/E[K] = 2*REUSE - 1 times as much as independent draws would: scale the chi-square
    # by that. Uniform or first-listed orders would still be far outside (0.09 or more off for
    # the heaviest instance; the share check allows 0.03, about 4 standard deviations).
    total = sum(weights.values())
    for address, weight in weights.items():
        assert abs(firsts[address] / 20000 - weight / total) < 0.03, (address, firsts)
    assert chi_square(firsts, weights) / (2 * REUSE - 1) < 24.32, firsts  # 7 df, alpha 0.001
    entry = next(iter(w.index.cache.table.values()))
    # An order the pool replaces is dropped from the cache: it holds at most the pool's orders.
    assert 0 < len(entry.replies) <= POOL
    assert w.index.cache.size == entry.size


def test_a_drawn_rrset_keeps_few_replies_whatever_asks_for_it() -> None:
    """Orders a pool replaces are dropped only from the entry being read; the same RRset asked
    over UDP, with EDNS and over TCP has three entries, each bounded by twice the pool."""
    w = World()
    for n in range(1, 13):
        w.add("web", f"w{n}", address=f"10.0.0.{n}", port=80, weight=n)
    plain = dns.message.make_query("web.svc.internal.", "A").to_wire()
    edns = dns.message.make_query("web.svc.internal.", "A", use_edns=0).to_wire()
    for _ in range(6000):
        w.raw(plain)
        w.raw(edns)
        w.raw(plain, tcp=True)
    entries = list(w.index.cache.table.values())
    assert len(entries) == 3
    assert all(0 < len(e.replies) <= 2 * POOL for e in entries), [len(e.replies) for e in entries]
    assert w.index.cache.size == sum(e.size for e in entries)


def test_every_order_of_a_table_stays_cached() -> None:
    """5 weighted instances with max_answers 5 have 120 orders (the benchmark's data set): once
    each has been drawn, every answer comes from the cache."""
    w = World()
    for n in range(1, 6):
        w.add("web", f"w{n}", address=f"10.0.0.{n}", port=80, weight=10 * n)
    w.settings("web", max_answers=5)
    queries = [dns.message.make_query(name, kind).to_wire() for name, kind in
               [("web.svc.internal.", "A"), ("_web._tcp.svc.internal.", "SRV")]]  # fmt: skip
    # The rarest order has a chance of about 1/1000: 20000 draws see every one (odds e**-21).
    for _ in range(20000):
        for query in queries:
            w.raw(query)
    assert sorted(len(e.replies) for e in w.index.cache.table.values()) == [120, 120]
    size = w.index.cache.size
    encoded = w.responder.stats.latency.count
    for _ in range(1000):
        for query in queries:
            w.raw(query)
    assert w.index.cache.size == size  # nothing encoded again
    assert w.responder.stats.latency.count == encoded + 2000


def test_round_robin_windows_are_kept_and_each_round_after_the_first_is_cached() -> None:
    """300 instances, 16 places: one window per rotation offset. After the first round of the
    rotation every answer is a cached reply, and the rotation stays exact (each instance first
    once per round, in order)."""
    w = World()
    n = 300
    for i in range(n):
        w.add("rr", f"i{i}", address=f"10.2.{i // 250}.{i % 250 + 1}", port=80)
    w.settings("rr", policy="round_robin", max_answers=16)
    encoded = 0
    respond = w.responder._respond

    def counting(data: bytes, tcp: bool, *client: object) -> object:
        nonlocal encoded
        encoded += 1
        return respond(data, tcp, *client)  # type: ignore[arg-type]

    w.responder._respond = counting  # type: ignore[assignment,method-assign]
    query = dns.message.make_query("rr.svc.internal.", "A", use_edns=0).to_wire()
    firsts = []
    for _ in range(3 * n):
        reply = w.raw(query)
        assert reply is not None
        records = [rr.to_text() for rr in dns.message.from_wire(reply).answer[0]]
        assert len(records) == 16
        firsts.append(records[0])
    assert encoded == n  # the first round only
    assert firsts[:n] == firsts[n : 2 * n] == firsts[2 * n :]
    assert len(set(firsts[:n])) == n
    entry = next(iter(w.index.cache.table.values()))
    assert len(entry.replies) == n


def test_long_round_robin_windows_are_not_all_kept() -> None:
    items = [Item(b"x" * 14) for _ in range(5000)]
    rrset = RRSet(1, items, round_robin)
    assert cached_orders(rrset, 16) == 5000
    assert cached_orders(rrset, ROTATION_PLACES // 5000 + 1) == 2 * POOL
    assert cached_orders(RRSet(1, items[:5], round_robin), 5) == 2 * POOL
