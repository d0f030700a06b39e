"""A small client for dnsdisc: the HTTP API (sync and asyncio), leases kept alive in the
background, and SRV lookups in RFC 2782 order.

HTTP goes through the standard library (urllib) so that ``dnsdisc register ...`` starts fast and
this module imports neither aiohttp nor the server; dnspython is imported on the first
``resolve()``. Every failure is a ``ClientError``: ``status`` is the HTTP status of a refused
request (0 when none came back), ``field`` the top-level key the server named, ``message`` its
words.

    client = Client("127.0.0.1:8054", token=None)
    with client.registration("web", "web-1", address="10.0.0.1", port=8080, ttl=10):
        serve_forever()        # heartbeats every ttl/3 from a daemon thread; deregistered on exit
    resolve("web")             # [("10.0.0.1", 8080)], RFC 2782 weighted order
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from dnsdisc.errors import DnsdiscError
from dnsdisc.netaddr import DEFAULT_DNS, DEFAULT_DOMAIN, DEFAULT_HTTP, is_loopback
from dnsdisc.policies.balance import srv_order

if TYPE_CHECKING:  # imported lazily: the CLI needs neither dnspython nor asyncio
    import asyncio

    from dns.message import Message

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)

HEALTHY = ("passing", "warning")  # the states whose instances are handed out
# After a failed heartbeat the next try comes sooner than the regular ttl/3, but not more than
# once a second, so a lease survives a short outage without hammering a server that is down.
_RETRY_AFTER = 1.0
_RNG = random.Random()


class ClientError(DnsdiscError):
    """A request the server refused (``status`` its HTTP status, ``field`` the key it named), or
    one that could not be made at all (``status`` 0)."""

    def __init__(self, message: str, status: int = 0, field: str = "", url: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field
        self.url = url

    def __str__(self) -> str:
        if not self.status:
            return self.message
        where = f"{self.field}: " if self.field else ""
        return f"{where}{self.message} (HTTP {self.status})"


class Unreachable(ClientError):
    """No HTTP reply: connection refused, timed out, name not found, not an HTTP server."""


class ResolveError(ClientError):
    """A DNS lookup failed (timeout, SERVFAIL, REFUSED), or ``pick`` found nothing to pick."""


# -- addresses -------------------------------------------------------------------------------


def split_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, or a host alone (``default_port``). ValueError otherwise."""
    expected = (
        f"expected HOST:PORT, e.g. 127.0.0.1:{default_port} or [::1]:{default_port}, got {text!r}"
    )
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(expected)
        port_text = rest[1:] if rest else str(default_port)
    elif text.count(":") > 1:
        raise ValueError(f"IPv6 hosts need brackets, e.g. [::1]:{default_port}; got {text!r}")
    else:
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = str(default_port)
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(expected)
    return host, int(port_text)


def base_url(http: str) -> str:
    """The API's base URL from ``HOST:PORT`` (plain HTTP) or ``http(s)://HOST:PORT``."""
    scheme, sep, rest = http.strip().partition("://")
    if not sep:
        scheme, rest = "http", http
    if scheme not in ("http", "https"):
        raise ValueError(f"expected HOST:PORT or http://HOST:PORT, got {http!r}")
    rest = rest.rstrip("/")
    if "/" in rest:
        raise ValueError(f"expected HOST:PORT or http://HOST:PORT without a path, got {http!r}")
    host, port = split_hostport(rest, 8054 if scheme == "http" else 443)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def _reason(exc: BaseException) -> str:
    """Why a request got no HTTP reply, in a few words."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without replying"
    if isinstance(exc, http.client.HTTPException):
        return f"not an HTTP reply ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _path(service: str, instance: str | None = None, action: str | None = None) -> str:
    # Quoted whole: a name with '/' or '..' must reach the server as one (invalid) label.
    path = "/v1/services/" + urllib.parse.quote(service, safe="")
    if instance is not None:
        path += "/instances/" + urllib.parse.quote(instance, safe="")
    if action is not None:
        path += "/" + action
    return path


# -- the HTTP API ----------------------------------------------------------------------------


class Client:
    """The HTTP API, synchronously (urllib). ``http`` is ``HOST:PORT`` or a URL; with ``token``
    every request carries ``Authorization: Bearer <token>``."""

    def __init__(
        self, http: str = DEFAULT_HTTP, token: str | None = None, *, timeout: float = 10.0
    ) -> None:
        self.url = base_url(http)
        self.token = token
        self.timeout = timeout
        host = urllib.parse.urlsplit(self.url).hostname or ""
        # A proxy from the environment (http_proxy) must not catch requests to a local dnsdisc;
        # urllib, unlike curl and Go, does not exempt loopback by itself.
        handlers = [urllib.request.ProxyHandler({})] if is_loopback(host) else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One API call: the parsed JSON reply (None for an empty one, as with 204)."""
        data = None if body is None else json.dumps(body, allow_nan=False).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            raise self._refused(err) from None
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            raise Unreachable(f"cannot reach dnsdisc at {self.url}: {_reason(exc)}") from None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ClientError(
                f"the reply to {method} {path} is not JSON: {raw[:80]!r}", status, url=self.url
            ) from None

    def _refused(self, err: urllib.error.HTTPError) -> ClientError:
        try:
            raw = err.read()
        except (OSError, http.client.HTTPException):
            raw = b""
        message, fld = "", ""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if isinstance(body, dict):
            message = str(body.get("error") or "")
            fld = str(body.get("field") or "")
        if not message:  # not dnsdisc's error body: something else answers on that port
            message = f"{err.reason}" if err.reason else "request failed"
            if raw:
                message += f": {raw[:80]!r}"
        return ClientError(message, err.code, fld, self.url)

    def _object(self, reply: Any) -> dict[str, Any]:
        if not isinstance(reply, dict):
            raise ClientError(f"unexpected reply from {self.url}: {reply!r:.80}", url=self.url)
        return reply

    def _list(self, reply: dict[str, Any], key: str) -> list[dict[str, Any]]:
        items = reply.get(key)
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ClientError(f"unexpected reply from {self.url}: no {key!r} list", url=self.url)
        return items

    # -- instances ---------------------------------------------------------------------------

    def register(
        self, service: str, id: str, address: str, port: int, **fields: Any
    ) -> dict[str, Any]:
        """Register or replace an instance; ``fields`` are the instance body's other keys
        (weight, priority, protocol, tags, meta, ttl, check, deregister_after). The stored
        instance comes back."""
        body = {"address": address, "port": port, **fields}
        return self._object(self.request("PUT", _path(service, id), body))

    def deregister(self, service: str, id: str) -> None:
        self.request("DELETE", _path(service, id))

    def instance(self, service: str, id: str) -> dict[str, Any]:
        return self._object(self.request("GET", _path(service, id)))

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
        return self._object(self.request("POST", _path(service, id, "heartbeat"), body))

    def maintenance(
        self, service: str, id: str, enabled: bool = True, reason: str | None = None
    ) -> dict[str, Any]:
        """Take the instance out of the answers (``enabled``) or put it back."""
        body: dict[str, Any] = {"enabled": enabled}
        if reason is not None:
            body["reason"] = reason
        return self._object(self.request("PUT", _path(service, id, "maintenance"), body))

    # -- services ----------------------------------------------------------------------------

    def services(self) -> list[dict[str, Any]]:
        """Every service's settings and ``instance_count``."""
        reply = self._object(self.request("GET", "/v1/services"))
        return self._list(reply, "services")

    def service(self, service: str) -> dict[str, Any]:
        """One service's settings and its ``instances``."""
        return self._object(self.request("GET", _path(service)))

    def instances(self, service: str) -> list[dict[str, Any]]:
        """A service's instances, each with its ``health``."""
        return self._list(self.service(service), "instances")

    # -- leases ------------------------------------------------------------------------------

    def registration(
        self, service: str, id: str, address: str, port: int, *, ttl: float = 10.0, **fields: Any
    ) -> Registration:
        """A context manager: registers with a ``ttl`` lease, heartbeats every ttl/3 from a
        daemon thread and deregisters on exit. See ``Registration``."""
        body = {"address": address, "port": port, "ttl": ttl, **fields}
        return Registration(self, service, id, body)


class _Lease:
    """What the sync and async lease keepers share: the beat itself and its bookkeeping.

    ``status``, ``load`` and ``latency_ms`` may be set at any time; every later heartbeat
    reports them. A failed heartbeat is logged and retried, never raised. An instance that has
    disappeared (404: removed by ``deregister_after``, a server that lost its memory store, an
    operator) is registered again, as Consul's agent does; to take a kept instance out of the
    answers, use maintenance."""

    def __init__(self, client: Client, service: str, id: str, body: dict[str, Any]) -> None:
        ttl = body.get("ttl")
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not ttl > 0:
            raise ValueError(f"a lease needs a ttl in seconds above 0, got {ttl!r}")
        self.client = client
        self.service = service
        self.id = id
        self.body = body
        self.interval = float(ttl) / 3
        self.instance: dict[str, Any] = {}  # the server's reply to the latest registration
        self.status: str | None = None
        self.load: float | None = None
        self.latency_ms: float | None = None
        self.heartbeats = 0  # successful ones
        self.failures = 0  # consecutive failed ones
        self.last_error: Exception | None = None

    def _register(self) -> None:
        self.instance = self.client.register(self.service, self.id, **self.body)

    def _beat(self) -> None:
        name = f"{self.service}/{self.id}"
        try:
            try:
                self.client.heartbeat(
                    self.service, self.id, self.status, self.load, self.latency_ms
                )
            except ClientError as exc:
                if exc.status != 404:
                    raise
                log.warning("%s is no longer registered; registering it again", name)
                self._register()
        except Exception as exc:  # whatever it is, the lease keeper logs it and tries again
            self.failures += 1
            self.last_error = exc
            # The first failure is news; repeating it every second while the server is down
            # is not.
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            log.log(level, "heartbeat for %s failed (%d in a row): %s", name, self.failures, exc)
            return
        if self.failures:
            log.info("heartbeats for %s succeed again after %d failures", name, self.failures)
        self.failures = 0
        self.heartbeats += 1

    def _delay(self) -> float:
        return self.interval if not self.failures else min(self.interval, _RETRY_AFTER)

    def _deregister(self) -> None:
        try:
            self.client.deregister(self.service, self.id)
        except ClientError as exc:
            # Not raised: it would hide the exception that may be leaving the block, and an
            # instance we could not remove goes critical when its lease runs out anyway.
            if exc.status != 404:
                log.warning("could not deregister %s/%s: %s", self.service, self.id, exc)


class Registration(_Lease):
    """``with client.registration(...) as reg:`` registers on entry (errors raised), heartbeats
    from a daemon thread, deregisters on exit (errors logged). Exit waits for a heartbeat in
    flight, at most the client's ``timeout``."""

    def __init__(self, client: Client, service: str, id: str, body: dict[str, Any]) -> None:
        super().__init__(client, service, id, body)
        self._stop = threading.Event()
        # Held around each beat: exit waits for one in flight, so that no re-registration can
        # land after the deregistration.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Registration:
        self._register()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"dnsdisc-lease-{self.service}-{self.id}", daemon=True
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._delay()):
            with self._lock:
                if self._stop.is_set():
                    return
                self._beat()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        with self._lock:  # no beat is in flight after this, and none will start
            pass
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        self._deregister()


# -- asyncio ---------------------------------------------------------------------------------


async def _to_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    import asyncio

    return await asyncio.to_thread(fn, *args, **kwargs)


class AsyncClient:
    """The same API for asyncio code. The calls run the sync client in the default executor's
    threads: a handful of small requests do not need a second HTTP stack."""

    def __init__(
        self, http: str = DEFAULT_HTTP, token: str | None = None, *, timeout: float = 10.0
    ) -> None:
        self.sync = Client(http, token, timeout=timeout)

    def __repr__(self) -> str:
        return f"AsyncClient({self.sync.url!r})"

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        return await _to_thread(self.sync.request, method, path, body)

    async def register(
        self, service: str, id: str, address: str, port: int, **fields: Any
    ) -> dict[str, Any]:
        return await _to_thread(self.sync.register, service, id, address, port, **fields)

    async def deregister(self, service: str, id: str) -> None:
        await _to_thread(self.sync.deregister, service, id)

    async def instance(self, service: str, id: str) -> dict[str, Any]:
        return await _to_thread(self.sync.instance, service, id)

    async def heartbeat(
        self,
        service: str,
        id: str,
        status: str | None = None,
        load: float | None = None,
        latency_ms: float | None = None,
    ) -> dict[str, Any]:
        return await _to_thread(self.sync.heartbeat, service, id, status, load, latency_ms)

    async def maintenance(
        self, service: str, id: str, enabled: bool = True, reason: str | None = None
    ) -> dict[str, Any]:
        return await _to_thread(self.sync.maintenance, service, id, enabled, reason)

    async def services(self) -> list[dict[str, Any]]:
        return await _to_thread(self.sync.services)

    async def service(self, service: str) -> dict[str, Any]:
        return await _to_thread(self.sync.service, service)

    async def instances(self, service: str) -> list[dict[str, Any]]:
        return await _to_thread(self.sync.instances, service)

    def registration(
        self, service: str, id: str, address: str, port: int, *, ttl: float = 10.0, **fields: Any
    ) -> AsyncRegistration:
        """``async with``: registers with a ``ttl`` lease, heartbeats every ttl/3 from a task and
        deregisters on exit."""
        body = {"address": address, "port": port, "ttl": ttl, **fields}
        return AsyncRegistration(self.sync, service, id, body)


class AsyncRegistration(_Lease):
    """``async with AsyncClient(...).registration(...) as reg:`` (see ``Registration``)."""

    def __init__(self, client: Client, service: str, id: str, body: dict[str, Any]) -> None:
        super().__init__(client, service, id, body)
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncRegistration:
        import asyncio

        await _to_thread(self._register)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(
            self._run(), name=f"dnsdisc-lease-{self.service}-{self.id}"
        )
        return self

    async def _run(self) -> None:
        import asyncio

        assert self._stop is not None
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), self._delay())
                return
            except TimeoutError:
                pass
            await _to_thread(self._beat)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            # Awaited, not cancelled: a cancelled task would leave its thread's request running,
            # and a re-registration in flight could land after the deregistration.
            task, self._task = self._task, None
            try:
                await task
            except Exception:  # the loop catches what a beat raises; this is a last resort
                log.exception("the lease keeper of %s/%s failed", self.service, self.id)
        await _to_thread(self._deregister)


# -- DNS -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SrvCandidate:
    """An SRV record as ``balance.srv_order`` sees a candidate."""

    weight: int
    priority: int
    load: float | None = None
    latency_ms: float | None = None


def _ask(qname: str, rdtype: str, host: str, port: int, timeout: float) -> Message:
    """One query to ``host:port``: UDP with EDNS, TCP when the reply is truncated."""
    import dns.exception
    import dns.message as dns_message
    import dns.query as dns_query

    query = dns_message.make_query(qname, rdtype, use_edns=0, payload=1232)
    try:
        reply, _ = dns_query.udp_with_fallback(query, host, port=port, timeout=timeout)
    except dns.exception.Timeout:
        raise ResolveError(
            f"no reply from {host}:{port} to {qname} {rdtype} in {timeout:g} s"
        ) from None
    except (OSError, dns.exception.DNSException) as exc:
        raise ResolveError(f"{qname} {rdtype} at {host}:{port}: {_reason(exc)}") from None
    return reply


def _addresses(reply: Message) -> dict[str, list[str]]:
    """Target name -> its A addresses, then AAAA, from a reply's answer and additional
    sections."""
    import dns.rdatatype as rdatatype

    found: dict[str, list[str]] = {}
    for family in (rdatatype.A, rdatatype.AAAA):
        for rrset in (*reply.answer, *reply.additional):
            if rrset.rdtype == family:
                found.setdefault(rrset.name.to_text().lower(), []).extend(
                    rr.address for rr in rrset
                )
    return found


def resolve(
    service: str,
    dns: str = DEFAULT_DNS,
    domain: str = DEFAULT_DOMAIN,
    proto: str = "tcp",
    *,
    rng: random.Random | None = None,
    timeout: float = 3.0,
) -> list[tuple[str, int]]:
    """``(address, port)`` of each target of ``_<service>._<proto>.<domain>`` SRV, in RFC 2782
    order: priority ascending, weighted random within a priority (a new draw per call; pass a
    seeded ``rng`` to fix it). Addresses come from the reply's additional section, or from A then
    AAAA queries to the same server. ``dns`` is ``HOST:PORT`` of dnsdisc or of a resolver in
    front of it. An unknown service or one with nothing to hand out gives []; a failed query
    raises ``ResolveError``."""
    import dns.rcode as rcode
    import dns.rdatatype as rdatatype

    host, port = split_hostport(dns, 53)
    qname = f"_{service}._{proto}.{domain.rstrip('.')}."
    reply = _ask(qname, "SRV", host, port, timeout)
    if reply.rcode() == rcode.NXDOMAIN:
        return []
    if reply.rcode() != rcode.NOERROR:
        raise ResolveError(f"{qname} SRV at {host}:{port}: {rcode.to_text(reply.rcode())}")
    records: list[Any] = [
        rr
        for rrset in reply.answer
        if rrset.rdtype == rdatatype.SRV
        for rr in rrset
        if len(rr.target) > 1  # target "." means "no service here" (RFC 2782)
    ]
    candidates: Sequence[_SrvCandidate] = [_SrvCandidate(r.weight, r.priority) for r in records]
    known = _addresses(reply)
    out: list[tuple[str, int]] = []
    for i in srv_order(candidates, 0, rng or _RNG):
        target = records[i].target.to_text().lower()
        if target not in known:
            known[target] = []
            for rdtype in ("A", "AAAA"):
                looked = _addresses(_ask(target, rdtype, host, port, timeout)).get(target, [])
                if looked:
                    known[target] = looked
                    break
        if known[target]:
            out.append((known[target][0], int(records[i].port)))
        else:
            log.debug("SRV target %s of %s has no address; left out", target, qname)
    return out


def pick(
    service: str,
    dns: str = DEFAULT_DNS,
    domain: str = DEFAULT_DOMAIN,
    proto: str = "tcp",
    *,
    rng: random.Random | None = None,
    timeout: float = 3.0,
) -> tuple[str, int]:
    """The first of ``resolve()``: one instance chosen by priority and weight. ResolveError when
    there is none."""
    targets = resolve(service, dns, domain, proto, rng=rng, timeout=timeout)
    if not targets:
        raise ResolveError(
            f"no instance of {service!r} to pick: _{service}._{proto}.{domain.rstrip('.')}. "
            "has no SRV records"
        )
    return targets[0]
