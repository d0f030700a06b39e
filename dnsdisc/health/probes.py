"""One run of one active check, of any type that reaches out (``Prober.probe``): the verdict,
the output in our own words and the response time. The monitor (``monitor.py``) decides when
checks run and what their verdicts make of the instance; ``alias`` checks are its own (they look
at the registry, not the network).

Outputs never carry what the target sent (a body, a reason phrase, a redirect's ``Location``, a
gRPC status message, a command's output beyond the bounded and escaped tail kept for exec
checks): the API shows them to anyone who may read.

Every run is bounded by ``min(timeout, interval)``. What runs share:

- HTTP(S) connections are kept alive between runs of the same target (``http1.Client``: at
  most ``PER_TARGET`` idle connections per target, each closed after ``KEEPALIVE`` s idle): open
  descriptors stay below the checks in flight (``health.max_concurrent_checks``) plus the idle
  ones. A connection the target closed is never reused, and a request that finds a reused
  connection closed before any answer is sent again once on a new one (idempotent methods): a
  target that died fails the run that follows. Checks that send a POST or PATCH, or run less
  often than every ``KEEPALIVE`` s, open a new connection each time.
- gRPC: a channel per target, reused while its calls succeed, dropped on a failure (so a
  channel's reconnection backoff never outlasts the target's recovery) and when unused for long.
- TLS contexts: one per (ca_file, tls_skip_verify), rebuilt when the CA file changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import shutil
import signal
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
from yarl import URL

from dnsdisc.health import http1
from dnsdisc.logs import escape
from dnsdisc.registry.checks import MAX_BODY, CheckSpec
from dnsdisc.registry.model import CRITICAL, PASSING, WARNING

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
EXEC_TAIL = 4096  # bytes of an exec check's output kept (the last ones)
GRPC_IDLE = 60.0  # s beyond twice its interval after which an unused gRPC channel is closed
# Headers the client sets itself (a check's own of these are not sent): the body's framing,
# and the connection's handling.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # PASSING, WARNING or CRITICAL
    output: str
    latency_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.status != CRITICAL


class CaFileError(Exception):
    """A check's ``ca_file`` could not be read or holds no certificate (its message says so)."""


@dataclass(slots=True)
class _Channel:
    channel: Any  # grpc.aio.Channel
    stub: Any  # grpc_health.v1.health_pb2_grpc.HealthStub
    interval: float
    used: float
    bridge: _TlsBridge | None = None


@dataclass(slots=True)
class _Contexts:
    """TLS client contexts, one per (ca_file, skip_verify), remade when the file changes."""

    made: dict[tuple[Any, ...], tuple[tuple[int, int, int] | None, ssl.SSLContext]] = field(
        default_factory=dict
    )

    def get(self, ca_file: str | None, skip_verify: bool, alpn: str = "") -> ssl.SSLContext:
        ca = None if skip_verify else ca_file
        key = (ca, skip_verify, alpn)
        sig = None if ca is None else _signature(ca)
        held = self.made.get(key)
        if held is not None and held[0] == sig:
            return held[1]
        try:
            ctx = ssl.create_default_context(cafile=ca)  # a ca_file is then the only trust
        except ssl.SSLError:
            raise CaFileError(f"ca_file {escape(str(ca))} holds no PEM certificate") from None
        except OSError as exc:
            raise CaFileError(
                f"ca_file {escape(str(ca))} cannot be read ({_errname(exc)})"
            ) from None
        if skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols([alpn])
        self.made[key] = (sig, ctx)
        return ctx


def _signature(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CaFileError(f"ca_file {escape(path)} cannot be read ({_errname(exc)})") from None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _ca_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as exc:
        raise CaFileError(f"ca_file {escape(path)} cannot be read ({_errname(exc)})") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CaFileError(f"ca_file {escape(path)} holds no PEM certificate")
    return data


class Prober:
    """Runs checks; holds what runs may share (HTTP connections, gRPC channels, TLS contexts)."""

    def __init__(self) -> None:
        self._client = http1.Client()
        self._contexts = _Contexts()
        self._channels: dict[tuple[Any, ...], _Channel] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Kept for the monitor's lifecycle: nothing is shared before the first run."""

    async def close(self) -> None:
        self._client.close()
        for key in list(self._channels):
            self._drop(key)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def probe(self, spec: CheckSpec, address: str, port: int) -> Outcome:
        """One run of ``spec`` against ``address``:``port`` (the check's target), bounded by
        its timeout and never longer than its interval."""
        host = f"[{address}]" if ":" in address else address
        limit = min(spec.timeout, spec.interval)
        if spec.type == "exec":
            return await self._exec(spec, limit)
        started = time.perf_counter()
        what = f"{spec.type.upper()} {host}:{port}"
        try:
            async with asyncio.timeout(limit):
                if spec.type == "tcp":
                    _, writer = await asyncio.open_connection(address, port)
                    writer.close()
                    return Outcome(PASSING, f"TCP connect {host}:{port}: connected", _ms(started))
                if spec.type in ("http", "https"):
                    return await self._http(spec, address, port, started)
                if spec.type == "grpc":
                    what = f"gRPC {host}:{port}"
                    return await self._grpc(spec, address, port, limit, started, what)
                if spec.type == "udp":
                    return await self._udp(spec, address, port, started, what)
                if spec.type == "dns":
                    return await self._dns(spec, address, port, limit, started, what)
            return Outcome(CRITICAL, f"{spec.type} checks are not run by the prober")
        except CaFileError as exc:
            return Outcome(CRITICAL, f"{what}: {exc}")
        except (
            OSError,
            TimeoutError,
            http1.Closed,
            http1.HttpError,
            dns.exception.DNSException,
        ) as exc:
            return Outcome(CRITICAL, f"{what}: {failure(exc)}")
        except (ValueError, UnicodeError) as exc:  # e.g. a name the TLS layer cannot encode
            return Outcome(CRITICAL, f"{what}: {failure(exc)}")

    # -- http, https -------------------------------------------------------------------------

    async def _http(self, spec: CheckSpec, address: str, port: int, started: float) -> Outcome:
        scheme = spec.type
        origin = URL.build(scheme=scheme, host=address, port=port)
        url = URL(f"{origin}{spec.path}")
        ctx = None
        if scheme == "https":
            ctx = self._contexts.get(spec.ca_file, spec.tls_skip_verify)
        target = (address, port, ctx, spec.tls_server_name)
        # Keep-alive only where the next run comes before the idle connection is closed, and
        # for methods a failed reused connection may be retried with (RFC 9112, 9.3.1.1).
        reuse = spec.method in IDEMPOTENT and spec.interval <= http1.KEEPALIVE
        method, body = spec.method, spec.body.encode()
        configured = escape(f"HTTP {spec.method} {url}")
        for hop in range(MAX_REDIRECTS + 1):
            # The configured URL only: a followed one is the target's Location, its words.
            what = configured if hop == 0 else f"{configured} (after {hop} redirects)"
            resp = await self._client.request(
                target,
                _request(method, url, spec.headers, body, reuse),
                head_only=method == "HEAD",
                reuse=reuse,
                retry=reuse,
                limit=MAX_BODY,  # what expect_body looks at
            )
            ms = _ms(started)
            code = resp.status
            location = resp.location
            if spec.follow_redirects and code in REDIRECTS and location is not None:
                try:
                    target_url = url.join(URL(location)).with_user(None).with_fragment(None)
                except ValueError:
                    return Outcome(CRITICAL, f"{what}: status {code}: invalid redirect", ms)
                if not _same_origin(target_url, origin):
                    return Outcome(
                        CRITICAL,
                        f"{what}: status {code}: redirect to another origin refused "
                        f"(only redirects within {escape(str(origin))} are followed)",
                        ms,
                    )
                if hop == MAX_REDIRECTS:
                    return Outcome(
                        CRITICAL, f"{what}: status {code}: over {MAX_REDIRECTS} redirects", ms
                    )
                if (code == 303 and method != "HEAD") or (code in (301, 302) and method == "POST"):
                    method, body = "GET", b""
                url = target_url
                continue
            lo, hi = spec.expect
            if not lo <= code <= hi:
                status = WARNING if code == 429 else CRITICAL
                return Outcome(status, f"{what}: status {code} (expected {lo}-{hi})", ms)
            if spec.expect_body is not None and spec.expect_body.encode() not in resp.body:
                return Outcome(
                    CRITICAL,
                    f"{what}: status {code}, but the body (first {MAX_BODY // 1024} KiB) "
                    "lacks the expected text",
                    ms,
                )
            found = ", body has the expected text" if spec.expect_body is not None else ""
            return Outcome(PASSING, f"{what}: status {code} (expected){found}", ms)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- grpc --------------------------------------------------------------------------------

    async def _grpc(
        self, spec: CheckSpec, address: str, port: int, limit: float, started: float, what: str
    ) -> Outcome:
        grpc, pb, _ = _grpc_modules()
        now = time.monotonic()
        for old, other in list(self._channels.items()):
            if now - other.used > 2 * other.interval + GRPC_IDLE:
                self._drop(old)
        ca = None if not spec.tls or spec.tls_skip_verify else spec.ca_file
        sig = _signature(ca) if ca is not None else None
        key = (address, port, spec.tls, spec.tls_server_name, spec.tls_skip_verify, ca, sig)
        held = self._channels.get(key)
        if held is None:
            made = await self._channel(spec, address, port, ca, limit)
            held = self._channels.setdefault(key, made)
            if held is not made:  # another run made one meanwhile
                self._close_later(made)
        held.used, held.interval = now, spec.interval
        service = spec.grpc_service
        named = f"service {escape(service)!r}" if service else "the server"
        try:
            reply = await held.stub.Check(pb.HealthCheckRequest(service=service), timeout=limit)
        except grpc.aio.AioRpcError as exc:
            self._drop(key)
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return Outcome(CRITICAL, f"{what}: health of {named}: timed out")
            if code == grpc.StatusCode.NOT_FOUND:
                return Outcome(CRITICAL, f"{what}: health of {named}: unknown service")
            return Outcome(CRITICAL, f"{what}: health of {named}: {code.name}")
        except BaseException:
            self._drop(key)  # cancelled (the run's timeout), or worse: start afresh next time
            raise
        state = pb.HealthCheckResponse.ServingStatus.Name(reply.status)
        verdict = PASSING if reply.status == pb.HealthCheckResponse.SERVING else CRITICAL
        return Outcome(verdict, f"{what}: health of {named}: {state}", _ms(started))

    async def _channel(
        self, spec: CheckSpec, address: str, port: int, ca: str | None, limit: float
    ) -> _Channel:
        grpc, _, pbg = _grpc_modules()
        target = f"ipv6:[{address}]:{port}" if ":" in address else f"ipv4:{address}:{port}"
        options: list[tuple[str, Any]] = [
            ("grpc.enable_http_proxy", 0),  # straight to the target, whatever the environment
            ("grpc.enable_retries", 0),
            ("grpc.max_receive_message_length", MAX_BODY),
        ]
        bridge = None
        if not spec.tls:
            channel = grpc.aio.insecure_channel(target, options=options)
        elif spec.tls_skip_verify:
            ctx = self._contexts.get(None, True, alpn="h2")
            bridge = _TlsBridge(address, port, ctx, spec.tls_server_name, limit)
            path = await bridge.start()
            authority = spec.tls_server_name or (f"[{address}]" if ":" in address else address)
            options.append(("grpc.default_authority", f"{authority}:{port}"))
            channel = grpc.aio.insecure_channel(f"unix:{path}", options=options)
        else:
            roots = _ca_bytes(ca) if ca is not None else None
            if spec.tls_server_name:
                options.append(("grpc.ssl_target_name_override", spec.tls_server_name))
            creds = grpc.ssl_channel_credentials(root_certificates=roots)
            channel = grpc.aio.secure_channel(target, creds, options=options)
        return _Channel(channel, pbg.HealthStub(channel), spec.interval, 0.0, bridge)

    def _drop(self, key: tuple[Any, ...]) -> None:
        held = self._channels.pop(key, None)
        if held is not None:
            self._close_later(held)

    def _close_later(self, held: _Channel) -> None:
        async def close() -> None:
            with contextlib.suppress(Exception):
                await held.channel.close()
            if held.bridge is not None:
                await held.bridge.close()

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- udp, dns ----------------------------------------------------------------------------

    async def _udp(
        self, spec: CheckSpec, address: str, port: int, started: float, what: str
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        # Connected: an ICMP port unreachable comes back as ConnectionRefusedError at once.
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Reply(loop), remote_addr=(address, port)
        )
        try:
            transport.sendto(spec.payload)
            reply = await proto.reply
        except ConnectionRefusedError:
            return Outcome(CRITICAL, f"{what}: port unreachable (ICMP)")
        finally:
            transport.close()
        ms = _ms(started)
        size = f"a reply of {len(reply)} bytes"
        if spec.expect_text is None:
            return Outcome(PASSING, f"{what}: {size}", ms)
        if spec.expect_text.encode() in reply:
            return Outcome(PASSING, f"{what}: {size} with the expected text", ms)
        return Outcome(CRITICAL, f"{what}: {size} without the expected text", ms)

    async def _dns(
        self, spec: CheckSpec, address: str, port: int, limit: float, started: float, what: str
    ) -> Outcome:
        query = dns.message.make_query(spec.name, spec.qtype)
        reply = await dns.asyncquery.udp(query, address, timeout=limit, port=port)
        ms = _ms(started)
        rcode = dns.rcode.to_text(reply.rcode())
        asked = escape(f"{spec.name} {spec.qtype}")
        if rcode in spec.expect_rcodes:
            return Outcome(PASSING, f"{what}: {asked}: {rcode} (expected)", ms)
        expected = "/".join(spec.expect_rcodes)
        return Outcome(CRITICAL, f"{what}: {asked}: {rcode} (expected {expected})", ms)

    # -- exec --------------------------------------------------------------------------------

    async def _exec(self, spec: CheckSpec, limit: float) -> Outcome:
        """The command in a session (process group) of its own, its output's last
        ``EXEC_TAIL`` bytes kept; at its timeout, or when it exits, its whole group is killed:
        nothing it started outlives the run."""
        name = escape(spec.command[0])
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            return Outcome(CRITICAL, f"exec: command not found: {name}")
        except PermissionError:
            return Outcome(CRITICAL, f"exec: not allowed to run {name}")
        except OSError as exc:
            return Outcome(CRITICAL, f"exec: cannot run {name} ({_errname(exc)})")
        tail = bytearray()

        async def read() -> None:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                tail.extend(chunk)
                del tail[:-EXEC_TAIL]

        reader = asyncio.ensure_future(read())
        timed_out = False
        try:
            try:
                async with asyncio.timeout(limit):
                    await proc.wait()
            except TimeoutError:
                timed_out = True
            _kill_group(proc.pid)
            await proc.wait()
            # The pipe ends once every process holding it is gone; one that left the group
            # (setsid) may still hold it: its output is not waited for.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), 0.5)
        except BaseException:
            _kill_group(proc.pid)
            raise
        finally:
            reader.cancel()
        text = escape(tail.decode("utf-8", "replace").strip())
        if timed_out:
            return Outcome(
                CRITICAL, f"exec {name}: timed out after {limit:g} s (killed): {text}".rstrip()
            )
        rc = proc.returncode
        assert rc is not None
        status = PASSING if rc == 0 else WARNING if rc == 1 else CRITICAL
        how = f"exit {rc}" if rc >= 0 else f"killed by signal {-rc}"
        return Outcome(status, f"{how}: {text}".rstrip())


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.reply: asyncio.Future[bytes] = loop.create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc or ConnectionResetError(errno.ECONNRESET, "closed"))


class _TlsBridge:
    """gRPC over TLS without verifying the server's certificate (``tls_skip_verify``), which
    gRPC's Python API cannot do: the channel speaks plaintext HTTP/2 to a Unix socket in a
    private directory, whose every connection this relays to the target over TLS (ALPN h2)
    with verification off. Encrypted still, authenticated not: what skip_verify means."""

    def __init__(
        self, address: str, port: int, ctx: ssl.SSLContext, server_name: str | None, limit: float
    ) -> None:
        self.address, self.port, self.ctx = address, port, ctx
        self.server_name, self.limit = server_name, limit
        self._dir = ""
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._dir = tempfile.mkdtemp(prefix="dnsdisc-grpc-")  # mode 0700: ours alone
        path = os.path.join(self._dir, "s")
        self._server = await asyncio.start_unix_server(self._accept, path=path)
        return path

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._relay(reader, writer))
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.limit):
                up_reader, up_writer = await asyncio.open_connection(
                    self.address,
                    self.port,
                    ssl=self.ctx,
                    server_hostname=self.server_name or "",
                )
        except (OSError, TimeoutError):
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        shutil.rmtree(self._dir, ignore_errors=True)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except OSError:
        pass
    finally:
        dst.close()


def _grpc_modules() -> tuple[Any, Any, Any]:
    """grpc and its health service, imported on the first grpc check only."""
    import grpc
    import grpc.aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    return grpc, health_pb2, health_pb2_grpc


def _request(
    method: str, url: URL, headers: tuple[tuple[str, str], ...], body: bytes, reuse: bool
) -> bytes:
    """A whole HTTP/1.1 request: the check's headers after ours (a check may set its own
    ``Host``, ``User-Agent`` or ``Accept``), the framing always ours."""
    own = {name.lower() for name, _ in headers}
    lines = [f"{method} {url.raw_path_qs} HTTP/1.1"]
    if "host" not in own:
        lines.append(f"Host: {url.raw_authority}")
    if "user-agent" not in own:
        lines.append("User-Agent: dnsdisc-health-check")
    if "accept" not in own:
        lines.append("Accept: */*")
    lines.extend(f"{name}: {value}" for name, value in headers if name.lower() not in _FRAMING)
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    if not reuse:
        lines.append("Connection: close")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def _same_origin(url: URL, origin: URL) -> bool:
    if url.scheme != origin.scheme or url.port != origin.port or url.host is None:
        return False
    try:
        return ipaddress.ip_address(url.host) == ipaddress.ip_address(origin.host or "")
    except ValueError:
        return False  # a name: never the check's target, which is an address


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _errname(exc: OSError) -> str:
    if exc.errno is not None and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno]
    return type(exc).__name__


def failure(exc: BaseException) -> str:
    """What went wrong, in our words: exception texts may quote what the target sent."""
    if isinstance(exc, TimeoutError | dns.exception.Timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        # OpenSSL's own words about the check's expectations ("Hostname mismatch...").
        return f"certificate verification failed ({escape(str(exc.verify_message))})"
    if isinstance(exc, ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        return f"connection failed ({errno.errorcode[exc.errno]})"
    if isinstance(exc, http1.Closed):
        return "the server closed the connection"
    if isinstance(exc, http1.HttpError):
        return f"invalid HTTP response ({exc})"
    if isinstance(exc, dns.exception.DNSException):
        return "invalid DNS reply"
    return f"failed ({type(exc).__name__})"
