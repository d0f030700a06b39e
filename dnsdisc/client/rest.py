"""The HTTP API's two clients: ``Client`` sends through urllib; ``AsyncClient`` runs the same
calls in the default executor's threads. Each call is written once, in ``Client``: its path and
body, and the reply it expects (``wire`` encodes and decodes)."""

from __future__ import annotations

import functools
import http.client
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine
from typing import IO, Any, Concatenate, ParamSpec, TypeVar

from dnsdisc.client import wire
from dnsdisc.client.addresses import base_url
from dnsdisc.client.errors import ClientError, Unreachable, reason_of
from dnsdisc.client.lease import AsyncRegistration, Registration
from dnsdisc.netaddr import DEFAULT_HTTP, is_loopback

P = ParamSpec("P")
T = TypeVar("T")


class Client:
    """The HTTP API, synchronously (urllib). ``http`` is ``HOST:PORT`` or a URL; with ``token``
    every request carries ``Authorization: Bearer <token>``.

    Over https the server's certificate is checked against ``cacert`` (a PEM file; default the
    system's CAs), and ``cert``/``key`` are presented when the server asks for a client
    certificate (mutual TLS). Given any of them, a ``HOST:PORT`` without a scheme means https.
    A file that cannot be loaded raises ValueError."""

    def __init__(
        self,
        http: str = DEFAULT_HTTP,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        cacert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        if (cacert or cert) and "://" not in http:
            http = "https://" + http
        self.url = base_url(http)
        self.token = token
        self.timeout = timeout
        host = urllib.parse.urlsplit(self.url).hostname or ""
        # A proxy from the environment (http_proxy) must not catch requests to a local dnsdisc;
        # urllib, unlike curl and Go, does not exempt loopback by itself.
        handlers: list[urllib.request.BaseHandler] = [_TokenKeepingRedirects()]
        if is_loopback(host):
            handlers.append(urllib.request.ProxyHandler({}))
        if self.url.startswith("https:"):
            handlers.append(urllib.request.HTTPSHandler(context=tls_context(cacert, cert, key)))
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One API call: the parsed JSON reply (None for an empty one, as with 204)."""
        data, headers = wire.encode(body, self.token)
        req = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            raise self._refused(err) from None
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            raise Unreachable(f"cannot reach dnsdisc at {self.url}: {reason_of(exc)}") from None
        return wire.decode(raw, status, method, path, self.url)

    def _refused(self, err: urllib.error.HTTPError) -> ClientError:
        try:
            raw = err.read()
        except (OSError, http.client.HTTPException):
            raw = b""
        return wire.refused(err.code, f"{err.reason}" if err.reason else "", raw, self.url)

    def _object(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return wire.as_object(self.request(method, path, body), self.url)

    # -- instances ---------------------------------------------------------------------------

    # ``self`` is positional-only so that ``fields`` may hold any key, which AsyncClient's
    # copy of this signature (a ParamSpec) needs to type-check.
    def register(
        self, /, service: str, id: str, address: str, port: int, **fields: Any
    ) -> dict[str, Any]:
        """Register or replace an instance; ``fields`` are the instance body's other keys
        (weight, priority, protocol, tags, meta, ttl, check, deregister_after). The stored
        instance comes back."""
        body = wire.instance_body(address, port, fields)
        return self._object("PUT", wire.path(service, id), body)

    def batch(self, ops: list[dict[str, Any]]) -> dict[str, Any]:
        """Up to 128 operations applied all or nothing (``POST /v1/batch``): ``{"op":
        "register", "service", "id", "body"}``, ``deregister``, ``service``, ``maintenance``.
        Returns ``{"index", "results"}``."""
        return self._object("POST", "/v1/batch", {"ops": ops})

    def deregister(self, service: str, id: str) -> None:
        self.request("DELETE", wire.path(service, id))

    def instance(self, service: str, id: str) -> dict[str, Any]:
        return self._object("GET", wire.path(service, id))

    def heartbeat(
        self,
        service: str,
        id: str,
        status: str | None = None,
        load: float | None = None,
        latency_ms: float | None = None,
    ) -> dict[str, Any]:
        """Renew the instance's lease; optionally report a status, load or latency."""
        body = {
            k: v
            for k, v in (("status", status), ("load", load), ("latency_ms", latency_ms))
            if v is not None
        }
        return self._object("POST", wire.path(service, id, "heartbeat"), body)

    def maintenance(
        self, service: str, id: str, enabled: bool = True, reason: str | None = None
    ) -> dict[str, Any]:
        """Take the instance out of the answers (``enabled``) or put it back."""
        body: dict[str, Any] = {"enabled": enabled}
        if reason is not None:
            body["reason"] = reason
        return self._object("PUT", wire.path(service, id, "maintenance"), body)

    # -- services ----------------------------------------------------------------------------

    def services(self) -> list[dict[str, Any]]:
        """Every service's settings and ``instance_count``."""
        return wire.as_list(self._object("GET", "/v1/services"), "services", self.url)

    def service(self, service: str) -> dict[str, Any]:
        """One service's settings and its ``instances``."""
        return self._object("GET", wire.path(service))

    def explain(
        self,
        service: str,
        type: str = "A",
        client: str | None = None,
        ecs: str | None = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """What the next answer to ``client`` (or the subnet ``ecs``) would be: each instance
        with why it is in or out and its chance of coming first and of being in the answer."""
        params = {"type": type, "client": client, "ecs": ecs, "tag": tag}
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return self._object("GET", f"{wire.path(service)}/explain?{query}")

    def instances(self, service: str) -> list[dict[str, Any]]:
        """A service's instances, each with its ``health``."""
        return wire.as_list(self.service(service), "instances", self.url)

    # -- leases ------------------------------------------------------------------------------

    def registration(
        self, service: str, id: str, address: str, port: int, *, ttl: float = 10.0, **fields: Any
    ) -> Registration:
        """A context manager: registers with a ``ttl`` lease, heartbeats every ttl/3 from a
        daemon thread and deregisters on exit. See ``Registration``."""
        body = wire.instance_body(address, port, {"ttl": ttl, **fields})
        return Registration(self, service, id, body)


class _TokenKeepingRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, except that the token goes only where ``wire.keeps_auth`` allows:
    urllib itself copies every header to whatever host a redirect names."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not wire.keeps_auth(req.full_url, new.full_url):
            new.remove_header("Authorization")
        return new


def _in_thread(
    call: Callable[Concatenate[Client, P], T],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """``call`` as a coroutine method of AsyncClient: the same parameters, run on its ``sync``
    client in a thread of the default executor."""
    name = call.__name__

    @functools.wraps(call)
    async def in_thread(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        import asyncio  # here: the CLI's client commands must not import asyncio

        # Looked up on the instance, so that a Client subclass's own methods are used.
        bound: Callable[P, T] = getattr(self.sync, name)
        return await asyncio.to_thread(bound, *args, **kwargs)

    return in_thread


def tls_context(
    cacert: str | None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """A client context: the server's certificate and name are checked (against ``cacert``, or
    the system's CAs), TLS 1.2 or newer, and ``cert``/``key`` offered to a server that asks."""
    if key and not cert:
        raise ValueError("a client key needs its certificate (--cert, $DNSDISC_CERT)")
    try:
        ctx = ssl.create_default_context(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the CA file {cacert}: {reason_of(exc)}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot load the client certificate {cert}: {reason_of(exc)}"
            ) from None
    return ctx


class AsyncClient:
    """The same API for asyncio code. The calls run the sync client in the default executor's
    threads: a handful of small requests do not need a second HTTP stack."""

    def __init__(
        self,
        http: str = DEFAULT_HTTP,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        cacert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        self.sync = Client(http, token, timeout=timeout, cacert=cacert, cert=cert, key=key)

    def __repr__(self) -> str:
        return f"AsyncClient({self.sync.url!r})"

    request = _in_thread(Client.request)
    register = _in_thread(Client.register)
    deregister = _in_thread(Client.deregister)
    instance = _in_thread(Client.instance)
    heartbeat = _in_thread(Client.heartbeat)
    maintenance = _in_thread(Client.maintenance)
    services = _in_thread(Client.services)
    service = _in_thread(Client.service)
    instances = _in_thread(Client.instances)
    batch = _in_thread(Client.batch)
    explain = _in_thread(Client.explain)

    def registration(
        self, service: str, id: str, address: str, port: int, *, ttl: float = 10.0, **fields: Any
    ) -> AsyncRegistration:
        """``async with``: registers with a ``ttl`` lease, heartbeats every ttl/3 from a task and
        deregisters on exit."""
        body = wire.instance_body(address, port, {"ttl": ttl, **fields})
        return AsyncRegistration(self.sync, service, id, body)
