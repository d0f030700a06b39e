"""The etcd backend: several dnsdisc nodes share one registry kept in etcd (``storage: etcd``).

It speaks etcd's v3 JSON gateway (``/v3/kv/range``, ``/v3/kv/txn``, ``/v3/watch``,
``/v3/lease/*``) over aiohttp, which dnsdisc already depends on, rather than gRPC: no native
gRPC/protobuf wheels to install, and the whole protocol surface used here is a dozen lines.

Keys under the prefix (values are JSON; the schema is documented in docs/etcd.md):

    <prefix>/services/<service>        service settings (ServiceSettings.to_json without name)
    <prefix>/instances/<service>/<id>  the instance definition (Instance.definition), attached to
                                       an etcd lease of the instance's ttl when it has one
    <prefix>/status/<service>/<id>     {"status", "output", "maintenance"}: the shared verdict,
                                       on the instance's lease so both go together
    <prefix>/leader                    the node that runs active checks, on a short lease

Memory changes only through the watch: ``open`` loads the range, ``follow`` watches from the
revision after it and hands every change to the registry in revision order, and ``commit``
returns once the watch has delivered the commit's revision. So the node that took a write
answers from it before its 2xx, and it reaches every other node by the same path. A broken
watch resumes from the next revision on any endpoint; a compacted one reloads the range and
the registry converges on it (``resync``). DNS never waits on etcd: it reads memory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from dnsdisc.errors import NotFoundError, StoreError, StoreUnavailableError, ValidationError
from dnsdisc.store.base import ChangeSink, Op, Snapshot
from dnsdisc.store.settings import EtcdSettings
from dnsdisc.values import label

log = logging.getLogger(__name__)

# The checker's lease: a dead checker is replaced within this many seconds (a stopping one at
# once: it revokes its lease). Probed every _PROBE seconds, which also tells whether etcd has a
# quorum (a linearizable read) for /readyz.
ELECTION_TTL = 5
_PROBE = 1.0
# gRPC codes etcd answers with when another member (or a retry) may do better.
_RETRY_CODES = {4, 8, 10, 13, 14}  # deadline, exhausted, aborted, internal, unavailable
_UNAUTHENTICATED = 16


class _Compacted(Exception):
    """The watch's start revision was compacted away: reload the range."""


class EtcdRequestError(StoreError):
    """etcd refused a request (not a connectivity problem)."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _range_end(prefix: str) -> str:
    # etcd's "all keys with this prefix": the prefix with its last byte incremented.
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()


def _put(key: str, value: Any, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": _b64(key), "value": _b64(json.dumps(value, sort_keys=True))}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def _created(key: str, result: str) -> dict[str, Any]:
    """A txn comparison of ``key``'s create revision with 0: EQUAL means absent."""
    return {"key": _b64(key), "target": "CREATE", "result": result, "create_revision": "0"}


def _delete(key: str, prefix: bool = False) -> dict[str, Any]:
    body = {"key": _b64(key)}
    if prefix:
        body["range_end"] = _b64(_range_end(key))
    return {"request_delete_range": body}


class EtcdStore:
    name = "etcd"
    shared = True

    def __init__(self, cfg: EtcdSettings, node: str | None = None) -> None:
        self.cfg = cfg
        self.prefix = cfg.prefix.rstrip("/") + "/"
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self.is_leader = False
        self.watching = False  # the watch stream is open
        self.reachable = True  # the last quorum probe succeeded
        self._session: aiohttp.ClientSession | None = None
        self._endpoint = 0  # the endpoint that answered last is tried first
        self._watch_endpoint = 0
        self._token: str | None = None
        self._sink: ChangeSink | None = None
        self._rev = 0  # every change up to this revision has reached the sink
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # (service, id) -> (etcd lease id, ttl of the definition it was granted for)
        self._leases: dict[tuple[str, str], tuple[int, float | None]] = {}
        self._leader_lease = 0
        self._on_leader: Callable[[bool], None] | None = None
        self._watch_response: aiohttp.ClientResponse | None = None
        self._lagging = 0  # probes in a row that found changes the watch had not delivered
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def stale(self) -> bool:
        """True while this node's view may be behind etcd (watch down or no quorum)."""
        return not (self.watching and self.reachable)

    # -- keys --------------------------------------------------------------------------------

    def _service_key(self, service: str) -> str:
        return f"{self.prefix}services/{service}"

    def _instance_key(self, service: str, iid: str = "") -> str:
        return f"{self.prefix}instances/{service}/{iid}"

    def _status_key(self, service: str, iid: str = "") -> str:
        return f"{self.prefix}status/{service}/{iid}"

    def _parse_key(self, key: str) -> tuple[str, str, str] | None:
        """(kind, service, id) of one of our keys; None for anything else under the prefix."""
        if not key.startswith(self.prefix):
            return None
        parts = key[len(self.prefix) :].split("/")
        try:
            if parts[0] == "services" and len(parts) == 2:
                return "services", label(parts[1], "service"), ""
            if parts[0] in ("instances", "status") and len(parts) == 3:
                return parts[0], label(parts[1], "service"), label(parts[2], "id")
        except ValidationError:
            log.warning("etcd: ignoring key %r: not a valid service or instance name", key)
        return None

    # -- requests ----------------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext | bool:
        cfg = self.cfg
        if cfg.ca_file is None and cfg.cert_file is None:
            return True  # default verification for https endpoints
        ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        if cfg.cert_file is not None and cfg.key_file is not None:
            ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
        return ctx

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    async def _authenticate(self, endpoint: str, timeout: float) -> None:
        assert self._session is not None
        body = {"name": self.cfg.username, "password": self.cfg.password}
        async with self._session.post(
            endpoint + "/v3/auth/authenticate",
            json=body,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200 or "token" not in data:
                raise EtcdRequestError(
                    f"etcd refused the username/password: {data.get('error') or resp.status}"
                )
            self._token = str(data["token"])

    async def _call(
        self, path: str, body: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """POST to the first endpoint that answers within ``timeout`` (the configured one by
        default): connection errors and 'try another member' answers move on to the next."""
        if self._session is None:
            raise StoreUnavailableError("the etcd store is not open")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.cfg.timeout)
        endpoints = self.cfg.endpoints
        last = "no endpoint was tried"
        for _ in range(4 * len(endpoints) + 2):  # bounded: each endpoint a few times at most
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            endpoint = endpoints[self._endpoint % len(endpoints)]
            # Half the budget at most per attempt while there is time for another: a member
            # that lost its leader holds a request until it times out, and another member (or
            # this one's new leader) usually answers within a second.
            attempt = remaining / 2 if remaining > 1.0 and len(endpoints) > 1 else remaining
            try:
                if self.cfg.username is not None and self._token is None:
                    await self._authenticate(endpoint, attempt)
                async with self._session.post(
                    endpoint + path,
                    json=body,
                    headers=self._headers(),
                    timeout=aiohttp.ClientTimeout(total=attempt),
                ) as resp:
                    data = await resp.json(content_type=None)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                if resp.status == 200:
                    return data
                code = data.get("code")
                message = str(data.get("error") or data.get("message") or resp.status)
                if code == _UNAUTHENTICATED and self.cfg.username is not None:
                    self._token = None  # expired token: authenticate again
                    last = message
                    continue
                if code not in _RETRY_CODES and resp.status < 500:
                    raise EtcdRequestError(f"etcd refused {path}: {message}")
                last = f"{endpoint}: {message}"
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                last = f"{endpoint}: {str(exc) or type(exc).__name__}"
            self._endpoint += 1
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        raise StoreUnavailableError(f"etcd is unavailable ({last})")

    # -- Store -------------------------------------------------------------------------------

    async def open(self) -> Snapshot:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=64),
            headers={"User-Agent": "dnsdisc"},
        )
        try:
            snap, rev = await self._load(max(self.cfg.timeout, 5.0))
        except (StoreError, OSError, ssl.SSLError) as exc:
            await self.close()
            raise StoreError(
                f"cannot open the etcd store at {', '.join(self.cfg.endpoints)} "
                f"(prefix {self.prefix}): {exc}"
            ) from None
        self._rev = rev
        log.info("etcd: loaded %s at revision %d", self.prefix, rev)
        return snap

    async def _load(self, timeout: float | None = None) -> tuple[Snapshot, int]:
        data = await self._call(
            "/v3/kv/range",
            {"key": _b64(self.prefix), "range_end": _b64(_range_end(self.prefix))},
            timeout,
        )
        snap = Snapshot()
        leases: dict[tuple[str, str], tuple[int, float | None]] = {}
        for kv in data.get("kvs") or []:
            key = _unb64(kv["key"])
            parsed = self._parse_key(key)
            if parsed is None:
                continue
            kind, service, iid = parsed
            value = self._value(key, kv)
            if value is None:
                continue
            if kind == "services":
                snap.services[service] = value
            elif kind == "instances":
                snap.instances[(service, iid)] = value
                leases[(service, iid)] = (int(kv.get("lease") or 0), value.get("ttl"))
            else:
                snap.statuses[(service, iid)] = value
        self._leases = leases
        return snap, int(data["header"]["revision"])

    @staticmethod
    def _value(key: str, kv: dict[str, Any]) -> dict[str, Any] | None:
        try:
            value = json.loads(_unb64(kv.get("value", "")))
        except ValueError:
            value = None
        if not isinstance(value, dict):
            log.warning("etcd: ignoring key %r: its value is not a JSON object", key)
            return None
        return value

    async def commit(self, ops: Sequence[Op]) -> None:
        compare: list[dict[str, Any]] = []
        success: list[dict[str, Any]] = []
        failure: list[dict[str, Any]] = []
        for op in ops:
            if op.kind == "ensure_service":
                # Created only if nobody created it meanwhile (on any node): one txn, so the
                # instance and its service appear together or not at all.
                key = self._service_key(op.service)
                compare.append(
                    {
                        "key": _b64(key),
                        "target": "CREATE",
                        "result": "EQUAL",
                        "create_revision": "0",
                    }
                )
                success.append(_put(key, op.data))
                continue
            if op.kind == "put_service":
                req = [_put(self._service_key(op.service), op.data)]
            elif op.kind == "del_service":
                req = [
                    _delete(self._instance_key(op.service), prefix=True),
                    _delete(self._status_key(op.service), prefix=True),
                    _delete(self._service_key(op.service)),
                ]
            elif op.kind == "put_instance":
                lease = await self._lease_for(op)
                req = [_put(self._instance_key(op.service, op.instance), op.data, lease)]
            elif op.kind == "del_instance":
                req = [
                    _delete(self._instance_key(op.service, op.instance)),
                    _delete(self._status_key(op.service, op.instance)),
                ]
            else:
                raise StoreError(f"unknown op {op.kind}")
            success += req
            failure += req
        body: dict[str, Any] = {"success": success}
        if compare:
            body.update(compare=compare, failure=failure)
        await self._txn(body)

    async def _txn(self, body: dict[str, Any]) -> dict[str, Any]:
        result = await self._call("/v3/kv/txn", body)
        rev = int(result["header"]["revision"])
        changed = any(
            "response_put" in r or int(r.get("response_delete_range", {}).get("deleted", 0))
            for r in result.get("responses") or []
        )
        if changed:
            await self._caught_up(rev)
        return result

    async def _caught_up(self, rev: int) -> None:
        """Wait (bounded) until the watch has handed the sink everything up to ``rev``."""
        if self._rev >= rev:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((rev, fut))
        try:
            await asyncio.wait_for(fut, self.cfg.timeout)
        except TimeoutError:
            raise StoreUnavailableError(
                f"etcd took the change (revision {rev}) but this node's watch has not delivered "
                "it yet; it will show once the watch catches up"
            ) from None
        finally:
            self._waiters = [(r, f) for r, f in self._waiters if f is not fut]

    def _wake(self) -> None:
        for rev, fut in self._waiters:
            if rev <= self._rev and not fut.done():
                fut.set_result(None)

    async def _lease_for(self, op: Op) -> int:
        """The etcd lease an instance's key goes on: none without a ttl; the instance's current
        lease when the ttl is unchanged (and the lease alive); else a new one. etcd rounds a TTL
        up to its minimum (2 s with default timings)."""
        ttl = (op.data or {}).get("ttl")
        if ttl is None:
            return 0
        lease, granted_for = self._leases.get((op.service, op.instance), (0, None))
        if lease and granted_for == ttl:
            reply = await self._call("/v3/lease/keepalive", {"ID": str(lease)})
            if int(reply.get("result", {}).get("TTL") or 0) > 0:
                return lease
        reply = await self._call("/v3/lease/grant", {"TTL": str(max(1, math.ceil(ttl)))})
        return int(reply["ID"])

    async def renew(self, service: str, instance: str) -> None:
        lease, _ = self._leases.get((service, instance), (0, None))
        if not lease:
            return
        reply = await self._call("/v3/lease/keepalive", {"ID": str(lease)})
        if int(reply.get("result", {}).get("TTL") or 0) <= 0:
            raise NotFoundError(
                f"the lease of instance {instance!r} of {service!r} has expired; register it again",
                "id",
            )

    async def put_status(self, service: str, instance: str, data: dict[str, Any]) -> None:
        key = self._instance_key(service, instance)
        lease, _ = self._leases.get((service, instance), (0, None))
        # Only while the instance exists: a verdict must not outlive (or resurrect) it.
        await self._txn(
            {
                "compare": [_created(key, "GREATER")],
                "success": [_put(self._status_key(service, instance), data, lease)],
            }
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._leader_lease and self._session is not None:
            # Hand the checks over at once rather than after the lease runs out.
            with contextlib.suppress(StoreError):
                await self._call("/v3/lease/revoke", {"ID": str(self._leader_lease)}, 1.0)
            self._leader_lease = 0
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the watch ---------------------------------------------------------------------------

    def follow(self, sink: ChangeSink) -> None:
        self._sink = sink
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch_loop()))

    async def _watch_loop(self) -> None:
        pause = 0.1
        while True:
            try:
                await self._watch_once()
            except _Compacted:
                log.warning("etcd: the watch fell behind a compaction; reloading %s", self.prefix)
                try:
                    snap, rev = await self._load()
                except StoreError as exc:
                    log.warning("etcd: reload failed: %s", exc)
                else:
                    if self._sink is not None:
                        self._sink.resync(snap)
                    self._rev = rev
                    self._wake()
                    continue
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, StoreError) as exc:
                if self.watching:
                    log.warning("etcd: the watch broke (%s); resuming", str(exc) or repr(exc))
            except Exception:  # the watch must outlive any one bad message
                log.exception("etcd: watch failed")
            if self.watching:
                pause = 0.1
            if self.cfg.username is not None:
                self._token = None  # an expired token breaks the watch too: fetch a fresh one
            self.watching = False
            self._watch_endpoint += 1
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _watch_once(self) -> None:
        assert self._session is not None
        endpoints = self.cfg.endpoints
        endpoint = endpoints[self._watch_endpoint % len(endpoints)]
        if self.cfg.username is not None and self._token is None:
            await self._authenticate(endpoint, self.cfg.timeout)
        body = {
            "create_request": {
                "key": _b64(self.prefix),
                "range_end": _b64(_range_end(self.prefix)),
                "start_revision": str(self._rev + 1),
            }
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.cfg.timeout)
        async with self._session.post(
            endpoint + "/v3/watch", json=body, headers=self._headers(), timeout=timeout
        ) as resp:
            if resp.status != 200:
                raise StoreUnavailableError(f"{endpoint} refused the watch: HTTP {resp.status}")
            self._watch_response = resp
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
                    "etcd: watching %s from revision %d at %s", self.prefix, self._rev + 1, endpoint
                )
            self.watching = True
        applied = self._rev
        newest = applied
        for event in result.get("events") or []:
            kv = event.get("kv") or {}
            rev = int(kv.get("mod_revision") or 0)
            if rev <= applied:
                continue  # seen before the watch was resumed
            self._apply_event(event.get("type") == "DELETE", kv)
            newest = max(newest, rev)
        if newest > self._rev:
            self._rev = newest
            self._wake()

    def _apply_event(self, deleted: bool, kv: dict[str, Any]) -> None:
        key = _unb64(kv.get("key", ""))
        parsed = self._parse_key(key)
        if parsed is None or self._sink is None:
            return
        kind, service, iid = parsed
        value = None if deleted else self._value(key, kv)
        if not deleted and value is None:
            return
        if kind == "services":
            op = Op("del_service" if deleted else "put_service", service, data=value)
        elif kind == "instances":
            if deleted:
                self._leases.pop((service, iid), None)
                op = Op("del_instance", service, iid)
            else:
                assert value is not None
                self._leases[(service, iid)] = (int(kv.get("lease") or 0), value.get("ttl"))
                op = Op("put_instance", service, iid, value)
        elif deleted:
            return  # a verdict going away (with its lease) changes nothing by itself
        else:
            op = Op("put_status", service, iid, value)
        try:
            self._sink.apply_change(op)
        except Exception:  # one bad key must not stop the rest from arriving
            log.exception("etcd: could not apply %s %s", "deletion of" if deleted else "", key)

    # -- who runs the active checks ----------------------------------------------------------

    def campaign(self, on_change: Callable[[bool], None]) -> None:
        """Take part in the election of the node that runs active checks; ``on_change`` is
        told when this node becomes or stops being that node."""
        self._on_leader = on_change
        self._tasks.append(asyncio.get_running_loop().create_task(self._campaign_loop()))

    def _set_leader(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            log.info("etcd: this node %s the health checks", "runs" if leader else "no longer runs")
            if self._on_leader is not None:
                self._on_leader(leader)

    async def _campaign_loop(self) -> None:
        while True:
            try:
                self._set_leader(await self._campaign_step())
                await self._check_watch()
                if not self.reachable:
                    log.info("etcd: reachable again")
                self.reachable = True
            except StoreError as exc:
                if self.reachable:
                    log.warning("etcd: unreachable, answering from the last view: %s", exc)
                self.reachable = False
                # Without etcd we cannot know whether our lease still holds: step down rather
                # than risk two nodes checking (and publishing) at once.
                self._leader_lease = 0
                self._set_leader(False)
            except Exception:
                log.exception("etcd: election step failed")
            await asyncio.sleep(_PROBE)

    async def _check_watch(self) -> None:
        """Restart a watch that has silently stopped delivering (a member that vanished without
        closing the connection looks exactly like a quiet registry): keys changed after our
        revision, still undelivered three probes in a row, mean the stream is dead."""
        rev = self._rev
        found = await self._call(
            "/v3/kv/range",
            {
                "key": _b64(self.prefix),
                "range_end": _b64(_range_end(self.prefix)),
                "keys_only": True,
                "min_mod_revision": str(rev + 1),
            },
        )
        if not found.get("kvs") or self._rev != rev or not self.watching:
            self._lagging = 0
            return
        self._lagging += 1
        if self._lagging >= 3 and self._watch_response is not None:
            log.warning("etcd: the watch delivers nothing although keys changed; reconnecting")
            self._lagging = 0
            self._watch_response.close()

    async def _campaign_step(self) -> bool:
        key = f"{self.prefix}leader"
        # A linearizable read: it succeeds only with a quorum, which is what "reachable" means.
        found = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs = found.get("kvs") or []
        holder = int(kvs[0].get("lease") or 0) if kvs else 0
        if self._leader_lease and holder == self._leader_lease:
            reply = await self._call("/v3/lease/keepalive", {"ID": str(self._leader_lease)})
            if int(reply.get("result", {}).get("TTL") or 0) > 0:
                return True
            self._leader_lease = 0
            return False
        self._leader_lease = 0
        if kvs:
            return False
        grant = await self._call("/v3/lease/grant", {"TTL": str(ELECTION_TTL)})
        lease = int(grant["ID"])
        won = await self._call(
            "/v3/kv/txn",
            {
                "compare": [_created(key, "EQUAL")],
                "success": [_put(key, {"node": self.node}, lease)],
            },
        )
        if won.get("succeeded"):
            self._leader_lease = lease
            return True
        with contextlib.suppress(StoreError):
            await self._call("/v3/lease/revoke", {"ID": str(lease)})
        return False
