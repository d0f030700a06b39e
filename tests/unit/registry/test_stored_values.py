"""registry: values read from a store are validated; a bad one is skipped (and counted), an
unknown field (a newer node's) is dropped and the rest kept."""

from __future__ import annotations

import time

from dnsdisc.registry.events import Events
from dnsdisc.registry.model import INSTANCE_FIELDS, known_fields
from dnsdisc.registry.replication import Follower
from dnsdisc.registry.settings import RegistrySettings
from dnsdisc.registry.state import Memory
from dnsdisc.store.base import Op, Snapshot


def memory() -> Memory:
    return Memory(RegistrySettings(), Events(), time.monotonic)


def test_known_fields_drops_unknown_ones_also_inside_the_check() -> None:
    body = {"address": "10.0.0.1", "port": 1, "colour": "x", "check": {"type": "tcp", "jitter": 1}}
    assert known_fields(body, INSTANCE_FIELDS) == {
        "address": "10.0.0.1",
        "port": 1,
        "check": {"type": "tcp"},
    }
    assert known_fields([1], INSTANCE_FIELDS) == [1]


def test_load_skips_invalid_values_and_counts_them() -> None:
    mem = memory()
    snap = Snapshot(
        services={"web": {"ttl": 9, "new": 1}, "bad": {"policy": "nope"}},
        instances={
            ("web", "a"): {"address": "10.0.0.1", "port": 80, "new": True},
            ("web", "b"): {"address": "10.0.0.2", "port": 0},
        },
        statuses={("web", "a"): {"status": "bogus"}},
    )
    mem.load(snap)
    web = mem.get("web")
    assert web is not None and web.settings.ttl == 9
    assert list(web.instances) == ["a"]
    assert mem.get("bad") is None
    assert mem.skipped == 3


def test_the_follower_keeps_what_it_knows_of_a_newer_value() -> None:
    mem = memory()
    follower = Follower(mem)
    follower.apply_change(
        Op("put_instance", "web", "a", {"address": "10.0.0.1", "port": 80, "z": 1})
    )
    follower.apply_change(Op("put_instance", "web", "b", {"address": "10.0.0.1", "port": -1}))
    assert mem.find("web", "a") is not None and mem.find("web", "b") is None
    assert mem.skipped == 1
