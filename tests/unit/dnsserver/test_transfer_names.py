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


def test_transfers_from_one_address_beyond_per_client_are_refused_and_the_others_served() -> None:
    """Up to PER_CLIENT transfers from one address run at once (two secondaries behind one
    address, each asking for its zones together); one more is REFUSED at once, and another
    address is still served."""
    w = World()
    w.add("web", "i0", address="10.0.0.1", port=80)
    query = dns.message.make_query(APEX, "AXFR").to_wire()

    async def scenario() -> tuple[list[int], list[int], int]:
        transfers = Transfers(TransferSettings(allow=NetRules.parse(["127.0.0.0/8"], "", "a")))
        gate = asyncio.Event()
        rcodes: list[int] = []

        async def held() -> None:  # a secondary that reads slowly: its transfer stays running
            await gate.wait()

        def write(message: bytes) -> None:
            rcodes.append(dns.message.from_wire(message).rcode())

        running = [
            asyncio.ensure_future(transfers.serve(w.index, query, "127.0.0.1", write, held))
            for _ in range(transfer.PER_CLIENT)
        ]
        await asyncio.sleep(0.01)
        assert transfers.running["127.0.0.1"] == transfer.PER_CLIENT
        first = len(rcodes)
        await transfers.serve(w.index, query, "127.0.0.1", write, held)  # one too many
        refused = rcodes[first:]
        await transfers.serve(w.index, query, "127.0.0.2", write, _no_wait)  # another address
        other = rcodes[first + 1 :]
        gate.set()
        await asyncio.gather(*running)
        return refused, other, transfers.refused

    refused, other, count = asyncio.run(scenario())
    assert refused == [dns.rcode.REFUSED] and count == 1
    assert other and set(other) == {dns.rcode.NOERROR}
    assert transfer.PER_CLIENT >= 4  # a secondary's zones and a second secondary (see there)


async def _no_wait() -> None:
    pass
