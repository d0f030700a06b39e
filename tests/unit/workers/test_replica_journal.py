"""A worker's IXFR journal across a reload that builds a new index (INDEX, SERIAL, every service,
SWAP): the journal of the new index starts from what it answers at the swap, not from the empty
index the services were then built into."""

from __future__ import annotations

import asyncio
import gc

from dnsdisc.config import zones
from dnsdisc.config.load import Config
from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.face import DnsFace
from dnsdisc.netaddr import HostPort, NetRules
from dnsdisc.policies.roles import IN
from dnsdisc.registry.model import Instance, ServiceSettings
from dnsdisc.server.parts import build_index
from dnsdisc.workers import protocol
from dnsdisc.workers.replica import Replica, _apply

APEX = wire.text_to_wire("svc.internal.")


def _web(*addresses: str) -> list[object]:
    views = []
    for n, address in enumerate(addresses):
        inst = Instance.from_json("web", f"w{n}", {"address": address, "port": 80})
        views.append((inst, inst.weight, inst.priority, IN, None, None))
    return [("web", ServiceSettings.from_json("web", {}), views)]


def test_after_a_reload_an_ixfr_from_the_swapped_in_serial_has_the_removals() -> None:
    async def scenario() -> None:
        config = Config(
            dns_listen=(HostPort("127.0.0.1", 0),),
            transfer_allow=NetRules.parse(["127.0.0.0/8"], "", "transfer.allow"),
        )
        index = build_index(config, zones.ZoneData())
        face = DnsFace.create(config.dns_settings(), index)
        replica = Replica(index)
        # As a worker starts: its services, then the serial.
        _apply((protocol.SERVICES, 1, _web("10.0.0.1", "10.0.0.2")), replica, face)
        _apply((protocol.SERIAL, 2, 7), replica, face)
        # A reload that needs a new index: as WorkerPool.new_index and the reload send it.
        new = build_index(config, zones.ZoneData(), index.settings.serial)
        _apply((protocol.INDEX, 3, new.settings, new.static_records), replica, face)
        _apply((protocol.SERIAL, 4, 7), replica, face)
        _apply((protocol.SERVICES, 5, _web("10.0.0.1", "10.0.0.2")), replica, face)
        _apply((protocol.SWAP, 6), replica, face)
        served = face.responder.index
        swapped_in = served.serial  # what an AXFR now gives a secondary, with both addresses
        # w0 (10.0.0.1) goes: the next serial's difference must remove it.
        _apply((protocol.SERVICES, 7, _web("10.0.0.9", "10.0.0.2")), replica, face)
        _apply((protocol.SERIAL, 8, 8), replica, face)
        assert served.journal is not None
        found = served.journal.since(APEX, swapped_in)
        assert found is not None
        removed = {(wire.wire_to_text(o), b[-4:]) for o, b in found[0]}
        added = {(wire.wire_to_text(o), b[-4:]) for o, b in found[1]}
        one, two = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
        assert ("web.svc.internal.", one) in removed  # before: nothing removed at all
        assert ("web.svc.internal.", two) not in added  # before: the whole zone "added"

    asyncio.run(scenario())


def test_new_services_applied_in_bulk_are_frozen_and_a_few_are_not() -> None:
    # Registering 100,000 new services of 10 came to the workers as SERVICES, applied with the
    # collector running and nothing frozen: full collections of seconds, workers killed.
    async def scenario() -> tuple[int, int]:
        config = Config(dns_listen=(HostPort("127.0.0.1", 0),))
        index = build_index(config, zones.ZoneData())
        face = DnsFace.create(config.dns_settings(), index)
        replica = Replica(index)

        def services(first: int, count: int) -> list[object]:
            out = []
            for s in range(first, first + count):
                name = f"s{s}"
                views = []
                for n in range(10):
                    inst = Instance.from_json(
                        name, f"i{n}", {"address": f"10.1.{s}.{n + 1}", "port": 80}
                    )
                    views.append((inst, inst.weight, inst.priority, IN, None, None))
                out.append((name, ServiceSettings.from_json(name, {}), views))
            return out

        few, bulk = services(0, 2), services(2, 13)  # 20 members; 130, as a batch of 128 makes
        frozen = gc.get_freeze_count()
        _apply((protocol.SERVICES, 1, few), replica, face)
        after_few = gc.get_freeze_count() - frozen
        frozen = gc.get_freeze_count()
        _apply((protocol.SERVICES, 2, bulk), replica, face)
        assert face.responder.index.nodes.get(wire.text_to_wire("s14.svc.internal."))
        return after_few, gc.get_freeze_count() - frozen

    try:
        few, bulk = asyncio.run(scenario())
    finally:
        gc.unfreeze()
    assert few <= 0
    assert bulk > 130 * 10  # the 130 instances' index objects (dozens each), and more
