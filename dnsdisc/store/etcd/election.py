"""Who runs the active health checks, and whether etcd is reachable.

One node at a time holds ``<prefix>/leader`` on a short lease and runs the active checks; the
others wait for the key to go. Every round is a linearizable read, so it doubles as the quorum
probe behind the store's ``stale`` (and /readyz); a node that cannot reach etcd steps down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from dnsdisc.errors import StoreError
from dnsdisc.store.etcd.gateway import Gateway
from dnsdisc.store.etcd.keys import b64, created_compare, put_request

log = logging.getLogger("dnsdisc.store.etcd")  # one logger for the whole backend

# The checker's lease: a dead checker is replaced within this many seconds (a stopping one at
# once: it revokes its lease). Probed every _PROBE seconds, which also tells whether etcd has a
# quorum (a linearizable read) for /readyz.
ELECTION_TTL = 5
_PROBE = 1.0


class Election:
    """This node's candidacy for ``key``; ``also`` runs after each round (the watch's check) and
    its failure to reach etcd counts like the round's own; ``recover`` runs once etcd answers
    again, before the node stops reporting stale."""

    def __init__(
        self,
        gateway: Gateway,
        key: str,
        node: str,
        also: Callable[[], Awaitable[None]],
        recover: Callable[[], Awaitable[None]],
    ) -> None:
        self._gateway = gateway
        self._key = key
        self.node = node
        self._also = also
        self._recover = recover  # brings the view up to date before it stops being stale
        self.is_leader = False
        self.reachable = True  # the last quorum probe succeeded
        self._lease = 0
        self._on_change: Callable[[bool], None] | None = None

    async def run(self, on_change: Callable[[bool], None]) -> None:
        """Campaign for good; ``on_change`` is told when this node becomes or stops being the
        node that runs the active checks."""
        self._on_change = on_change
        while True:
            try:
                self._set_leader(await self._step())
                await self._also()
                if not self.reachable:
                    await self._recover()
                    log.info("etcd: reachable again")
                self.reachable = True
            except StoreError as exc:
                if self.reachable:
                    log.warning("etcd: unreachable, answering from the last view: %s", exc)
                self.reachable = False
                # Without etcd we cannot know whether our lease still holds: step down rather
                # than risk two nodes checking (and publishing) at once.
                self._lease = 0
                self._set_leader(False)
            except Exception:
                log.exception("etcd: election step failed")
            await asyncio.sleep(_PROBE)

    async def resign(self) -> None:
        """Hand the checks over at once rather than after the lease runs out."""
        if self._lease:
            with contextlib.suppress(StoreError):
                await self._gateway.call("/v3/lease/revoke", {"ID": str(self._lease)}, 1.0)
            self._lease = 0

    def _set_leader(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            log.info("etcd: this node %s the health checks", "runs" if leader else "no longer runs")
            if self._on_change is not None:
                self._on_change(leader)

    async def _step(self) -> bool:
        key = self._key
        call = self._gateway.call
        # A linearizable read: it succeeds only with a quorum, which is what "reachable" means.
        found = await call("/v3/kv/range", {"key": b64(key)})
        kvs = found.get("kvs") or []
        holder = int(kvs[0].get("lease") or 0) if kvs else 0
        if self._lease and holder == self._lease:
            reply = await call("/v3/lease/keepalive", {"ID": str(self._lease)})
            if int(reply.get("result", {}).get("TTL") or 0) > 0:
                return True
            self._lease = 0
            return False
        self._lease = 0
        if kvs:
            return False
        grant = await call("/v3/lease/grant", {"TTL": str(ELECTION_TTL)})
        lease = int(grant["ID"])
        won = await call(
            "/v3/kv/txn",
            {
                "compare": [created_compare(key, "EQUAL")],
                "success": [put_request(key, {"node": self.node}, lease)],
            },
        )
        if won.get("succeeded"):
            self._lease = lease
            return True
        with contextlib.suppress(StoreError):
            await call("/v3/lease/revoke", {"ID": str(lease)})
        return False
