"""dnsdisc.client without a dnsdisc server: addresses, errors from odd HTTP peers, the lease
keeper's bookkeeping, and resolve()'s RFC 2782 order against a scripted DNS (seeded, checked
statistically). The client commands of the CLI are in tests/unit/test_cli.py."""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
import pytest

from dnsdisc import cli, client
from dnsdisc.client import (
    Client,
    ClientError,
    Registration,
    ResolveError,
    Unreachable,
    base_url,
    pick,
    resolve,
    split_hostport,
)
from dnsdisc.client import srv as client_srv
from dnsdisc.client import wire as client_wire
from tests.support.helpers import free_port
from tests.support.stats import assert_shares

# -- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8054", "http://127.0.0.1:8054"),
        ("localhost", "http://localhost:8054"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("[::1]", "http://[::1]:8054"),
        ("http://10.0.0.1:80/", "http://10.0.0.1:80"),
        ("https://dnsdisc.example", "https://dnsdisc.example:443"),
    ],
)
def test_base_url(text: str, expected: str) -> None:
    assert base_url(text) == expected


@pytest.mark.parametrize(
    "text", ["", ":8054", "host:", "host:x", "host:0", "host:65536", "::1", "ftp://h:1", "h:1/v1"]
)
def test_base_url_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected|brackets"):
        base_url(text)


def test_split_hostport_default_port() -> None:
    assert split_hostport("10.0.0.53", 53) == ("10.0.0.53", 53)
    assert split_hostport("[2001:db8::1]:5353", 53) == ("2001:db8::1", 5353)


def test_client_error_text() -> None:
    assert str(ClientError("port must be from 1 to 65535, got 0", 400, "port")) == (
        "port: port must be from 1 to 65535, got 0 (HTTP 400)"
    )
    assert str(ClientError("service 'x' not found", 404)) == "service 'x' not found (HTTP 404)"
    assert str(Unreachable("cannot reach dnsdisc at http://h:1: timed out")) == (
        "cannot reach dnsdisc at http://h:1: timed out"
    )


# -- HTTP peers that are not dnsdisc -----------------------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    """Answers every request with the class's canned reply; records what it got."""

    status = 200
    body = b"{}"
    content_type = "application/json"
    seen: list[dict[str, Any]] = []  # noqa: RUF012 - shared with the test on purpose

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
                "body": self.rfile.read(length),
            }
        )
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_PUT = do_POST = do_DELETE = _reply

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_peer() -> Iterator[tuple[type[Recorder], int]]:
    handler = type("Handler", (Recorder,), {"seen": []})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield handler, srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def test_requests_carry_json_and_the_token(http_peer: tuple[type[Recorder], int]) -> None:
    handler, port = http_peer
    handler.body = b'{"service": "web", "id": "w"}'
    c = Client(f"127.0.0.1:{port}", token="s3cret")
    assert c.register("web", "w", "10.0.0.1", 80, tags=["a"]) == {"service": "web", "id": "w"}
    seen = handler.seen[-1]
    assert (seen["method"], seen["path"]) == ("PUT", "/v1/services/web/instances/w")
    assert seen["headers"]["Authorization"] == "Bearer s3cret"
    assert seen["headers"]["Content-Type"] == "application/json"
    assert json.loads(seen["body"]) == {"address": "10.0.0.1", "port": 80, "tags": ["a"]}
    # A name that is not a label reaches the server as one path segment, for it to refuse.
    c.request("GET", client_wire.path("../x", "a/b"))
    assert handler.seen[-1]["path"] == "/v1/services/..%2Fx/instances/a%2Fb"
    Client(f"127.0.0.1:{port}").heartbeat("web", "w")
    assert "Authorization" not in handler.seen[-1]["headers"]
    assert json.loads(handler.seen[-1]["body"]) == {}


def test_a_proxy_in_the_environment_is_not_used_for_loopback(
    http_peer: tuple[type[Recorder], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = http_peer
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("http_proxy", dead_proxy)
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    handler.body = b'{"services": []}'
    assert Client(f"127.0.0.1:{port}").services() == []
    assert handler.seen[-1]["path"] == "/v1/services"


def test_an_error_that_is_not_dnsdisc_json(http_peer: tuple[type[Recorder], int]) -> None:
    handler, port = http_peer
    handler.status, handler.body, handler.content_type = 404, b"<h1>nope</h1>", "text/html"
    with pytest.raises(ClientError) as info:
        Client(f"127.0.0.1:{port}").services()
    assert info.value.status == 404 and info.value.field == ""
    assert str(info.value) == "Not Found: b'<h1>nope</h1>' (HTTP 404)"


def test_dnsdisc_error_json_is_taken_apart(http_peer: tuple[type[Recorder], int]) -> None:
    handler, port = http_peer
    handler.status = 400
    handler.body = b'{"error": "weight must be an integer from 0 to 65535", "field": "weight"}'
    with pytest.raises(ClientError) as info:
        Client(f"127.0.0.1:{port}").register("web", "w", "10.0.0.1", 80, weight="x")
    err = info.value
    assert (err.status, err.field) == (400, "weight")
    assert err.message == "weight must be an integer from 0 to 65535"


def test_a_2xx_that_is_not_json(http_peer: tuple[type[Recorder], int]) -> None:
    handler, port = http_peer
    handler.body, handler.content_type = b"hello", "text/plain"
    with pytest.raises(ClientError, match="not JSON") as info:
        Client(f"127.0.0.1:{port}").services()
    assert info.value.status == 200


def test_a_2xx_without_dnsdisc_fields(
    http_peer: tuple[type[Recorder], int], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, port = http_peer
    c = Client(f"127.0.0.1:{port}")
    handler.body = b"[]"
    with pytest.raises(ClientError, match="unexpected reply"):
        c.register("web", "w", "10.0.0.1", 80)
    handler.body = b"{}"
    with pytest.raises(ClientError, match="no 'services' list"):
        c.services()
    # The CLI's last line of defence: still one line and exit 1, never a traceback.
    handler.body = b'{"services": [{"nope": 1}]}'
    assert cli.main(["services", "--http", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dnsdisc: error: unexpected reply from http://127.0.0.1:{port}")
    assert len(err.splitlines()) == 1


@pytest.fixture
def tcp_peer() -> Iterator[tuple[int, list[socket.socket], threading.Event]]:
    """A TCP listener; the test decides what its accepted sockets do (close or hang)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted, done
    finally:
        done.set()
        thread.join(5)
        listener.close()
        for conn in accepted:
            conn.close()


def test_a_peer_that_hangs_times_out(
    tcp_peer: tuple[int, list[socket.socket], threading.Event],
) -> None:
    port, _, _ = tcp_peer
    started = time.monotonic()
    with pytest.raises(Unreachable) as info:
        Client(f"127.0.0.1:{port}", timeout=0.3).services()
    assert time.monotonic() - started < 3
    assert str(info.value) == f"cannot reach dnsdisc at http://127.0.0.1:{port}: timed out"
    assert info.value.status == 0


def test_a_peer_that_closes_without_replying(
    tcp_peer: tuple[int, list[socket.socket], threading.Event],
) -> None:
    port, accepted, _ = tcp_peer
    closer_stop = threading.Event()

    def closer() -> None:  # close each connection as soon as it is accepted
        while not closer_stop.is_set():
            while accepted:
                conn = accepted.pop()
                conn.recv(65536)
                conn.close()
            time.sleep(0.01)

    t = threading.Thread(target=closer, daemon=True)
    t.start()
    try:
        # FIN or RST, depending on whether the peer closed before reading all of the request.
        with pytest.raises(Unreachable, match=r"without replying|connection reset"):
            Client(f"127.0.0.1:{port}", timeout=3).services()
    finally:
        closer_stop.set()
        t.join(5)


# -- the lease keeper, against a scripted client -----------------------------------------------


class ScriptedClient(Client):
    """Records every request; ``fail`` maps a method to the error its next calls raise."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:1")
        self.calls: list[tuple[str, str, Any]] = []
        self.fail: dict[str, ClientError] = {}
        self.lock = threading.Lock()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        with self.lock:
            self.calls.append((method, path, body))
        if method in self.fail:
            raise self.fail[method]
        return {"service": "web", "id": "w", "health": {"status": "passing"}}

    def methods(self) -> list[str]:
        with self.lock:
            return [m for m, _, _ in self.calls]


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_lease_needs_a_ttl() -> None:
    with pytest.raises(ValueError, match="ttl"):
        ScriptedClient().registration("web", "w", "10.0.0.1", 80, ttl=0)
    with pytest.raises(ValueError, match="ttl"):
        Registration(ScriptedClient(), "web", "w", {"address": "10.0.0.1", "port": 80})


def test_lease_registers_beats_and_deregisters() -> None:
    c = ScriptedClient()
    with c.registration("web", "w", "10.0.0.1", 80, ttl=0.15, tags=["a"]) as reg:
        reg.load = 0.5
        wait_for(lambda: reg.heartbeats >= 3)
    methods = c.methods()
    assert methods[0] == "PUT" and methods[-1] == "DELETE"
    assert c.calls[0][2] == {"address": "10.0.0.1", "port": 80, "ttl": 0.15, "tags": ["a"]}
    assert {b["load"] for m, _, b in c.calls if m == "POST"} == {0.5}
    time.sleep(0.2)
    assert c.methods() == methods, "no heartbeat after exit"


def test_lease_failures_are_logged_retried_and_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dnsdisc.client")
    c = ScriptedClient()
    with c.registration("web", "w", "10.0.0.1", 80, ttl=0.15) as reg:
        c.fail["POST"] = Unreachable("cannot reach dnsdisc at x: connection refused")
        wait_for(lambda: reg.failures >= 3)
        assert reg.last_error is c.fail["POST"]
        del c.fail["POST"]
        wait_for(lambda: reg.failures == 0 and reg.heartbeats >= 1)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "connection refused" in warnings[0].getMessage()
    assert any("succeed again" in r.getMessage() for r in caplog.records)


def test_lease_registers_again_when_the_instance_is_gone() -> None:
    c = ScriptedClient()
    with c.registration("web", "w", "10.0.0.1", 80, ttl=0.15) as reg:
        c.fail["POST"] = ClientError("instance 'w' of 'web' not found", 404)
        wait_for(lambda: c.methods().count("PUT") >= 2)
        del c.fail["POST"]
        assert reg.failures == 0


def test_lease_exit_keeps_the_blocks_exception_and_logs_a_failed_deregistration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = ScriptedClient()
    with pytest.raises(KeyError), c.registration("web", "w", "10.0.0.1", 80, ttl=5):
        c.fail["DELETE"] = ClientError("store is down", 503)
        raise KeyError("from the block")
    assert c.methods() == ["PUT", "DELETE"]
    assert any("could not deregister web/w" in r.getMessage() for r in caplog.records)


def test_lease_registration_failure_is_raised() -> None:
    c = ScriptedClient()
    c.fail["PUT"] = ClientError("address 'x' is not an IPv4 or IPv6 address", 400, "address")
    with pytest.raises(ClientError, match="address"), c.registration("web", "w", "x", 80, ttl=5):
        pytest.fail("the block must not run")
    assert c.methods() == ["PUT"]


def test_async_lease_beats_and_deregisters() -> None:
    import asyncio

    c = ScriptedClient()

    async def main() -> int:
        ac = client.AsyncClient("127.0.0.1:1")
        ac.sync = c
        async with ac.registration("web", "w", "10.0.0.1", 80, ttl=0.15) as reg:
            c.fail["POST"] = Unreachable("down")
            while reg.failures < 2:
                await asyncio.sleep(0.01)
            del c.fail["POST"]
            while reg.heartbeats < 2:
                await asyncio.sleep(0.01)
            return reg.heartbeats

    assert asyncio.run(asyncio.wait_for(main(), 10)) >= 2
    methods = c.methods()
    assert methods[0] == "PUT" and methods[-1] == "DELETE" and "POST" in methods


def test_async_lease_deregisters_when_its_task_is_cancelled() -> None:
    import asyncio

    c = ScriptedClient()

    async def serve() -> None:
        ac = client.AsyncClient("127.0.0.1:1")
        ac.sync = c
        async with ac.registration("web", "w", "10.0.0.1", 80, ttl=0.15):
            await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(serve())
        while c.methods().count("POST") < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 10))
    assert c.methods()[-1] == "DELETE"


# -- resolve ---------------------------------------------------------------------------------


QNAME = "_web._tcp.svc.internal."


def srv_reply(qname: str, records: list[str], glue: dict[str, str]) -> dns.message.Message:
    reply = dns.message.make_response(dns.message.make_query(qname, "SRV"))
    if records:
        reply.answer.append(dns.rrset.from_text(qname, 5, "IN", "SRV", *records))
    for name, address in glue.items():
        rdtype = "AAAA" if ":" in address else "A"
        reply.additional.append(dns.rrset.from_text(name, 5, "IN", rdtype, address))
    return reply


class FakeDns:
    """Stands in for ``client._ask``: canned replies by (name, type), NODATA otherwise."""

    def __init__(self, replies: dict[tuple[str, str], dns.message.Message]) -> None:
        self.replies = replies
        self.asked: list[tuple[str, str, str, int]] = []

    def __call__(
        self, qname: str, rdtype: str, host: str, port: int, timeout: float
    ) -> dns.message.Message:
        self.asked.append((qname, rdtype, host, port))
        if (qname, rdtype) in self.replies:
            return self.replies[(qname, rdtype)]
        return dns.message.make_response(dns.message.make_query(qname, rdtype))


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    def addr(name: str, rdtype: str, value: str) -> dns.message.Message:
        reply = dns.message.make_response(dns.message.make_query(name, rdtype))
        reply.answer.append(dns.rrset.from_text(name, 5, "IN", rdtype, value))
        return reply

    fake = FakeDns(
        {
            (QNAME, "SRV"): srv_reply(
                QNAME,
                [
                    "1 50 8003 c.web.svc.internal.",
                    "0 300 8001 a.web.svc.internal.",
                    "0 100 8002 b.web.svc.internal.",
                    "2 10 8004 nowhere.web.svc.internal.",
                    "3 10 0 .",
                ],
                {"a.web.svc.internal.": "10.0.0.1", "b.web.svc.internal.": "2001:db8::2"},
            ),
            # c has no glue: found by AAAA after an empty A answer.
            ("c.web.svc.internal.", "AAAA"): addr("c.web.svc.internal.", "AAAA", "2001:db8::3"),
        }
    )
    monkeypatch.setattr(client_srv, "_ask", fake)
    return fake


def test_resolve_orders_by_priority_then_weight(fake_dns: FakeDns) -> None:
    rng = random.Random(2782)
    firsts: Counter[str] = Counter()
    for _ in range(4000):
        targets = resolve("web", dns="127.0.0.1:5300", rng=rng)
        # Priority 0 (a, b) before priority 1 (c); the target without an address and "." left out.
        assert set(targets[:2]) == {("10.0.0.1", 8001), ("2001:db8::2", 8002)}
        assert targets[2:] == [("2001:db8::3", 8003)]
        firsts[str(targets[0][1])] += 1
    assert_shares(firsts, {"8001": 300, "8002": 100})
    assert {(h, p) for _, _, h, p in fake_dns.asked} == {("127.0.0.1", 5300)}


def test_resolve_looks_up_only_what_the_glue_lacks(fake_dns: FakeDns) -> None:
    resolve("web", dns="127.0.0.1:5300", rng=random.Random(1))
    assert [(q, t) for q, t, _, _ in fake_dns.asked] == [
        (QNAME, "SRV"),
        ("c.web.svc.internal.", "A"),
        ("c.web.svc.internal.", "AAAA"),
        ("nowhere.web.svc.internal.", "A"),
        ("nowhere.web.svc.internal.", "AAAA"),
    ]


def test_resolve_with_the_same_seed_is_repeatable(fake_dns: FakeDns) -> None:
    first = [resolve("web", rng=random.Random(7)) for _ in range(5)]
    assert all(order == first[0] for order in first)
    assert pick("web", rng=random.Random(7)) == first[0][0]


def test_resolve_other_domain_and_proto(monkeypatch: pytest.MonkeyPatch) -> None:
    qname = "_dns._udp.example.org."
    fake = FakeDns({(qname, "SRV"): srv_reply(qname, ["0 1 53 ns.example.org."], {})})
    fake.replies[("ns.example.org.", "A")] = srv_reply("ns.example.org.", [], {})
    fake.replies[("ns.example.org.", "A")].answer.append(
        dns.rrset.from_text("ns.example.org.", 5, "IN", "A", "192.0.2.53")
    )
    monkeypatch.setattr(client_srv, "_ask", fake)
    assert resolve("dns", "10.0.0.53", domain="example.org.", proto="udp") == [("192.0.2.53", 53)]
    assert fake.asked[0] == (qname, "SRV", "10.0.0.53", 53)


def test_resolve_nxdomain_and_nodata_are_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    nx = dns.message.make_response(dns.message.make_query(QNAME, "SRV"))
    nx.set_rcode(dns.rcode.NXDOMAIN)
    monkeypatch.setattr(client_srv, "_ask", FakeDns({(QNAME, "SRV"): nx}))
    assert resolve("web") == []
    with pytest.raises(ResolveError, match="no instance of 'web' to pick"):
        pick("web")
    monkeypatch.setattr(client_srv, "_ask", FakeDns({}))
    assert resolve("web") == []


def test_resolve_error_rcodes_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = dns.message.make_response(dns.message.make_query(QNAME, "SRV"))
    refused.set_rcode(dns.rcode.REFUSED)
    monkeypatch.setattr(client_srv, "_ask", FakeDns({(QNAME, "SRV"): refused}))
    with pytest.raises(ResolveError, match="REFUSED"):
        resolve("web")


def test_resolve_timeout_is_a_resolve_error() -> None:
    # A UDP socket that never answers.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ResolveError, match=r"no reply from 127\.0\.0\.1"):
            resolve("web", dns=f"127.0.0.1:{port}", timeout=0.2)
        assert time.monotonic() - started < 3


# -- the API without I/O, and the async mirror -------------------------------------------------


def test_wire_encodes_json_and_the_token() -> None:
    assert client_wire.encode(None, None) == (None, {"Accept": "application/json"})
    data, headers = client_wire.encode({"enabled": True}, "s3cret")
    assert json.loads(data or b"") == {"enabled": True}
    assert headers == {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Authorization": "Bearer s3cret",
    }
    with pytest.raises(ValueError):
        client_wire.encode({"load": float("nan")}, None)


def test_wire_decodes_replies_and_refusals() -> None:
    assert client_wire.decode(b" \n", 204, "DELETE", "/v1/x", "http://h:1") is None
    assert client_wire.decode(b'{"a": 1}', 200, "GET", "/v1/x", "http://h:1") == {"a": 1}
    err = client_wire.refused(409, "Conflict", b'{"error": "static", "field": "id"}', "http://h:1")
    assert (err.status, err.field, err.message, err.url) == (409, "id", "static", "http://h:1")
    err = client_wire.refused(502, "", b"", "http://h:1")
    assert str(err) == "request failed (HTTP 502)"


def test_async_client_mirrors_every_call_of_the_sync_client() -> None:
    import inspect

    calls = {n for n, f in vars(Client).items() if inspect.isfunction(f) and n[0] != "_"}
    calls.discard("registration")  # the one sync method of both: it returns a context manager
    for name in calls:
        mirror = getattr(client.AsyncClient, name)
        assert inspect.iscoroutinefunction(mirror), name
        assert inspect.signature(mirror) == inspect.signature(getattr(Client, name)), name
