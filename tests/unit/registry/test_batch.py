"""registry.apply_batch: each operation is checked against memory as the operations before it
leave it (``batch.Overlay``, which holds only what the batch touched), the limits count the
batch's own instances, nothing is applied when one fails, and the batch logs one line."""

from __future__ import annotations

import asyncio
import logging

import pytest

from dnsdisc.errors import LimitError
from dnsdisc.registry import batch
from dnsdisc.registry.batch import BatchError, BatchOp
from dnsdisc.registry.limits import Limits
from dnsdisc.registry.model import Instance
from dnsdisc.registry.registry import Registry


def reg(service: str, iid: str, n: int = 1) -> BatchOp:
    inst = Instance.from_json(service, iid, {"address": f"10.0.0.{n}", "port": 80})
    return BatchOp("register", service, iid, registration=inst)


def dereg(service: str, iid: str) -> BatchOp:
    return BatchOp("deregister", service, iid)


def run(registry: Registry, ops: list[BatchOp]) -> list[int]:
    async def scenario() -> list[int]:
        if not registry.events.changes.started:
            await registry.load()
        return await registry.apply_batch(ops)

    return asyncio.run(scenario())


def fails(registry: Registry, ops: list[BatchOp]) -> BatchError:
    with pytest.raises(BatchError) as caught:
        run(registry, ops)
    return caught.value


def test_an_instance_registered_twice_in_a_batch_is_created_then_replaced() -> None:
    registry = Registry()
    assert run(registry, [reg("web", "a"), reg("web", "a", 2), reg("web", "b")]) == [201, 200, 201]
    assert registry.instance("web", "a").instance.address == "10.0.0.2"


def test_a_batch_sees_its_own_registrations_and_deregistrations() -> None:
    registry = Registry()
    run(registry, [reg("web", "old")])
    ops = [dereg("web", "old"), reg("web", "old", 2), reg("web", "new"), dereg("web", "new")]
    assert run(registry, ops) == [204, 201, 201, 204]
    assert set(registry.service("web").instances) == {"old"}
    # Deregistered earlier in the same batch: not there any more.
    error = fails(registry, [dereg("web", "old"), dereg("web", "old")])
    assert error.op == 1 and error.field == "id"
    assert set(registry.service("web").instances) == {"old"}  # nothing applied


def test_the_instance_limit_counts_what_the_batch_adds_and_removes() -> None:
    registry = Registry(limits=Limits(instances=3))
    run(registry, [reg("web", "a"), reg("db", "a")])
    error = fails(registry, [reg("web", "b"), reg("web", "c")])
    assert error.op == 1 and isinstance(error.cause, LimitError)
    assert error.field == "limits.instances"
    # Replacing counts nothing; one removed makes room for one more.
    assert run(
        registry, [reg("web", "a", 2), dereg("db", "a"), reg("web", "b"), reg("db", "b")]
    ) == [
        200,
        204,
        201,
        201,
    ]
    assert sum(len(s.instances) for s in registry) == 3


def test_the_service_limit_counts_the_services_the_batch_creates() -> None:
    registry = Registry(limits=Limits(services=2))
    settings = batch.parse(
        {"ops": [{"op": "service", "service": "c", "body": {}}]},
        lambda name: Registry().settings_for(name),
    )
    error = fails(registry, [reg("a", "x"), reg("b", "x"), *settings])
    assert error.op == 2 and error.field == "limits.services"
    assert len(registry) == 0


def tagged(service: str, iid: str, *tags: str) -> BatchOp:
    inst = Instance.from_json(service, iid, {"address": "10.0.0.1", "port": 80, "tags": list(tags)})
    return BatchOp("register", service, iid, registration=inst)


def test_the_per_service_limits_count_what_the_batch_did_to_the_service() -> None:
    registry = Registry(limits=Limits(instances_per_service=2, tags_per_service=2))
    run(registry, [reg("web", "a")])
    error = fails(registry, [reg("web", "b"), reg("db", "x"), reg("web", "c")])
    assert error.op == 2 and error.field == "limits.instances_per_service"
    # One removed in the batch makes room for one more.
    assert run(registry, [dereg("web", "a"), reg("web", "b"), reg("web", "c")]) == [204, 201, 201]
    error = fails(registry, [tagged("web", "b", "x"), tagged("web", "c", "y", "z")])
    assert error.op == 1 and error.field == "limits.tags_per_service"
    # Tags that only a replaced instance carried go with it, also within a batch.
    assert run(
        registry, [tagged("web", "b", "x"), tagged("web", "b", "y"), tagged("web", "c", "z")]
    ) == [200, 200, 200]
    assert sorted(registry.service("web").tag_counts()) == ["y", "z"]


def test_a_batch_logs_one_line_for_its_registrations(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()
    run(registry, [reg("web", "old")])
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run(registry, [reg("web", f"i{n}") for n in range(50)])
    assert [r.getMessage() for r in caplog.records] == [
        "batch of 50 operations: registered 50 instances of web"
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run(registry, [reg("web", "old", 3), dereg("web", "i0"), reg("db", "x")])
    assert [r.getMessage() for r in caplog.records] == [
        "batch of 3 operations: registered 1, replaced 1, deregistered 1 instances of web, db"
    ]
