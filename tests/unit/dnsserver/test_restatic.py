"""AnswerIndex.restatic (#16 item 20): a reload that changes only zone records replaces them in
place, and the index then answers exactly as one built from scratch with the new records."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.zone import IndexSettings, StaticRecord
from dnsdisc.registry.model import Instance, ServiceSettings
from tests.support.members import DOMAIN, Member, make_index, names


def record(owner: str, address: str) -> StaticRecord:
    return StaticRecord(wire.text_to_wire(owner), wire.A, 300, wire.address_rdata(address)[1])


def fill(index: AnswerIndex) -> None:
    """Services whose names and reverse names the records below shadow or free."""
    rng = random.Random(3)
    for service in ("web", "api", "db"):
        settings = ServiceSettings.from_json(service, {})
        members = [
            Member(
                Instance.from_json(
                    service,
                    f"{service}-{n}",
                    {"address": f"10.0.{n}.{len(service)}", "port": 80, "tags": ["blue"]},
                ),
                weight=rng.randrange(1, 9),
            )
            for n in range(4)
        ]
        index.rebuild(service, settings, members)


def scratch(settings: IndexSettings, records: list[StaticRecord]) -> AnswerIndex:
    index = AnswerIndex(settings, records)
    fill(index)
    return index


BEFORE = [
    record("app.svc.internal.", "192.0.2.1"),
    record("web.svc.internal.", "192.0.2.80"),  # shadows the service web
    record("3.0.0.10.in-addr.arpa.", "192.0.2.3"),  # shadows the PTR of api-0
]
AFTER = [
    record("app.svc.internal.", "192.0.2.2"),  # changed
    record("api.svc.internal.", "192.0.2.81"),  # now shadows api; web is freed
    record("new.sub.svc.internal.", "192.0.2.9"),  # a new name with an empty non-terminal
]


def test_replacing_the_records_in_place_answers_as_a_fresh_build() -> None:
    first = make_index().settings
    index = scratch(first, BEFORE)
    assert index.nodes[wire.text_to_wire("web.svc.internal.")].rrsets[wire.A].items[0].body[
        -4:
    ] == bytes([192, 0, 2, 80])
    later = replace(first, serial=2)
    index.restatic(later, AFTER)
    assert names(index) == names(scratch(later, AFTER))
    # Freed: the service web and api-0's PTR answer again; the zone's SOA has the new serial
    # on every name (nodes share the zone).
    web = index.nodes[wire.text_to_wire("web.svc.internal.")].rrsets[wire.A]
    assert len(web.items) == 4
    assert wire.text_to_wire("3.0.0.10.in-addr.arpa.") in index.nodes
    assert index.nodes[wire.text_to_wire("db.svc.internal.")].zone.soa == (
        scratch(later, AFTER).zones[DOMAIN].soa
    )
    # Back again: the records, the serial and every name as they were.
    index.restatic(replace(later, serial=3), BEFORE)
    assert names(index) == names(scratch(replace(first, serial=3), BEFORE))


def test_a_service_change_after_the_records_changed_still_skips_static_names() -> None:
    index = scratch(make_index().settings, BEFORE)
    index.restatic(replace(index.settings, serial=2), AFTER)
    api = ServiceSettings.from_json("api", {})
    index.rebuild(
        "api", api, [Member(Instance.from_json("api", "x", {"address": "10.9.9.9", "port": 1}))]
    )
    body = index.nodes[wire.text_to_wire("api.svc.internal.")].rrsets[wire.A].items[0].body
    assert body[-4:] == bytes([192, 0, 2, 81])  # the zone record still wins


def test_other_settings_need_a_new_index() -> None:
    index = scratch(make_index().settings, BEFORE)
    with pytest.raises(ValueError, match="new index"):
        index.restatic(replace(index.settings, negative_ttl=7), AFTER)
    assert names(index) == names(scratch(make_index().settings, BEFORE))
