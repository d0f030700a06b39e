"""An AXFR lists its zone's names a slice at a time, and sends its messages, letting the DNS
process's other work run in between (a million instances' zone kept a worker from its pings for
seconds, and it was killed mid-transfer), in the order the transfer always sent them: the apex,
then shorter names first."""

from __future__ import annotations

import asyncio
import itertools

import dns.message
import pytest

from dnsdisc.dnsserver import transfer, wire
from dnsdisc.dnsserver.settings import TransferSettings
from dnsdisc.dnsserver.transfer import Transfers
from dnsdisc.netaddr import NetRules
from tests.support.world import World

APEX = "svc.internal."


def test_an_axfr_lists_the_zone_in_slices_in_the_order_it_always_had(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = World()
    for s in range(12):
        for n in range(3):
            w.add(f"svc{s}", f"i{n}", address=f"10.0.{s}.{n + 1}", port=80, tags=["blue"])
    apex = wire.text_to_wire(APEX)
    zone = w.index.zones[apex]
    listed = [name for name in w.index.nodes if w.index.find_zone(name) is zone]
    assert len(listed) > 90
    # As _zone_messages sorted them before (one sort with a Python key).
    expected = sorted(listed, key=lambda n: (n != apex, len(n), n))
    monkeypatch.setattr(transfer, "NAMES_SLICE", 10)

    async def scenario() -> tuple[list[bytes], int, int]:
        turns = 0
        running = True

        async def other_work() -> None:  # the queries and pings of the process
            nonlocal turns
            while running:
                turns += 1
                await asyncio.sleep(0)

        sent: list[bytes] = []
        seen_at_first = -1
        turns_at: list[int] = []

        def write(message: bytes) -> None:
            nonlocal seen_at_first
            if seen_at_first < 0:
                seen_at_first = turns
            turns_at.append(turns)
            sent.append(message)

        async def drained() -> None:
            pass

        ticker = asyncio.ensure_future(other_work())
        await asyncio.sleep(0)
        before = turns
        transfers = Transfers(TransferSettings(allow=NetRules.parse(["127.0.0.0/8"], "", "a")))
        query = dns.message.make_query(APEX, "AXFR").to_wire()
        await transfers.serve(w.index, query, "127.0.0.1", write, drained)
        running = False
        await ticker
        # The other work ran between every two messages too (a client that keeps up).
        assert all(b > a for a, b in itertools.pairwise(turns_at))
        return sent, before, seen_at_first

    monkeypatch.setattr(transfer, "MESSAGE_BYTES", 500)  # several messages
    sent, before, first = asyncio.run(scenario())
    assert len(sent) > 5
    # The other work ran between the slices of the listing, before the first message went.
    assert first - before >= len(w.index.nodes) // 10
    owners: list[bytes] = []
    for message in sent:
        for rrset in dns.message.from_wire(message, xfr=True).answer:
            name = rrset.name.to_wire().lower()
            if not owners or owners[-1] != name:
                owners.append(name)
    assert owners[0] == apex and owners[-1] == apex  # the SOA at both ends
    # Every name with records (an empty protocol name has none), in that order.
    with_records = [
        n
        for n in expected
        if any(rrset.members for t, rrset in w.index.nodes[n].peek().items() if t != wire.SOA)
        or n == apex
    ]
    assert len(with_records) > 60
    assert list(dict.fromkeys(owners[:-1])) == with_records
