"""This node's view of etcd: the range load, the watch that keeps it current, and the leases.

Memory changes only through the watch: ``start`` loads the range, ``run`` watches from the
revision after it and hands every change to the sink (the registry) in revision order, and
``caught_up`` lets a write wait until the watch has delivered its revision. So the node that took
a write answers from it before its 2xx, and it reaches every other node by the same path. A
broken watch resumes from the next revision on any endpoint; a compacted one reloads the range
and the sink converges on it (``resync``). DNS never waits on etcd: it reads memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp

from dnsdisc.errors import StoreError, StoreUnavailableError
from dnsdisc.store.base import ChangeSink, Op, Snapshot
from dnsdisc.store.etcd.gateway import Gateway
from dnsdisc.store.etcd.keys import Keys, decode_value, unb64

log = logging.getLogger("dnsdisc.store.etcd")  # one logger for the whole backend


class _Compacted(Exception):
    """The watch's start revision was compacted away: reload the range."""


class Watch:
    """Follows every key under the prefix; ``rev`` is how far the sink has been fed."""

    def __init__(self, gateway: Gateway, keys: Keys, timeout: float) -> None:
        self._gateway = gateway
        self._keys = keys
        self._timeout = timeout  # how long a write waits for the watch to deliver it
        self.watching = False  # the watch stream is open
        self.rev = 0  # every change up to this revision has reached the sink
        self._sink: ChangeSink | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # (service, id) -> (etcd lease id, ttl of the definition it was granted for)
        self._leases: dict[tuple[str, str], tuple[int, float | None]] = {}
        self._endpoint = 0
        self._response: aiohttp.ClientResponse | None = None
        self._lagging = 0  # probes in a row that found changes the watch had not delivered

    def lease(self, service: str, instance: str) -> tuple[int, float | None]:
        """The instance's etcd lease and the ttl it was granted for; (0, None) if it has none."""
        return self._leases.get((service, instance), (0, None))

    async def start(self, timeout: float | None = None) -> Snapshot:
        """Load everything under the prefix; ``run`` then follows from the revision after it."""
        snap, self.rev, self._leases = await self._load(timeout)
        return snap

    async def _load(
        self, timeout: float | None = None
    ) -> tuple[Snapshot, int, dict[tuple[str, str], tuple[int, float | None]]]:
        data = await self._gateway.call("/v3/kv/range", self._keys.everything(), timeout)
        snap = Snapshot()
        leases: dict[tuple[str, str], tuple[int, float | None]] = {}
        for kv in data.get("kvs") or []:
            key = unb64(kv["key"])
            parsed = self._keys.parse(key)
            if parsed is None:
                continue
            kind, service, iid = parsed
            value = decode_value(key, kv)
            if value is None:
                self._keys.skipped += 1
                continue
            if kind == "services":
                snap.services[service] = value
            elif kind == "queries":
                snap.queries[service] = value
            elif kind == "instances":
                snap.instances[(service, iid)] = value
                leases[(service, iid)] = (int(kv.get("lease") or 0), value.get("ttl"))
            else:
                snap.statuses[(service, iid)] = value
        snap.index = int(data["header"]["revision"])
        return snap, snap.index, leases

    async def reconcile(self) -> None:
        """Make the view etcd's after an outage: load the range and, if the watch has not
        delivered that far yet, converge on it (writes whose outcome was unknown show as they
        came out). A watch already past the load is current: nothing to do."""
        snap, rev, leases = await self._load()
        if rev > self.rev and self._sink is not None:
            log.info("etcd: catching up from revision %d to %d after the outage", self.rev, rev)
            self._leases = leases
            self._sink.resync(snap)
            self.rev = rev
            self._wake()

    async def caught_up(self, rev: int) -> None:
        """Wait (bounded) until the watch has handed the sink everything up to ``rev``."""
        if self.rev >= rev:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((rev, fut))
        try:
            await asyncio.wait_for(fut, self._timeout)
        except TimeoutError:
            raise StoreUnavailableError(
                f"etcd took the change (revision {rev}) but this node's watch has not delivered "
                "it yet; it will show once the watch catches up"
            ) from None
        finally:
            self._waiters = [(r, f) for r, f in self._waiters if f is not fut]

    def _wake(self) -> None:
        for rev, fut in self._waiters:
            if rev <= self.rev and not fut.done():
                fut.set_result(None)

    async def run(self, sink: ChangeSink) -> None:
        """Feed ``sink`` for good: resume a broken watch, reload after a compaction."""
        self._sink = sink
        pause = 0.1
        while True:
            try:
                await self._watch_once()
            except _Compacted:
                log.warning(
                    "etcd: the watch fell behind a compaction; reloading %s", self._keys.prefix
                )
                try:
                    snap, rev, leases = await self._load()
                except StoreError as exc:
                    log.warning("etcd: reload failed: %s", exc)
                else:
                    self._leases = leases
                    if self._sink is not None:
                        self._sink.resync(snap)
                    self.rev = rev
                    self._wake()
                    continue
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, StoreError) as exc:
                if self.watching:
                    log.warning("etcd: the watch broke (%s); resuming", str(exc) or repr(exc))
            except Exception:  # the watch must outlive any one bad message
                log.exception("etcd: watch failed")
            if self.watching:
                pause = 0.1
            # An expired token breaks the watch too: fetch a fresh one.
            self._gateway.forget_token()
            self.watching = False
            self._endpoint += 1
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _watch_once(self) -> None:
        endpoints = self._gateway.endpoints
        endpoint = endpoints[self._endpoint % len(endpoints)]
        body = {"create_request": {**self._keys.everything(), "start_revision": str(self.rev + 1)}}
        async with self._gateway.stream(endpoint, "/v3/watch", body) as resp:
            if resp.status != 200:
                raise StoreUnavailableError(f"{endpoint} refused the watch: HTTP {resp.status}")
            self._response = resp
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        self._on_message(json.loads(line), endpoint)
        raise ConnectionResetError(f"{endpoint} ended the watch")

    def _on_message(self, message: dict[str, Any], endpoint: str) -> None:
        if "error" in message:
            raise StoreUnavailableError(f"watch error: {message['error']}")
        result = message.get("result") or {}
        if int(result.get("compact_revision") or 0) > 0:
            raise _Compacted()
        if result.get("canceled"):
            raise ConnectionResetError(f"watch canceled: {result.get('cancel_reason', '')}")
        if result.get("created"):
            if not self.watching:
                log.info(
                    "etcd: watching %s from revision %d at %s",
                    self._keys.prefix,
                    self.rev + 1,
                    endpoint,
                )
            self.watching = True
        applied = self.rev
        newest = applied
        for event in result.get("events") or []:
            kv = event.get("kv") or {}
            rev = int(kv.get("mod_revision") or 0)
            if rev <= applied:
                continue  # seen before the watch was resumed
            self._apply_event(event.get("type") == "DELETE", kv, rev)
            newest = max(newest, rev)
        if newest > self.rev:
            self.rev = newest
            self._wake()

    def _apply_event(self, deleted: bool, kv: dict[str, Any], rev: int) -> None:
        key = unb64(kv.get("key", ""))
        parsed = self._keys.parse(key)
        if parsed is None or self._sink is None:
            return
        kind, service, iid = parsed
        value = None if deleted else decode_value(key, kv)
        if not deleted and value is None:
            self._keys.skipped += 1
            return
        if kind == "services":
            op = Op("del_service" if deleted else "put_service", service, data=value, revision=rev)
        elif kind == "queries":
            op = Op("del_query" if deleted else "put_query", service, data=value, revision=rev)
        elif kind == "instances":
            if deleted:
                self._leases.pop((service, iid), None)
                op = Op("del_instance", service, iid, revision=rev)
            else:
                assert value is not None
                self._leases[(service, iid)] = (int(kv.get("lease") or 0), value.get("ttl"))
                op = Op("put_instance", service, iid, value, revision=rev)
        elif deleted:
            return  # a verdict going away (with its lease) changes nothing by itself
        else:
            op = Op("put_status", service, iid, value, revision=rev)
        try:
            self._sink.apply_change(op)
        except Exception:  # one bad key must not stop the rest from arriving
            log.exception("etcd: could not apply %s %s", "deletion of" if deleted else "", key)

    async def check(self) -> None:
        """Restart a watch that has silently stopped delivering (a member that vanished without
        closing the connection looks exactly like a quiet registry): keys changed after our
        revision, still undelivered three probes in a row, mean the stream is dead."""
        rev = self.rev
        found = await self._gateway.call(
            "/v3/kv/range",
            {**self._keys.everything(), "keys_only": True, "min_mod_revision": str(rev + 1)},
        )
        if not found.get("kvs") or self.rev != rev or not self.watching:
            self._lagging = 0
            return
        self._lagging += 1
        if self._lagging >= 3 and self._response is not None:
            log.warning("etcd: the watch delivers nothing although keys changed; reconnecting")
            self._lagging = 0
            self._response.close()
