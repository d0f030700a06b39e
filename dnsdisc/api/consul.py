"""The Consul-compatible subset of the HTTP API: what registrators, Consul client libraries and
Prometheus's Consul discovery call, answered from dnsdisc's registry, so they work unchanged.

- agent: ``PUT /v1/agent/service/register``, ``.../deregister/{id}``,
  ``.../maintenance/{id}?enable=&reason=``, ``PUT /v1/agent/check/pass|warn|fail/{check}`` and
  ``.../update/{check}`` (TTL checks), ``GET /v1/agent/self``, ``/v1/agent/services``,
  ``/v1/agent/checks``;
- catalog and health: ``GET /v1/catalog/services``, ``/v1/catalog/service/{name}``,
  ``/v1/health/service/{name}`` (``?passing``, ``?tag=``, ``?dc=``), blocking on
  ``?index=&wait=`` with ``X-Consul-Index``; ``GET /v1/status/leader``.

Consul's agent endpoints name an instance by its ID alone (IDs are unique per Consul agent);
dnsdisc's are unique per service, so an ID that two services use is a 409 here. The shapes
are in ``consulshapes.py``; docs/consul.md has the mapping and what is not implemented.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from dnsdisc.api import consulshapes as shapes
from dnsdisc.api.acl import Rights
from dnsdisc.api.blocking import blocking, hold
from dnsdisc.api.guard import disconnected
from dnsdisc.api.jsonbody import read_json
from dnsdisc.api.settings import Identity
from dnsdisc.errors import ConflictError, NotFoundError, ValidationError
from dnsdisc.registry.model import (
    CRITICAL,
    PASSING,
    REPORTABLE,
    WARNING,
    HeartbeatReport,
    Instance,
    maintenance_reason,
)
from dnsdisc.registry.registry import Registry
from dnsdisc.registry.state import InstanceState
from dnsdisc.values import label

# Paths of the subset: where Consul's ways of passing a token count (api/http.py's _auth), and
# where a PUT needs no JSON Content-Type (Consul's clients send none; a PUT from a web page needs
# a CORS preflight, which this server never grants, so the type guards nothing there).
PREFIXES = ("/v1/agent/", "/v1/catalog/", "/v1/health/", "/v1/status/")
TOKEN_HEADER = "X-Consul-Token"
INDEX_HEADER = "X-Consul-Index"
_VERDICTS = {"pass": PASSING, "warn": WARNING, "fail": CRITICAL}
# Query parameters that would change what a read means, and that dnsdisc does not do.
_NOT_IMPLEMENTED = ("filter", "node-meta", "peer", "sampling")


def is_consul_path(path: str) -> bool:
    return path.startswith(PREFIXES)


class Gate(Protocol):
    """What the API's auth decided for a request (api/http.py)."""

    def may_read(self, request: web.Request, service: str) -> None: ...
    def may_write(self, request: web.Request, service: str) -> None: ...
    def rights(self, request: web.Request) -> Rights: ...
    def admit_checks(self, request: web.Request, inst: Instance) -> None: ...


class ConsulApi:
    def __init__(
        self,
        registry: Registry,
        identity: Callable[[], Identity],
        gate: Gate,
        stale: Callable[[], bool],
    ) -> None:
        self.registry = registry
        self.identity = identity  # consul.datacenter and consul.node, read at each request
        self.gate = gate
        self.stale = stale  # True while a shared store is out of reach (no known leader)

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/agent/self", self.agent_self)
        r.add_get("/v1/agent/services", self.agent_services)
        r.add_get("/v1/agent/checks", self.agent_checks)
        r.add_put("/v1/agent/service/register", self.register)
        r.add_put("/v1/agent/service/deregister/{id}", self.deregister)
        r.add_put("/v1/agent/service/maintenance/{id}", self.maintenance)
        r.add_put("/v1/agent/check/{verdict:pass|warn|fail}/{check}", self.ttl_verdict)
        r.add_put("/v1/agent/check/update/{check}", self.check_update)
        r.add_get("/v1/catalog/services", self.catalog_services)
        r.add_get("/v1/catalog/service/{service}", self.catalog_service)
        r.add_get("/v1/health/service/{service}", self.health_service)
        r.add_get("/v1/status/leader", self.leader)

    # -- agent: writes ----------------------------------------------------------------------

    async def register(self, request: web.Request) -> web.Response:
        reg = shapes.registration(await read_json(request), request.remote or "")
        inst = reg.instance
        self.gate.may_write(request, inst.service)
        try:
            self.gate.admit_checks(request, inst)
        except ValidationError as exc:
            raise ValidationError("Check", exc.message) from None
        # Consul starts a TTL check critical (unless its Status says otherwise): the instance is
        # not handed out before its first pass.
        start = None
        if reg.initial_status is not None:
            start = (reg.initial_status, "TTL check registered, awaiting its first pass")
        await self.registry.put_instance(inst, start)
        await self.registry.settled()
        return web.Response(status=200)

    async def deregister(self, request: web.Request) -> web.Response:
        state = self._by_id(request, request.match_info["id"], "service_id")
        await self.registry.delete_instance(state.instance.service, state.instance.id)
        return web.Response(status=200)

    async def maintenance(self, request: web.Request) -> web.Response:
        state = self._by_id(request, request.match_info["id"], "service_id")
        enable = request.query.get("enable", "").lower()
        if enable not in ("true", "false"):
            raise ValidationError("enable", "enable must be true or false")
        reason = maintenance_reason(
            {"enabled": enable == "true", "reason": request.query.get("reason", "")}
        )
        await self.registry.maintenance(state.instance.service, state.instance.id, reason)
        await self.registry.settled()
        return web.Response(status=200)

    async def ttl_verdict(self, request: web.Request) -> web.Response:
        status = _VERDICTS[request.match_info["verdict"]]
        await self._verdict(request, request.match_info["check"], status)
        return web.Response(status=200)

    async def check_update(self, request: web.Request) -> web.Response:
        """``{"Status": "passing", "Output": "..."}``, keys in any case."""
        body = await read_json(request)
        fields = shapes.update_fields(body)
        status = fields.get("Status")
        if status not in REPORTABLE:
            raise ValidationError("Status", f"Status must be one of: {', '.join(REPORTABLE)}")
        await self._verdict(request, request.match_info["check"], status)
        return web.Response(status=200)

    async def _verdict(self, request: web.Request, check: str, status: str) -> None:
        """A TTL check's verdict: the instance's heartbeat with that status (and lease)."""
        iid, _, number = check.removeprefix("service:").partition(":")
        if not check.startswith("service:") or not (number == "" or number.isdigit()):
            raise NotFoundError(
                f"no check {check!r}: dnsdisc's checks are named service:<ID>", "check_id"
            )
        state = self._by_id(request, iid, "check_id")
        inst = state.instance
        if inst.ttl is None or inst.check is not None:
            raise ValidationError("check_id", f"check {check!r} is not a TTL check")
        await self.registry.renew(inst.service, inst.id)
        self.registry.heartbeat(inst.service, inst.id, HeartbeatReport(status))
        await self.registry.settled()

    def _by_id(self, request: web.Request, raw: str, fld: str) -> InstanceState:
        """The one instance with this ID among the services the caller may read (what it may
        not read, it does not learn of), once the caller may change its service."""
        iid = label(raw, fld)
        can_read = self.gate.rights(request).can_read
        found = [
            svc.instances[iid]
            for svc in self.registry
            if iid in svc.instances and can_read(svc.settings.name)
        ]
        if not found:
            raise NotFoundError(f"no service instance with ID {iid!r}", fld)
        if len(found) > 1:
            names = ", ".join(sorted(s.instance.service for s in found))
            raise ConflictError(
                f"the services {names} each have an instance {iid!r}: use "
                f"/v1/services/<service>/instances/{iid}",
                fld,
            )
        self.gate.may_write(request, found[0].instance.service)
        return found[0]

    # -- agent: reads -----------------------------------------------------------------------

    async def agent_self(self, request: web.Request) -> web.Response:
        who = self.identity()
        body = {
            "Config": {
                "Datacenter": who.datacenter,
                "PrimaryDatacenter": who.datacenter,
                "NodeName": who.node,
                "NodeID": "",
                "Server": True,
                "Revision": "dnsdisc",
                "Version": shapes.CONSUL_VERSION,
            },
            "Member": {
                "Name": who.node,
                "Addr": _host_only(request.host),
                "Port": 0,
                "Tags": {"dc": who.datacenter, "role": "consul"},
                "Status": 1,
            },
            "Meta": {},
            "Stats": {},
        }
        return self._json(request, body, self.registry.events.changes.index)

    async def agent_services(self, request: web.Request) -> web.Response:
        """Keyed by ID, as a Consul agent's; an ID that several services use (which a Consul
        agent cannot hold) is keyed ``<service>/<ID>`` for each, so none hides another."""
        who, can_read = self.identity(), self.gate.rights(request).can_read
        states = self._readable(can_read)
        seen = Counter(s.instance.id for s in states)
        out = {
            _agent_key(state, seen): shapes.service_json(state, who, self._index_of(state))
            for state in states
        }
        return self._json(request, out, self.registry.events.changes.index)

    async def agent_checks(self, request: web.Request) -> web.Response:
        who, can_read = self.identity(), self.gate.rights(request).can_read
        out = {
            check["CheckID"]: check
            for state in self._readable(can_read)
            for check in shapes.checks_json(state, who, self._index_of(state))
        }
        return self._json(request, out, self.registry.events.changes.index)

    def _readable(self, can_read: Callable[[str], bool]) -> list[InstanceState]:
        return [
            state
            for svc in sorted(self.registry, key=lambda s: s.settings.name)
            if can_read(svc.settings.name)
            for _, state in sorted(svc.instances.items())
        ]

    # -- catalog and health -----------------------------------------------------------------

    async def catalog_services(self, request: web.Request) -> web.Response:
        await self._block(request, None)
        can_read = self.gate.rights(request).can_read
        out: dict[str, list[str]] = {}
        for svc in sorted(self.registry, key=lambda s: s.settings.name):
            if svc.instances and can_read(svc.settings.name):
                out[svc.settings.name] = sorted(svc.tag_counts())
        return self._json(request, out, self.registry.events.changes.index)

    async def catalog_service(self, request: web.Request) -> web.Response:
        name, states = await self._service_read(request)
        who = self.identity()
        out = [shapes.catalog_json(s, who, self._index_of(s)) for s in states]
        return self._json(request, out, self.registry.events.changes.index_of(name))

    async def health_service(self, request: web.Request) -> web.Response:
        name, states = await self._service_read(request)
        passing = request.query.get("passing")
        if passing is not None:
            if passing.lower() not in ("", "1", "true", "0", "false"):
                raise ValidationError("passing", "passing must be true or false (or empty)")
            if passing.lower() not in ("0", "false"):
                states = [s for s in states if shapes.passing(s)]
        who = self.identity()
        out = []
        for state in states:
            index = self._index_of(state)
            out.append(
                {
                    "Node": shapes.node_json(state, who, index),
                    "Service": shapes.service_json(state, who, index),
                    "Checks": shapes.checks_json(state, who, index),
                }
            )
        return self._json(request, out, self.registry.events.changes.index_of(name))

    async def leader(self, request: web.Request) -> web.Response:
        """Where the leader is: this node (clients ping this to see the agent is up)."""
        return web.json_response(request.host)

    async def _service_read(self, request: web.Request) -> tuple[str, list[InstanceState]]:
        """The service a catalog or health read names, once the caller may read it and what it
        shows changed after ``?index`` (or the wait ended); its instances, ``?tag=`` applied
        (every tag given must match). An unknown service has none, as in Consul."""
        name = label(request.match_info["service"], "service")
        self.gate.may_read(request, name)
        await self._block(request, name)
        svc = self.registry.get(name)
        states = [s for _, s in sorted(svc.instances.items())] if svc is not None else []
        tags = [t.lower() for t in request.query.getall("tag", [])]
        if tags:
            states = [s for s in states if all(t in s.instance.tags for t in tags)]
        return name, states

    async def _block(self, request: web.Request, service: str | None) -> None:
        query = request.query
        dc = query.get("dc")
        who = self.identity()
        if dc and dc != who.datacenter:
            raise NotFoundError(f"no datacenter {dc!r}: this one is {who.datacenter!r}", "dc")
        for key in _NOT_IMPLEMENTED:
            if key in query:
                raise ValidationError(key, f"?{key} is not implemented by dnsdisc")
        found = blocking(query)
        if found is not None and found[0] > 0:  # index 0: Consul answers at once
            changes = self.registry.events.changes
            # The headers show at least 1 (Consul's clients take 0 as a reset): 1 from a
            # server whose index is still 0 is that same index, not one ahead of it.
            after = 0 if found[0] == 1 and changes.index == 0 else found[0]
            await hold(changes.wait(after, found[1], service), disconnected(request))

    def _index_of(self, state: InstanceState) -> int:
        inst = state.instance
        return max(1, self.registry.events.changes.index_of(inst.service, inst.id))

    def _json(self, request: web.Request, body: Any, index: int) -> web.Response:
        """A read's body with the headers Consul's clients read: Go's parses
        X-Consul-LastContact and fails without it; an index of 0 resets watchers."""
        response = web.json_response(body)
        response.headers[INDEX_HEADER] = str(max(1, index))
        response.headers["X-Consul-KnownLeader"] = "false" if self.stale() else "true"
        response.headers["X-Consul-LastContact"] = "0"
        return response


def _agent_key(state: InstanceState, seen: Counter[str]) -> str:
    inst = state.instance
    return inst.id if seen[inst.id] == 1 else f"{inst.service}/{inst.id}"


def _host_only(host: str) -> str:
    """The Host header without its port or IPv6 brackets."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host
