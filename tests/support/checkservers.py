"""Real servers on loopback for the check types' tests, and a way to run ``Prober`` on a check:
an HTTP(S) server with routes that answer what the tests need (recording what it was sent), a
gRPC server with the standard health service, a UDP echo server."""

from __future__ import annotations

import asyncio
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnsdisc.health.probes import Outcome, Prober
from dnsdisc.registry.checks import CheckSpec
from tests.support.certs import Pair


def probe(check: dict[str, Any], address: str, port: int, runs: int = 1) -> list[Outcome]:
    """``runs`` runs of ``check`` by one ``Prober`` (sharing its connections), one after the
    other."""

    async def go() -> list[Outcome]:
        prober = Prober()
        prober.start()
        try:
            spec = CheckSpec.from_json({"interval": 5, "timeout": 2, **check})
            return [await prober.probe(spec, address, port) for _ in range(runs)]
        finally:
            await prober.close()

    return asyncio.run(go())


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which accepted connection carried it


@dataclass
class HttpBackend:
    port: int
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    server: http.server.ThreadingHTTPServer | None = None

    def stop(self) -> None:
        """Stop listening and close every connection, as a process that died."""
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        for sock in list(getattr(self.server, "open_sockets", [])):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    backend: HttpBackend

    def setup(self) -> None:
        super().setup()
        self.server.open_sockets.append(self.connection)  # type: ignore[attr-defined]
        self.backend.connections += 1
        self.number = self.backend.connections

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.backend.seen.append(
            Seen(self.command, self.path, dict(self.headers.items()), body, self.number)
        )
        port = self.backend.port
        status, headers, out = 200, {}, b"all good"
        if self.path == "/busy":
            status = 429
        elif self.path == "/evil":
            # What the output must never show: a reason phrase and a body of the target's.
            self.send_response(500, "EVIL\x1b[31mREASON")
            self._finish({}, b"EVIL-BODY")
            return
        elif self.path == "/big":
            out = b"x" * (70 * 1024) + b"MARKER"
        elif self.path == "/unframed":
            # An HTTP/1.1 body with no length, delimited by the end of the connection, longer
            # than a check reads: its tail, sent a moment later, looks like a response.
            self.wfile.write(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (64 * 1024) + b"all good")
            self.wfile.flush()
            time.sleep(0.2)
            with suppress(OSError):  # the check closed the connection (it should)
                self.wfile.write(b"HTTP/1.1 500 Stale\r\nContent-Length: 0\r\n\r\n")
            self.close_connection = True
            return
        elif self.path == "/bare-lf":
            # Lines ended by a bare LF, as some small servers write them.
            self.wfile.write(b"HTTP/1.1 200 OK\nContent-Length: 8\n\nall good")
            return
        elif self.path == "/redirect-relative":
            status, headers = 302, {"Location": "/health"}
        elif self.path == "/redirect-absolute":
            status, headers = 307, {"Location": f"http://127.0.0.1:{port}/health"}
        elif self.path == "/redirect-other-host":
            status, headers = 302, {"Location": f"http://127.0.0.2:{port}/health"}
        elif self.path == "/redirect-other-port":
            status, headers = 302, {"Location": f"http://127.0.0.1:{port + 1}/health"}
        elif self.path == "/redirect-loop":
            status, headers = 302, {"Location": "/redirect-loop"}
        elif self.path == "/post-to-get":
            status, headers = 303, {"Location": "/health"}
        elif self.path == "/missing":
            status = 404
        self.send_response(status)
        self._finish(headers, out)

    def _finish(self, headers: dict[str, str], out: bytes) -> None:
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_backend(
    port: int, host: str = "127.0.0.1", tls: Pair | None = None
) -> Iterator[HttpBackend]:
    """An HTTP/1.1 server (keep-alive) on ``host``:``port``, over TLS with ``tls``'s cert."""
    backend = HttpBackend(port)
    handler = type("Handler", (_Handler,), {"backend": backend})
    srv = http.server.ThreadingHTTPServer((host, port), handler)
    srv.daemon_threads = True
    srv.open_sockets = []  # type: ignore[attr-defined]
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls.cert, tls.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    backend.server = srv
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield backend
    finally:
        if thread.is_alive():
            backend.stop()
        thread.join(5)


@dataclass
class GrpcBackend:
    port: int
    health: Any  # grpc_health.v1.health.HealthServicer
    server: Any

    def set(self, service: str, serving: bool) -> None:
        from grpc_health.v1 import health_pb2

        status = health_pb2.HealthCheckResponse.SERVING
        if not serving:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set(service, status)


@contextmanager
def grpc_backend(tls: Pair | None = None) -> Iterator[GrpcBackend]:
    """A gRPC server on 127.0.0.1 with the standard health service (grpcio-health-checking),
    plaintext or over TLS with ``tls``'s cert; the server ("") is SERVING."""
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        creds = grpc.ssl_server_credentials([(tls.key.read_bytes(), tls.cert.read_bytes())])
        port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    backend = GrpcBackend(port, servicer, server)
    backend.set("", True)
    try:
        yield backend
    finally:
        server.stop(0).wait(5)


@contextmanager
def udp_echo(port: int) -> Iterator[list[bytes]]:
    """A UDP server that answers each datagram with ``pong:`` and what it got (kept in the
    list it yields)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.05)
    got: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            got.append(data)
            sock.sendto(b"pong:" + data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def write_script(path: Path, text: str) -> str:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return str(path)
