"""The registration side-port: JSON over HTTP, onto the registry.

Errors are raised by meaning (ValidationError, NotFoundError, ...) and turned into statuses in
one place, ``errors.http_status_of`` (by class hierarchy); every error body is
``{"error": "...", "field": "..."}``. Nothing is stored unless the whole request is valid.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from dnsdisc.api import events
from dnsdisc.api.acl import NOTHING, Acl, Rights
from dnsdisc.api.audit import AuditLog
from dnsdisc.api.blocking import INDEX_HEADER, blocking, hold
from dnsdisc.api.consul import TOKEN_HEADER, ConsulApi, is_consul_path
from dnsdisc.api.dnssec import DnssecApi, KeyControl
from dnsdisc.api.doh import DohHandler
from dnsdisc.api.guard import HttpGuard, disconnected
from dnsdisc.api.jsonbody import read_json
from dnsdisc.api.peercert import certificate_names
from dnsdisc.api.principal import ANONYMOUS, Principal, principal_of, set_principal
from dnsdisc.api.queries import ExplainQuery, QueriesApi, Status
from dnsdisc.api.settings import Identity
from dnsdisc.errors import (
    AuthError,
    ConfigError,
    CrossSiteError,
    DnsdiscError,
    MisdirectedError,
    NotFoundError,
    ThrottledError,
    UnauthenticatedError,
    ValidationError,
    http_status_of,
)
from dnsdisc.netaddr import DEFAULT_CHECK_NETWORKS, NetRules
from dnsdisc.registry import batch
from dnsdisc.registry.checks import CheckSpec, RemoteCheckRules
from dnsdisc.registry.model import (
    PASSING,
    WARNING,
    HeartbeatReport,
    Instance,
    ServiceSettings,
    maintenance_reason,
)
from dnsdisc.registry.registry import Registry
from dnsdisc.registry.state import InstanceState, Service
from dnsdisc.values import label

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
_BODY_METHODS = {"PUT", "POST", "PATCH"}
_AUDITED = {"PUT", "POST", "PATCH", "DELETE"}
# What the caller may do, set by the auth middleware.
_RIGHTS = web.RequestKey("dnsdisc.rights", Rights)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The dashboard: the files shipped in dnsdisc/api/ui/, read once, by name (nothing else is served).
_UI_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def _ui_files(folder: Path) -> dict[str, tuple[bytes, str]]:
    if not folder.is_dir():
        return {}
    return {
        p.name: (p.read_bytes(), _UI_TYPES[p.suffix])
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix in _UI_TYPES
    }


UI_FILES = _ui_files(Path(__file__).resolve().parent / "ui")
_UI_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
    ),
}


@dataclass(slots=True)
class ServerState:
    """What the probes report; set by the app's lifecycle."""

    listeners_up: bool = False
    store_open: bool = False
    # True while a shared store (etcd) is out of reach: answers come from the last view.
    store_stale: Callable[[], bool] = field(default=lambda: False)
    # (DNS worker processes answering, how many are configured); None: DNS in this process.
    dns_workers: Callable[[], tuple[int, int]] | None = None
    # Leases held by self-preservation (health.protection), or None while it is not on.
    leases_held: Callable[[], int | None] = field(default=lambda: None)


def error_response(
    status: int, message: str, fld: str = "", outcome: str | None = None, op: int | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": message, "field": fld}
    if op is not None:
        body["op"] = op  # the position of the failing operation of a batch
    if outcome is not None:
        # A store error says whether the write may still be applied (errors.StoreStaleError,
        # errors.StoreOutcomeUnknownError).
        body["outcome"] = outcome
    return web.json_response(body, status=status)


def _instance_json(state: InstanceState, stats: bool = False) -> dict[str, Any]:
    out = state.instance.to_json()
    out["load"] = state.load
    out["latency_ms"] = state.latency_ms
    if stats:
        # Changes with every DNS query, so only when asked for (``?stats=1``): the plain
        # representation changes only when the registry does.
        out["answers"] = state.answers
    out["health"] = {
        "status": state.effective_status,
        "check_status": state.status,
        "since": datetime.fromtimestamp(state.wall_since, UTC).isoformat(timespec="seconds"),
        "output": state.output,
        "maintenance": state.maintenance,
        "history": [{"time": when, "status": status} for when, status in state.history],
        # Each active check's latest run (on the node that runs the checks).
        "checks": [_check_json(state, spec) for spec in state.instance.checks],
    }
    return out


def _check_json(state: InstanceState, spec: CheckSpec) -> dict[str, Any]:
    held = state.check_states.get(spec.id)
    name = spec.id or spec.type
    if held is None:
        return {"id": name, "type": spec.type, "status": None, "output": "not run yet",
                "latency_ms": None, "since": None}  # fmt: skip
    return held.to_json(name, spec.type)


def _service_json(svc: Service, with_instances: bool, stats: bool = False) -> dict[str, Any]:
    out = svc.settings.to_json()
    out["static"] = svc.static
    out["instance_count"] = len(svc.instances)
    out["healthy_count"] = sum(
        1 for st in svc.instances.values() if st.effective_status in (PASSING, WARNING)
    )
    if with_instances:
        out["instances"] = [_instance_json(s, stats) for _, s in sorted(svc.instances.items())]
    return out


def _wants_stats(request: web.Request) -> bool:
    return request.query.get("stats", "").lower() in ("1", "true")


Explain = Callable[[str, str, bytes, int, str | None], dict[str, Any]]
EXPLAIN_PARAMS = ("type", "client", "ecs", "tag")


def explain_query_params(query: Mapping[str, str]) -> tuple[str, bytes, int, str | None]:
    """``?type=A|AAAA|SRV&client=IP&ecs=CIDR&tag=T``: the type, the client's address packed
    (the ECS subnet's when given; b"" without either), the ECS source prefix (-1: none), the
    tag. A bad or unknown parameter is a 400 naming it."""
    for key in query:
        if key not in EXPLAIN_PARAMS:
            raise ValidationError(
                key, f"unknown parameter {key!r}; expected: {', '.join(EXPLAIN_PARAMS)}"
            )
    rtype = query.get("type", "A").upper()
    if rtype not in ("A", "AAAA", "SRV"):
        raise ValidationError("type", "type must be A, AAAA or SRV")
    client, prefix = b"", -1
    if "client" in query:
        try:
            client = ipaddress.ip_address(query["client"]).packed
        except ValueError:
            raise ValidationError("client", "client must be an IP address") from None
    if "ecs" in query:
        try:
            net = ipaddress.ip_network(query["ecs"], strict=True)
        except ValueError:
            raise ValidationError(
                "ecs", "ecs must be a network like 10.1.2.0/24 (no bits past the prefix)"
            ) from None
        client, prefix = net.network_address.packed, net.prefixlen
    tag = label(query["tag"], "tag") if "tag" in query else None
    return rtype, client, prefix, tag


class Api:
    def __init__(
        self,
        registry: Registry,
        state: ServerState,
        token: str | None = None,
        metrics: CollectorRegistry | None = None,
        reload: Callable[[], Awaitable[None]] | None = None,
        refresh: Callable[[str | None], Awaitable[None]] | None = None,
        check_rules: Callable[[], RemoteCheckRules] | None = None,
        guard: HttpGuard | None = None,
        doh: DohHandler | None = None,
        acl: Acl | None = None,
        allowed_hosts: Collection[str] = ("localhost",),
        audit: AuditLog | None = None,
        explain: Explain | None = None,
        consul: Callable[[], Identity] | None = None,
        query_status: Status | None = None,
        explain_query: ExplainQuery | None = None,
        dnssec: KeyControl | None = None,
    ) -> None:
        self.registry = registry
        self.dnssec = DnssecApi(self, dnssec)  # /v1/dnssec: the zone keys (None: unsigned)
        self.queries = QueriesApi(
            registry, self, query_status, explain_query, lambda r: explain_query_params(r.query)
        )
        # The Consul subset's datacenter and node names (consul.datacenter, consul.node).
        self.consul = ConsulApi(
            registry,
            consul or Identity,
            self,
            lambda: self.state.store_stale(),
        )
        # GET .../explain: (service, type, client packed, ECS prefix or -1, tag) -> JSON.
        self.explain = explain
        self.state = state
        # Who may do what; a reload swaps it whole. ``token`` alone means Acl.legacy(token).
        self.acl = acl if acl is not None else Acl.legacy(token)
        self.metrics = metrics
        self.reload = reload
        # Gathers counters kept elsewhere (the DNS workers') before they are shown: of one
        # service's instances, or (None) the DNS face's for the metrics.
        self.refresh = refresh
        # What checks registered here may do (health.check_networks..., read at each request).
        default = RemoteCheckRules(
            NetRules.parse(DEFAULT_CHECK_NETWORKS, "", "health.check_networks")
        )
        self.check_rules = check_rules or (lambda: default)
        self.guard = guard  # the HTTP port's limits; its body deadline is a middleware here
        self.doh = doh  # DNS over HTTPS at /dns-query, when the server offers it
        self.audit = audit  # the audit trail of write attempts (audit_log), if configured
        # The names (lower case, no port) a request's Host may carry; IP literals always pass.
        self.allowed_hosts = frozenset(h.lower().rstrip(".") for h in allowed_hosts)

    def app(self) -> web.Application:
        middlewares: list[Middleware] = [
            self._index_header,
            self._errors,
            self._same_origin,
            self._auth,
        ]
        if self.audit is not None:
            middlewares.insert(1, self._audit)  # sees every write, refused ones included
        if self.guard is not None:
            middlewares.append(self.guard.body_deadline)
        app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.metrics_text)
        r.add_post("/v1/reload", self.reload_config)
        r.add_get("/v1/services", self.list_services)
        r.add_get("/v1/services/{service}", self.get_service)
        r.add_put("/v1/services/{service}", self.put_service)
        r.add_delete("/v1/services/{service}", self.delete_service)
        base = "/v1/services/{service}/instances/{id}"
        r.add_get(base, self.get_instance)
        r.add_put(base, self.put_instance)
        r.add_delete(base, self.delete_instance)
        r.add_post(base + "/heartbeat", self.heartbeat)
        r.add_put(base + "/maintenance", self.maintenance)
        r.add_get("/v1/services/{service}/explain", self.explain_answer)
        r.add_get("/v1/events", self.events)
        r.add_post("/v1/batch", self.batch)
        self.consul.add_routes(r)
        self.queries.add_routes(r)
        self.dnssec.add_routes(r)
        r.add_get("/ui", self.ui_redirect)
        r.add_get("/ui/", self.ui_file)
        r.add_get("/ui/{name}", self.ui_file)
        if self.doh is not None:
            self.doh.add_routes(r)
        return app

    # -- middlewares -------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except DnsdiscError as exc:
            status = http_status_of(exc)
            response = error_response(
                status,
                getattr(exc, "message", str(exc)),
                getattr(exc, "field", ""),
                getattr(exc, "outcome", None),
            )
            if isinstance(exc, batch.BatchError):  # which operation of a batch
                response = error_response(
                    status, exc.message, exc.field, getattr(exc.cause, "outcome", None), exc.op
                )
            if status == 401:  # RFC 6750 3: say which scheme would do
                response.headers["WWW-Authenticate"] = 'Bearer realm="dnsdisc"'
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            fld = "body" if exc.status == 413 else ""
            if exc.status == 405:
                message = f"method {request.method} is not allowed here"
            elif exc.status == 413:
                message = f"the body is larger than {MAX_BODY} bytes"
            else:
                message = exc.reason
            response = error_response(exc.status, message, fld)
            if "Allow" in exc.headers:  # RFC 9110: a 405 names the methods that are allowed
                response.headers["Allow"] = exc.headers["Allow"]
            return response

    @web.middleware
    async def _index_header(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every GET of the /v1 API carries the change index (the registry's, where the
        handler did not set what it shows)."""
        response = await handler(request)
        if (
            request.method == "GET"
            and request.path.startswith("/v1/")
            and INDEX_HEADER not in response.headers
            and not response.prepared
        ):
            response.headers[INDEX_HEADER] = str(self.registry.events.changes.index)
        return response

    @web.middleware
    async def _audit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A line per write attempt, written before the response leaves (see ``audit``)."""
        audit = self.audit
        if audit is None or request.method not in _AUDITED or request.path == "/dns-query":
            return await handler(request)
        service = request.match_info.get("service")
        iid = request.match_info.get("id")
        before = self._snapshot(service, iid)
        entry: dict[str, Any] = {
            "client": request.remote,
            "method": request.method,
            "path": request.path,
            "service": service,
            "instance": iid,
        }
        try:
            response: web.StreamResponse = await handler(request)
        except DnsdiscError as exc:
            audit.record({**self._who(request), **entry, "status": http_status_of(exc)})
            raise
        except web.HTTPException as exc:
            audit.record({**self._who(request), **entry, "status": exc.status})
            raise
        entry["status"] = response.status
        if response.status < 300 and service is not None:
            entry["before"] = before
            entry["after"] = self._snapshot(service, iid)
        audit.record({**self._who(request), **entry})
        return response

    def _who(self, request: web.Request) -> dict[str, str]:
        who = principal_of(request)
        return {"principal": who.name, "via": who.via}

    def _snapshot(self, service: str | None, iid: str | None) -> dict[str, Any] | None:
        """The instance (or, for a service path, the service's settings) as the API shows it;
        None when there is none (yet, or any more)."""
        svc = self.registry.get(service) if service else None
        if svc is None:
            return None
        if iid is None:
            return svc.settings.to_json()
        state = svc.instances.get(iid)
        return _instance_json(state) if state is not None else None

    @web.middleware
    async def _same_origin(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """What a web page can make a browser send is refused: a write with any body type but
        JSON (a form or text/plain needs no CORS preflight, and the API sends no CORS headers),
        and any request through a name this server does not answer to (DNS rebinding: a page's
        own name, resolved to 127.0.0.1). IP literals pass: a rebinding needs a name."""
        if not self._host_allowed(request.host):
            raise MisdirectedError(
                f"this server does not answer to the host {request.host!r} (http.allowed_hosts)",
                "Host",
            )
        if (
            request.method in _BODY_METHODS
            and request.content_type != "application/json"
            and request.path != "/dns-query"
            and not (request.method == "PUT" and is_consul_path(request.path))
            and request.match_info.http_exception is None  # a 404 or 405 says more
        ):
            raise CrossSiteError(
                f"{request.method} takes Content-Type: application/json", "Content-Type"
            )
        return await handler(request)

    def _host_allowed(self, host: str) -> bool:
        name = host.strip().lower()
        if name.startswith("["):
            name = name[1:].partition("]")[0]
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        name = name.rstrip(".")
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in self.allowed_hosts

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Who is asking: a bearer token, else a verified client certificate named like a
        token, else anonymous. What they may do is checked where the service is known."""
        acl = self.acl
        principal, rights = ANONYMOUS, acl.anonymous
        header = request.headers.get("Authorization", "").strip()
        source = "Authorization"
        if not header and is_consul_path(request.path):
            # Consul's clients send the token in a header of their own, or in the URL.
            source = TOKEN_HEADER if request.headers.get(TOKEN_HEADER) else "token"
            given = request.headers.get(TOKEN_HEADER) or request.query.get("token") or ""
            # With no tokens configured, one given is ignored, as Consul with ACLs off does:
            # clients configured with a token keep working against an open dnsdisc.
            header = f"Bearer {given.strip()}" if given.strip() and acl.tokens else ""
        if header:
            client = request.remote or ""
            now = time.monotonic()
            if self.guard is not None and self.guard.auth_throttled(client, now):
                raise ThrottledError(
                    "too many failed authentications from this address; try again later",
                    "Authorization",
                )
            scheme, _, given = header.partition(" ")
            # The scheme is case-insensitive (RFC 9110 section 11.1); the token is not.
            token = acl.by_secret(given.strip()) if scheme.lower() == "bearer" else None
            if token is None:
                if self.guard is not None:
                    self.guard.auth_failed(client, now)
                if source != "Authorization":
                    raise UnauthenticatedError(f"{source} holds no valid token", source)
                raise UnauthenticatedError(
                    "the Authorization header holds no valid 'Bearer <token>'", "Authorization"
                )
            principal, rights = Principal(token.name, "token"), token.rights
        else:
            names = certificate_names(request)
            token = acl.by_name(names) if names else None
            if token is not None:
                principal, rights = Principal(token.name, "certificate"), token.rights
        set_principal(request, principal)
        request[_RIGHTS] = rights
        return await handler(request)

    def rights(self, request: web.Request) -> Rights:
        found: Rights = request.get(_RIGHTS, NOTHING)
        return found

    def refuse(self, request: web.Request, what: str, fld: str) -> AuthError:
        """401 for a request without credentials (it may still get some), 403 for one whose
        credentials lack the right."""
        who = principal_of(request)
        if who.via == "anonymous":
            return UnauthenticatedError(
                f"a valid 'Authorization: Bearer <token>' header is required to {what}",
                "Authorization",
            )
        return AuthError(f"{who.via} {who.name!r} may not {what}", fld)

    def may_read(self, request: web.Request, service: str) -> None:
        if not self.rights(request).can_read(service):
            raise self.refuse(request, f"read service {service}", "service")

    def may_write(self, request: web.Request, service: str) -> None:
        if not self.rights(request).can_write(service):
            raise self.refuse(request, f"change service {service}", "service")

    # -- probes ------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        s = self.state
        stale = s.store_stale()
        answering, configured = s.dns_workers() if s.dns_workers is not None else (0, 0)
        short = answering < configured
        ready = s.listeners_up and s.store_open and not stale and not short
        body: dict[str, Any] = {
            "ready": ready,
            "listeners": s.listeners_up,
            "store": s.store_open,
            "stale": stale,
        }
        if s.dns_workers is not None:
            body["dns_workers"] = {"answering": answering, "configured": configured}
        held = s.leases_held()
        if held is not None:
            # Still ready: answers go on; what the answers hold is not being aged out.
            body["self_preservation"] = {
                "active": True,
                "leases_held": held,
                "reason": "most leased instances missed their lease at once: leases are not "
                "expired until heartbeats resume (health.protection)",
            }
        if stale:
            body["reason"] = (
                "the shared store is unreachable: DNS answers from this node's last view and "
                "writes are refused"
            )
        elif short and s.listeners_up:
            body["reason"] = (
                f"{answering} of {configured} DNS worker processes answer: the others are "
                "being replaced, and their share of the queries goes unanswered"
            )
        return web.json_response(body, status=200 if ready else 503)

    async def reload_config(self, request: web.Request) -> web.Response:
        """Re-read the config and zone files; a bad file is a 400 and changes nothing."""
        if not self.rights(request).operator:
            raise self.refuse(request, "reload the configuration (operator)", "operator")
        if self.reload is None:
            raise NotFoundError("reload is not available")
        try:
            await self.reload()
        except ConfigError as exc:
            log.error("reload rejected, the old configuration keeps serving: %s", exc)
            return error_response(http_status_of(exc), f"reload rejected: {exc}", exc.key)
        return web.json_response({"reloaded": True})

    async def metrics_text(self, request: web.Request) -> web.Response:
        if not self.rights(request).metrics:
            raise self.refuse(request, "read /metrics", "metrics")
        if self.metrics is None:
            raise NotFoundError("metrics are not enabled")
        if self.refresh is not None:
            await self.refresh(None)
        body = generate_latest(self.metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- dashboard ---------------------------------------------------------------------------

    async def ui_redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/")

    async def ui_file(self, request: web.Request) -> web.Response:
        """The dashboard's static files (dnsdisc/api/ui/), read-only and open like every GET."""
        found = UI_FILES.get(request.match_info.get("name") or "index.html")
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(body=body, headers={**_UI_HEADERS, "Content-Type": content_type})

    # -- services ----------------------------------------------------------------------------

    async def _block(
        self, request: web.Request, service: str | None = None, instance: str | None = None
    ) -> None:
        """Hold a blocking query (``?index=N``) until what it shows changed after N, or its
        wait ends; the response then carries the index it shows."""
        found = blocking(request.query)
        if found is not None:
            changes = self.registry.events.changes
            await hold(changes.wait(found[0], found[1], service, instance), disconnected(request))

    def _indexed(
        self, response: web.Response, service: str | None = None, instance: str | None = None
    ) -> web.Response:
        index = self.registry.events.changes.index_of(service, instance)
        response.headers[INDEX_HEADER] = str(index)
        return response

    async def list_services(self, request: web.Request) -> web.Response:
        """Every service's settings and counts; ``?stats=1`` adds every service's instances
        with their ``answers`` (what the dashboard draws, in one request per refresh)."""
        await self._block(request)
        stats = _wants_stats(request)
        if stats and self.refresh is not None:
            await self.refresh(None)
        rights = self.rights(request)
        # Only what the caller may read, as Consul's ACLs filter a list.
        services = sorted(
            (s for s in self.registry if rights.can_read(s.settings.name)),
            key=lambda s: s.settings.name,
        )
        listed = [_service_json(s, stats, stats) for s in services]
        if stats and self.explain is not None:
            for svc in listed:
                self._expected(svc)
        return self._indexed(web.json_response({"services": listed}))

    def _expected(self, svc: dict[str, Any]) -> None:
        """Each instance's ``expected`` share: its chance of leading the next address answer to
        a client of unknown location (explain's ``p_first``), for the dashboard's bulk list."""
        assert self.explain is not None
        v6 = bool(svc["instances"]) and all(":" in i["address"] for i in svc["instances"])
        explained = self.explain(svc["name"], "AAAA" if v6 else "A", b"", -1, None)
        chances = {i["id"]: i["p_first"] for i in explained["instances"]}
        for inst in svc["instances"]:
            inst["expected"] = chances.get(inst["id"], 0.0)

    async def get_service(self, request: web.Request) -> web.Response:
        name = label(request.match_info["service"], "service")
        self.may_read(request, name)
        await self._block(request, name)
        svc = self.registry.service(name)
        stats = _wants_stats(request)
        if stats and self.refresh is not None:
            await self.refresh(name)
        return self._indexed(web.json_response(_service_json(svc, True, stats)), name)

    async def batch(self, request: web.Request) -> web.Response:
        """Up to 128 operations, all applied in one commit or none (see registry/batch.py)."""
        ops = batch.parse(await read_json(request), self.registry.settings_for)
        rules = self.check_rules()
        for position, op in enumerate(ops):
            try:
                self.may_write(request, op.service)
                if op.registration is not None:
                    # The same rules as a PUT's: no exec, no file, no forbidden target.
                    self.admit_checks(request, op.registration, rules)
            except DnsdiscError as exc:
                raise batch.BatchError(position, exc) from None
        results = await self.registry.apply_batch(ops)
        await self.registry.settled()
        return web.json_response(
            {
                "index": self.registry.events.changes.index,
                "results": [{"status": s} for s in results],
            }
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        """The registry's changes as Server-Sent Events (see api/events.py)."""
        for key in request.query:
            if key != "service":
                raise ValidationError(key, f"unknown parameter {key!r}; expected: service")
        service = label(request.query["service"], "service") if "service" in request.query else None
        if service is not None:
            self.may_read(request, service)
        rights = self.rights(request)
        return await events.stream(
            request, self.registry.events.changes, service, rights.can_read, INDEX_HEADER
        )

    async def explain_answer(self, request: web.Request) -> web.Response:
        name = label(request.match_info["service"], "service")
        self.may_read(request, name)
        if self.explain is None:
            raise web.HTTPNotFound()
        rtype, client, prefix, tag = explain_query_params(request.query)
        self.registry.service(name)  # 404 for an unknown service, before any work
        return web.json_response(self.explain(name, rtype, client, prefix, tag))

    async def put_service(self, request: web.Request) -> web.Response:
        name = label(request.match_info["service"], "service")
        self.may_write(request, name)
        body = await read_json(request, optional=True)
        settings = ServiceSettings.from_json(name, body, self.registry.settings_for(name))
        created = await self.registry.put_service(settings)
        return web.json_response(
            _service_json(self.registry.service(name), True), status=201 if created else 200
        )

    async def delete_service(self, request: web.Request) -> web.Response:
        name = label(request.match_info["service"], "service")
        self.may_write(request, name)
        await self.registry.delete_service(name)
        return web.Response(status=204)

    # -- instances ---------------------------------------------------------------------------

    def _ids(self, request: web.Request) -> tuple[str, str]:
        """The service and instance named, once the caller is seen to have the right on the
        service: read for GET, write for everything else."""
        service = label(request.match_info["service"], "service")
        if request.method in ("GET", "HEAD"):
            self.may_read(request, service)
        else:
            self.may_write(request, service)
        return service, label(request.match_info["id"], "id")

    async def get_instance(self, request: web.Request) -> web.Response:
        service, iid = self._ids(request)
        await self._block(request, service, iid)
        state = self.registry.instance(service, iid)
        stats = _wants_stats(request)
        if stats and self.refresh is not None:
            await self.refresh(service)
        return self._indexed(web.json_response(_instance_json(state, stats)), service, iid)

    async def put_instance(self, request: web.Request) -> web.Response:
        service, iid = self._ids(request)
        inst = Instance.from_json(service, iid, await read_json(request))
        self.admit_checks(request, inst)
        created = await self.registry.put_instance(inst)
        state = self.registry.instance(service, iid)
        return web.json_response(_instance_json(state), status=201 if created else 200)

    def admit_checks(
        self, request: web.Request, inst: Instance, rules: RemoteCheckRules | None = None
    ) -> None:
        """What checks registered over the API must meet (``RemoteCheckRules``), and an alias
        check may only look at a service the caller may read (its output tells the state)."""
        (rules or self.check_rules()).admit(inst)
        for n, check in enumerate(inst.checks):
            if check.type == "alias" and not self.rights(request).can_read(check.alias_service):
                fld = "check" if len(inst.checks) == 1 else "checks"
                raise self.refuse(
                    request, f"alias service {check.alias_service} in checks[{n}]", fld
                )

    async def delete_instance(self, request: web.Request) -> web.Response:
        service, iid = self._ids(request)
        await self.registry.delete_instance(service, iid)
        return web.Response(status=204)

    async def heartbeat(self, request: web.Request) -> web.Response:
        service, iid = self._ids(request)
        report = HeartbeatReport.from_json(await read_json(request, optional=True))
        await self.registry.renew(service, iid)
        state = self.registry.heartbeat(service, iid, report)
        await self.registry.settled()
        return web.json_response(_instance_json(state))

    async def maintenance(self, request: web.Request) -> web.Response:
        """``{"enabled": true, "reason": "..."}`` takes the instance out of the answers."""
        service, iid = self._ids(request)
        reason = maintenance_reason(await read_json(request))
        state = await self.registry.maintenance(service, iid, reason)
        await self.registry.settled()
        return web.json_response(_instance_json(state))
