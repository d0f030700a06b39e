"""registry.limits: each cap refuses the write past it, naming its config key."""

from __future__ import annotations

from typing import Any

import pytest

from dnsdisc.errors import LimitError
from dnsdisc.registry.limits import Limits, check_instance, check_meta, check_new_service
from dnsdisc.registry.model import Instance

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
        check_instance(LIMITS, inst("c"), held, 2, None, lambda: 2)
    # Replacing one held instance is not a new one.
    check_instance(LIMITS, inst("a"), held, 2, held[0], lambda: 99)
    with refused("limits.instances"):
        check_instance(LIMITS, inst("b"), held[:1], 1, None, lambda: 3)


def test_distinct_tags_over_the_service() -> None:
    held = [inst("a", ("x", "y")), inst("b", ("z",))]
    check_instance(LIMITS, inst("b", ("x", "z")), held, 2, held[1], lambda: 2)
    with refused("limits.tags_per_service"):
        check_instance(LIMITS, inst("b", ("w", "z")), held, 2, held[1], lambda: 2)
    # The instance's own old tags do not count: b drops z and takes w.
    check_instance(LIMITS, inst("b", ("w",)), held, 2, held[1], lambda: 2)


def test_meta_bytes_count_key_equals_value() -> None:
    check_meta(LIMITS, (("k", "123456"),), "instance")  # 8 bytes
    with refused("limits.meta_bytes"):
        check_meta(LIMITS, (("k", "1234567"),), "instance")
    with refused("limits.meta_bytes"):
        check_instance(LIMITS, inst("a", meta=(("a", "1"), ("b", "1234"))), [], 0, None, lambda: 0)
