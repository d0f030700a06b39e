"""The SOA serial following the registry's change index, the IXFR journal's condensed
differences, and the cheap test of which TCP queries are transfers."""

from __future__ import annotations

import asyncio

import dns.message

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.journal import MAX_RECORDS, Journal
from dnsdisc.dnsserver.transfer import AXFR, IXFR, transfer_type
from dnsdisc.netaddr import NetRules
from tests.support.world import World, texts

APEX = wire.text_to_wire("svc.internal.")


def world() -> World:
    return World(transfer_allow=NetRules.parse(["127.0.0.0/8"], "", "transfer.allow"))


def records(
    found: tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]],
) -> tuple[set[str], set[str]]:
    def text(recs: list[tuple[bytes, bytes]]) -> set[str]:
        return {f"{wire.wire_to_text(owner)} {body[10:].hex()}" for owner, body in recs}

    return text(found[0]), text(found[1])


def test_the_serial_follows_the_change_index_and_the_journal_condenses() -> None:
    w = world()
    index = w.index
    index.set_changes(5)  # the first step starts the journal
    assert index.serial == (index.settings.serial + 5) % 2**32
    start = index.serial
    soa = w.ask("svc.internal.", "SOA")
    assert soa.answer[0][0].serial == start
    w.add("web", "a", address="10.0.0.1", port=80)
    index.set_changes(6)
    mid = index.serial
    w.add("web", "b", address="10.0.0.2", port=80)
    index.set_changes(7)
    assert w.ask("svc.internal.", "SOA").answer[0][0].serial == index.serial != mid
    journal = index.journal
    assert journal is not None
    removed, added = records(journal.since(APEX, start) or ([], []))
    a, b = bytes([10, 0, 0, 1]).hex(), bytes([10, 0, 0, 2]).hex()
    assert f"web.svc.internal. {a}" in added and f"web.svc.internal. {b}" in added
    assert not removed
    # a goes again: from the start it was never there; from mid it is removed.
    asyncio.run(w.registry.delete_instance("web", "a"))
    index.set_changes(8)
    removed, added = records(journal.since(APEX, start) or ([], []))
    assert f"web.svc.internal. {a}" not in added and f"web.svc.internal. {a}" not in removed
    removed, added = records(journal.since(APEX, mid) or ([], []))
    assert f"web.svc.internal. {a}" in removed and f"web.svc.internal. {b}" in added
    # A serial the journal never saw: None (the whole zone goes instead).
    assert journal.since(APEX, (start - 1000) % 2**32) is None
    assert texts(w.ask("web.svc.internal.")) == ["10.0.0.2"]


def test_the_journal_is_bounded() -> None:
    w = world()
    w.index.set_changes(1)
    journal = w.index.journal
    assert isinstance(journal, Journal)
    journal.records = MAX_RECORDS  # as if full: the next step pushes the oldest out
    first = w.index.serial
    w.add("web", "a", address="10.0.0.1", port=80)
    w.index.set_changes(2)
    w.add("web", "b", address="10.0.0.2", port=80)
    w.index.set_changes(3)
    assert journal.since(APEX, first) is None and len(journal.steps) == 1


def test_no_journal_without_anyone_allowed_to_transfer() -> None:
    w = World()
    w.index.set_changes(3)
    assert w.index.journal is None and w.index.touched is None


def test_transfer_type_reads_the_question() -> None:
    for rdtype, want in (("AXFR", AXFR), ("IXFR", IXFR), ("A", 0), ("SOA", 0)):
        assert transfer_type(dns.message.make_query("svc.internal.", rdtype).to_wire()) == want
    reply = dns.message.make_response(dns.message.make_query("svc.internal.", "AXFR"))
    assert transfer_type(reply.to_wire()) == 0  # a response
    assert transfer_type(b"\x00" * 5) == 0
    assert transfer_type(b"\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3f") == 0  # cut


def _zone(index: object) -> set[tuple[bytes, bytes]]:
    """Every (name, record) of the service domain, SOA aside, as an AXFR would carry it."""
    from dnsdisc.dnsserver.journal import journal_records

    out = set()
    zone = index.zones[APEX]  # type: ignore[attr-defined]
    for name, node in index.nodes.items():  # type: ignore[attr-defined]
        if index.find_zone(name) is zone:  # type: ignore[attr-defined]
            out |= {(name, body) for body in journal_records(node)}
    return out


def test_the_journal_replays_random_changes_exactly() -> None:
    """Registrations, moves, tag and weight changes, deregistrations and whole-service deletes
    at random: from every serial the journal holds, its condensed difference applied to the
    zone as it was gives the zone as it is."""
    import random

    rng = random.Random(23)
    w = world()
    index = w.index
    changes = w.registry.events.changes  # what the server hands the index (parts.attach)
    index.set_changes(changes.index)
    history: dict[int, set[tuple[bytes, bytes]]] = {index.serial: _zone(index)}
    for _ in range(40):
        for _ in range(rng.randint(1, 6)):
            service = f"s{rng.randint(0, 3)}"
            iid = f"i{rng.randint(0, 8)}"
            action = rng.random()
            if action < 0.6:
                body = {"address": f"10.0.{rng.randint(0, 3)}.{rng.randint(1, 9)}",
                        "port": rng.choice([80, 81]), "tags": rng.sample(["a", "b", "c"], 2),
                        "weight": rng.randint(1, 3), "meta": {"v": str(rng.randint(0, 2))}}  # fmt: skip
                w.add(service, iid, **body)
            elif action < 0.9:
                svc = w.registry.get(service)
                if svc is not None and iid in svc.instances:
                    asyncio.run(w.registry.delete_instance(service, iid))
            elif w.registry.get(service) is not None:
                asyncio.run(w.registry.delete_service(service))
        index.set_changes(changes.index)
        history[index.serial] = _zone(index)
        journal = index.journal
        assert journal is not None
        now = history[index.serial]
        for serial, then in history.items():
            found = journal.since(APEX, serial)
            if serial == index.serial or found is None:
                continue
            removed, added = (set(found[0]), set(found[1]))
            assert removed <= then and not (added & then - removed), serial
            assert (then - removed) | added == now, serial
