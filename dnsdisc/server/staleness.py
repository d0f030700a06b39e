"""Whether this node's DNS answers may be stale, told to the processes that answer.

With a shared store (etcd) a node that cannot reach it answers from its last view, which it
cannot refresh (``EtcdStore.stale``, what /readyz reports). Its answers then carry the Extended
DNS Error Stale Answer (RFC 8914, see ``dnsserver.ede``). The store's state is read here, in the
main process, every ``INTERVAL`` seconds (the quorum probe behind it runs every second) and
handed to the DNS face: the main process's own responder (``--workers 0``), or each DNS worker
as a STALE message on its feed, sent when the state changes and, while stale, to each worker
started since (a new worker starts fresh, as not stale).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dnsdisc.dnsserver.face import DnsFace
from dnsdisc.workers import protocol
from dnsdisc.workers.pool import WorkerPool

log = logging.getLogger(__name__)

INTERVAL = 0.5

# The running followers: the loop holds tasks weakly. They end with the loop (at shutdown).
_running: set[asyncio.Task[None]] = set()


class StaleFlag:
    def __init__(
        self, stale: Callable[[], bool], face: DnsFace | None, pool: WorkerPool | None
    ) -> None:
        self.stale = stale
        self.face = face
        self.pool = pool
        self.told = False
        self._told_workers: frozenset[int] = frozenset()

    def step(self) -> None:
        now = self.stale()
        if self.face is not None:
            self.face.responder.stale = now  # a no-op unless it changed
        pool = self.pool
        if pool is None or pool.supervisor.stopping:
            return
        workers = frozenset(id(w) for w in pool.supervisor.workers.values())
        if now != self.told or (now and workers != self._told_workers):
            pool.supervisor.send_all(protocol.STALE, now)
            self.told = now
            self._told_workers = workers

    async def run(self) -> None:
        while True:
            try:
                self.step()
            except Exception:  # the next step tries again; answers go on meanwhile
                log.exception("could not tell the DNS processes whether answers are stale")
            await asyncio.sleep(INTERVAL)


def follow(stale: Callable[[], bool], face: DnsFace | None, pool: WorkerPool | None) -> StaleFlag:
    flag = StaleFlag(stale, face, pool)
    task = asyncio.get_running_loop().create_task(flag.run())
    _running.add(task)
    task.add_done_callback(_running.discard)
    return flag
