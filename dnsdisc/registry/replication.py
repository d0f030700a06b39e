"""Following a shared store (etcd), in both directions.

With a shared store memory changes only through the ``Follower``, which the store feeds in its
revision order with this node's writes and every other node's alike; ``commit`` returns after
that, so a write is in memory when it is acknowledged. Health verdicts and maintenance take the
same path (``Publisher``): published to the store, applied when they come back, so every node
hands out the same instances.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dnsdisc.errors import StoreError, ValidationError
from dnsdisc.registry.model import (
    INSTANCE_FIELDS,
    SERVICE_FIELDS,
    Instance,
    ServiceSettings,
    known_fields,
)
from dnsdisc.registry.state import InstanceState, Memory
from dnsdisc.store.base import Op, SharedStore, Snapshot

log = logging.getLogger(__name__)


class Follower:
    """A shared store's ``ChangeSink``: every change, made by this node or another, in store
    order. Values come from outside this process: an invalid one is logged and skipped. Static
    services and instances are this node's zone files': a change never replaces them."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def apply_change(self, op: Op) -> None:
        changes = self.memory.events.changes
        changes.revision = op.revision
        try:
            self._apply(op)
        finally:
            changes.revision = 0

    def _apply(self, op: Op) -> None:
        memory = self.memory
        try:
            if op.kind == "put_instance":
                inst = Instance.from_json(
                    op.service, op.instance, known_fields(op.data, INSTANCE_FIELDS)
                )
                prev = memory.find(op.service, op.instance)
                if prev is not None and prev.instance.static:
                    return  # a zone file owns this name on this node
                memory.put_instance(inst)
            elif op.kind == "del_instance":
                prev = memory.find(op.service, op.instance)
                if prev is not None and not prev.instance.static:
                    memory.drop_instance(op.service, op.instance)
            elif op.kind in ("put_service", "ensure_service"):
                svc = memory.get(op.service)
                if svc is not None and (svc.static or op.kind == "ensure_service"):
                    return
                base = memory.settings.for_service(op.service)
                data = known_fields(op.data or {}, SERVICE_FIELDS)
                memory.put_service(ServiceSettings.from_json(op.service, data, base))
            elif op.kind == "del_service":
                svc = memory.get(op.service)
                if svc is not None and not svc.static:
                    memory.drop_service(op.service)
            elif op.kind == "put_status":
                memory.take_verdict(op.service, op.instance, op.data or {})
            elif op.kind == "put_query":
                query = memory.stored_query(op.service, op.data or {})
                if query is not None:
                    memory.put_query(query)
            elif op.kind == "del_query":
                memory.drop_query(op.service)
        except ValidationError as exc:
            memory.skip(op.kind, f"{op.service}/{op.instance}", exc)

    def resync(self, snap: Snapshot) -> None:
        """Make memory what a freshly loaded store holds (after the watch lost its place):
        drop what is gone, apply what is new or changed, keep what is the same (and its
        health). Static and configured services stay, and the config's named queries."""
        memory = self.memory
        # Every change found is the snapshot's (its revision: what every node counts).
        memory.events.changes.revision = snap.index
        try:
            self._resync(snap)
        finally:
            memory.events.changes.revision = 0

    def _resync(self, snap: Snapshot) -> None:
        memory = self.memory
        kept = {service for service, _ in snap.instances}
        kept.update(snap.services, memory.settings.configured)
        memory.retain(snap.instances, kept)
        for name, data in snap.services.items():
            current = memory.get(name)
            settings = memory.stored_settings(name, data)
            if settings is None:
                continue
            if current is None or (not current.static and current.settings != settings):
                memory.put_service(settings)
        for (service, iid), data in snap.instances.items():
            known = memory.find(service, iid)
            inst = memory.stored_instance(service, iid, data)
            if inst is None:
                continue
            if known is None or known.instance != inst:
                self._apply(Op("put_instance", service, iid, data))
        for (service, iid), data in snap.statuses.items():
            memory.take_verdict(service, iid, data)
        queries = {}
        for name, data in snap.queries.items():
            # One that does not validate keeps what this node held, as a service's settings do.
            query = memory.stored_query(name, data) or memory.stored_queries.get(name)
            if query is not None:
                queries[query.name] = query
        memory.retain_queries(queries)
        log.info(
            "resynchronised with the store: %d services, %d queries",
            len(memory),
            len(memory.stored_queries),
        )


class Publisher:
    """Writes this node's health verdicts, maintenance and lease renewals to a shared store.
    Memory is not changed here: the Follower applies them when they come back."""

    def __init__(self, store: SharedStore) -> None:
        self.store = store
        # Verdicts on their way to the store (kept so the tasks are not collected early).
        self._publishing: set[asyncio.Task[None]] = set()

    def verdict(
        self, service: str, instance_id: str, state: InstanceState | None, status: str, output: str
    ) -> bool:
        """Publish a check, lease or heartbeat verdict; True when it changes the status."""
        if state is None:
            return False
        if status == state.status:
            state.output = output
            return False
        self._publish(
            service,
            instance_id,
            {"status": status, "output": output, "maintenance": state.maintenance},
        )
        return True

    async def maintenance(
        self, service: str, instance_id: str, state: InstanceState, reason: str | None
    ) -> bool:
        """Write the maintenance state (every node takes the instance out or puts it back);
        True when that was a write."""
        if state.maintenance == reason:
            return False
        data = {"status": state.status, "output": state.output, "maintenance": reason}
        await self.store.put_status(service, instance_id, data)
        return True

    async def renew(self, service: str, instance_id: str) -> None:
        """Refresh the instance's lease (the store deletes the instance on every node when
        nobody renews it)."""
        await self.store.renew(service, instance_id)

    async def close(self) -> None:
        for task in list(self._publishing):
            task.cancel()  # a verdict not yet published: the next checker will publish its own
        await asyncio.gather(*self._publishing, return_exceptions=True)

    def _publish(self, service: str, instance_id: str, data: dict[str, Any]) -> None:
        async def put() -> None:
            try:
                await self.store.put_status(service, instance_id, data)
            except StoreError as exc:
                log.warning("could not publish the status of %s/%s: %s", service, instance_id, exc)

        task = asyncio.get_running_loop().create_task(put())
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)
