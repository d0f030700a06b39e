"""registry.limits: each cap refuses the write past it, naming its config key."""

from __future__ import annotations

import random
from typing import Any

import pytest

from dnsdisc.errors import LimitError
from dnsdisc.registry.limits import (
    Limits,
    check_instance,
    check_meta,
    check_new_service,
    tag_counts,
)
from dnsdisc.registry.model import Instance, ServiceSettings
from dnsdisc.registry.state import InstanceState, Service

LIMITS = Limits(services=2, instances_per_service=2, instances=3, tags_per_service=3, meta_bytes=8)


def inst(iid: str, tags: tuple[str, ...] = (), meta: tuple[tuple[str, str], ...] = ()) -> Instance:
    return Instance("web", iid, "10.0.0.1", 80, tags=tags, meta=meta)


def refused(key: str) -> Any:
    return pytest.raises(LimitError, match=key.replace(".", r"\."))


def test_new_service_past_the_cap() -> None:
    check_new_service(LIMITS, 1)
    with refused("limits.services") as info:
        check_new_service(LIMITS, 2)
    assert info.value.field == "limits.services"
    assert info.value.http_status == 409


def test_instances_per_service_and_in_all() -> None:
    held = [inst("a"), inst("b")]
    with refused("limits.instances_per_service"):
        check_instance(LIMITS, inst("c"), tag_counts(held), 2, None, lambda: 2)
    # Replacing one held instance is not a new one.
    check_instance(LIMITS, inst("a"), tag_counts(held), 2, held[0], lambda: 99)
    with refused("limits.instances"):
        check_instance(LIMITS, inst("b"), tag_counts(held[:1]), 1, None, lambda: 3)


def test_distinct_tags_over_the_service() -> None:
    held = [inst("a", ("x", "y")), inst("b", ("z",))]
    check_instance(LIMITS, inst("b", ("x", "z")), tag_counts(held), 2, held[1], lambda: 2)
    with refused("limits.tags_per_service"):
        check_instance(LIMITS, inst("b", ("w", "z")), tag_counts(held), 2, held[1], lambda: 2)
    # The instance's own old tags do not count: b drops z and takes w.
    check_instance(LIMITS, inst("b", ("w",)), tag_counts(held), 2, held[1], lambda: 2)


def test_meta_bytes_count_key_equals_value() -> None:
    check_meta(LIMITS, (("k", "123456"),), "instance")  # 8 bytes
    with refused("limits.meta_bytes"):
        check_meta(LIMITS, (("k", "1234567"),), "instance")
    with refused("limits.meta_bytes"):
        check_instance(LIMITS, inst("a", meta=(("a", "1"), ("b", "1234"))), {}, 0, None, lambda: 0)


def test_a_service_keeps_its_tag_counts_through_puts_and_drops() -> None:
    # The registry checks the tag cap against counts it keeps, not a scan of the service.
    rng = random.Random(3)
    svc = Service(ServiceSettings.from_json("web", {}))
    assert svc.tag_counts() == {}
    for _ in range(2000):
        iid = f"i{rng.randrange(40)}"
        if rng.random() < 0.3:
            svc.drop(iid)
        else:
            tags = tuple(rng.sample([f"t{n}" for n in range(12)], rng.randrange(4)))
            svc.put(InstanceState(inst(iid, tags), 0.0, 0.0, since=0.0))
        if rng.random() < 0.01:
            svc.keep(dict(list(svc.instances.items())[:10]))  # counted afresh when asked
        assert svc.tag_counts() == tag_counts(s.instance for s in svc.instances.values())
