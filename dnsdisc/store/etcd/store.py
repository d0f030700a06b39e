"""EtcdStore, the SharedStore on etcd: open, commit (an Op list as one etcd txn), instance leases
and shared verdicts, close; it composes the gateway, the watch and the election.

``commit`` returns once the watch has delivered the commit's revision (see watch.py), so a 2xx is
visible at once on this node and reaches the others by the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from dnsdisc.errors import NotFoundError, StoreError, StoreStaleError, ValidationError
from dnsdisc.store.base import ChangeSink, Op, Snapshot
from dnsdisc.store.etcd.election import Election
from dnsdisc.store.etcd.gateway import EtcdRequestError, Gateway
from dnsdisc.store.etcd.keys import Keys, created_compare, delete_request, put_request
from dnsdisc.store.etcd.watch import Watch
from dnsdisc.store.settings import EtcdSettings

log = logging.getLogger("dnsdisc.store.etcd")  # one logger for the whole backend


class EtcdStore:
    name = "etcd"
    shared = True

    def __init__(self, cfg: EtcdSettings, node: str | None = None) -> None:
        self.cfg = cfg
        self._keys = Keys(cfg.prefix)
        self.prefix = self._keys.prefix
        self._gateway = Gateway(cfg)
        self._watch = Watch(self._gateway, self._keys, cfg.timeout)
        self._election = Election(
            self._gateway,
            self._keys.leader,
            node or f"{socket.gethostname()}:{os.getpid()}",
            self._watch.check,
            self._watch.reconcile,
        )
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def stale(self) -> bool:
        """True while this node's view may be behind etcd (watch down or no quorum)."""
        return not (self._watch.watching and self._election.reachable)

    @property
    def skipped(self) -> int:
        """Keys under the prefix ignored as unreadable (a bad name or a value not JSON)."""
        return self._keys.skipped

    async def open(self) -> Snapshot:
        self._gateway.open()
        try:
            snap = await self._watch.start(max(self.cfg.timeout, 5.0))
        except (StoreError, OSError, ssl.SSLError) as exc:
            await self.close()
            raise StoreError(
                f"cannot open the etcd store at {', '.join(self.cfg.endpoints)} "
                f"(prefix {self.prefix}): {exc}"
            ) from None
        log.info("etcd: loaded %s at revision %d", self.prefix, self._watch.rev)
        return snap

    def _refuse_if_stale(self) -> None:
        """A node that knows it cannot reach etcd (its quorum probe failed) sends nothing: a
        request queued on a frozen member would run when it resumes, after the client was told
        503. A watch that is only moving to another member is no reason: the write is applied
        and waits for the watch (``caught_up``)."""
        if not self._election.reachable:
            raise StoreStaleError(
                "etcd is unavailable: this node cannot reach a quorum (its view is stale); "
                "nothing was sent, retry once /readyz answers 200"
            )

    async def commit(self, ops: Sequence[Op]) -> None:
        self._refuse_if_stale()
        keys = self._keys
        compare: list[dict[str, Any]] = []
        success: list[dict[str, Any]] = []
        failure: list[dict[str, Any]] = []
        for op in ops:
            if op.kind == "ensure_service":
                # Created only if nobody created it meanwhile (on any node): one txn, so the
                # instance and its service appear together or not at all.
                key = keys.service(op.service)
                compare.append(created_compare(key, "EQUAL"))
                success.append(put_request(key, op.data))
                continue
            if op.kind == "put_service":
                req = [put_request(keys.service(op.service), op.data)]
            elif op.kind == "del_service":
                req = [
                    delete_request(keys.instance(op.service), prefix=True),
                    delete_request(keys.status(op.service), prefix=True),
                    delete_request(keys.service(op.service)),
                ]
            elif op.kind == "put_instance":
                lease = await self._lease_for(op)
                req = [put_request(keys.instance(op.service, op.instance), op.data, lease)]
            elif op.kind == "del_instance":
                req = [
                    delete_request(keys.instance(op.service, op.instance)),
                    delete_request(keys.status(op.service, op.instance)),
                ]
            elif op.kind == "put_query":
                req = [put_request(keys.query(op.service), op.data)]
            elif op.kind == "del_query":
                req = [delete_request(keys.query(op.service))]
            else:
                raise StoreError(f"unknown op {op.kind}")
            success += req
            failure += req
        body: dict[str, Any] = {"success": success}
        if compare:
            body.update(compare=compare, failure=failure)
        try:
            await self._txn(body)
        except EtcdRequestError as exc:
            # etcd caps a transaction's operations (--max-txn-ops, 128 by default) and a batch is
            # one transaction: a registration into a new service takes two, a deregistration two.
            # etcd refused it whole, so the client's batch is what must change (or the cap).
            if "too many operations in txn request" not in str(exc):
                raise
            raise ValidationError(
                "ops",
                f"on etcd these changes are one transaction of {len(success)} operations, more "
                "than etcd's --max-txn-ops allows (128 unless raised); nothing was applied: "
                "send fewer operations in a batch or raise --max-txn-ops on every member",
            ) from None

    async def _txn(self, body: dict[str, Any]) -> dict[str, Any]:
        result = await self._gateway.call("/v3/kv/txn", body, write=True)
        rev = int(result["header"]["revision"])
        changed = any(
            "response_put" in r or int(r.get("response_delete_range", {}).get("deleted", 0))
            for r in result.get("responses") or []
        )
        if changed:
            await self._watch.caught_up(rev)
        return result

    async def _lease_for(self, op: Op) -> int:
        """The etcd lease an instance's key goes on: none without a ttl; the instance's current
        lease when the ttl is unchanged (and the lease alive); else a new one. etcd rounds a TTL
        up to its minimum (2 s with default timings)."""
        ttl = (op.data or {}).get("ttl")
        if ttl is None:
            return 0
        lease, granted_for = self._watch.lease(op.service, op.instance)
        if lease and granted_for == ttl:
            reply = await self._gateway.call("/v3/lease/keepalive", {"ID": str(lease)}, write=True)
            if int(reply.get("result", {}).get("TTL") or 0) > 0:
                return lease
        reply = await self._gateway.call("/v3/lease/grant", {"TTL": str(max(1, math.ceil(ttl)))})
        return int(reply["ID"])

    async def renew(self, service: str, instance: str) -> None:
        lease, _ = self._watch.lease(service, instance)
        if not lease:
            return
        self._refuse_if_stale()
        reply = await self._gateway.call("/v3/lease/keepalive", {"ID": str(lease)}, write=True)
        if int(reply.get("result", {}).get("TTL") or 0) <= 0:
            raise NotFoundError(
                f"the lease of instance {instance!r} of {service!r} has expired; register it again",
                "id",
            )

    async def put_status(self, service: str, instance: str, data: dict[str, Any]) -> None:
        self._refuse_if_stale()
        key = self._keys.instance(service, instance)
        lease, _ = self._watch.lease(service, instance)
        # Only while the instance exists: a verdict must not outlive (or resurrect) it.
        await self._txn(
            {
                "compare": [created_compare(key, "GREATER")],
                "success": [put_request(self._keys.status(service, instance), data, lease)],
            }
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._gateway.is_open:
            await self._election.resign()
            await self._gateway.close()

    def follow(self, sink: ChangeSink) -> None:
        """Feed ``sink`` every change under the prefix, from the revision ``open`` loaded."""
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch.run(sink)))

    def campaign(self, on_change: Callable[[bool], None]) -> None:
        """Take part in the election of the node that runs active checks; ``on_change`` is
        told when this node becomes or stops being that node."""
        self._tasks.append(asyncio.get_running_loop().create_task(self._election.run(on_change)))
