"""#16 item 4: the HTTP port's deadlines and connection caps, and DNS workers started again after
the process ran out of descriptors. Half-sent requests used to stay open 200 s+; 1,100 of them
exhausted 1,024 descriptors, and a worker killed meanwhile was never started again (DNS dark,
/readyz 200)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import DnsdiscProcess, metric, running, wait_until

HALF_SENT = b"GET /v1/services HTTP/1.1\r\nHost: localhost\r\nX-Slow: "  # never finished


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture(autouse=True)
def enough_descriptors() -> None:
    """This test's own client sockets: over a thousand."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))


@contextlib.contextmanager
def half_sent(server: DnsdiscProcess, source: str, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections from ``source`` (an address in 127/8), each with half a request."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.settimeout(5)
            s.bind((source, 0))
            try:
                s.connect(("127.0.0.1", server.http_port))
                s.sendall(HALF_SENT)
            except OSError:  # closed at once by the server: over a cap
                pass
        yield socks
    finally:
        for s in socks:
            s.close()


def outcome(s: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before closing; None if it is still open after ``timeout``."""
    s.settimeout(timeout)
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
    except TimeoutError:
        return None
    except OSError:  # reset
        pass
    return got


LIMITS = """\
http:
  header_timeout: 2
  body_timeout: 2
  max_connections: 120
  max_connections_per_client: 50
"""


def test_half_sent_requests_are_capped_and_closed_at_the_header_deadline(tmp_path: Path) -> None:
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(LIMITS.replace("header_timeout: 2", "header_timeout: 5"))
    args = ["--config", str(config), "--workers", "1", "--storage", "memory"]
    with running(tmp_path, extra_args=args) as server:
        assert server.proc is not None
        pid = server.proc.pid
        base = descriptors(pid)
        started = time.monotonic()
        with half_sent(server, "127.0.0.2", 1100) as attack:
            # One client holds at most its cap; the rest were closed at once, and the API
            # answers everybody else.
            wait_until(
                lambda: (
                    metric(server, 'dnsdisc_http_connections_refused_total{limit="per_client"}')
                    >= 900
                ),  # 1,050, less 50 for each header deadline the attack outlasted
                10,
            )
            held = descriptors(pid) - base
            attack_took = time.monotonic() - started
            assert held <= 60, (held, attack_took)
            assert server.http("GET", "/v1/services").status == 200
            # 200 more from four clients, each within its own cap: at least 80 are over the
            # global cap of 120, whether or not the attack's 50 have met their deadline yet.
            with (
                half_sent(server, "127.0.0.3", 50),
                half_sent(server, "127.0.0.4", 50),
                half_sent(server, "127.0.0.5", 50),
                half_sent(server, "127.0.0.6", 50),
            ):
                time.sleep(0.5)
            wait_until(
                lambda: (
                    metric(server, 'dnsdisc_http_connections_refused_total{limit="global"}') >= 30
                ),
                10,
            )
            # The held ones are closed at the header deadline, with a 408.
            answers = [outcome(s, 15) for s in attack]
            closed_after = time.monotonic() - started
        assert None not in answers
        late = [a for a in answers if a and a.startswith(b"HTTP/1.1 408")]
        assert len(late) >= 50, len(late)
        assert closed_after < 25, closed_after
        assert metric(server, 'dnsdisc_http_request_timeouts_total{phase="header"}') >= 50
        wait_until(lambda: descriptors(pid) <= base + 5, 10)
        assert server.http("GET", "/readyz").status == 200
        print(
            f"held {held} descriptors under 1,100 half-sent requests (sent in {attack_took:.1f} "
            f"s); all closed {closed_after:.1f} s after the first"
        )


def test_a_body_that_does_not_arrive_in_time_is_a_408(tmp_path: Path) -> None:
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(LIMITS)
    args = ["--config", str(config), "--workers", "0", "--storage", "memory"]
    with (
        running(tmp_path, extra_args=args) as server,
        socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s,
    ):
        s.sendall(
            b"PUT /v1/services/web/instances/web-1 HTTP/1.1\r\nHost: localhost\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"address"'
        )
        started = time.monotonic()
        answer = outcome(s, 10)
        waited = time.monotonic() - started
        assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
        assert b'"field": "body"' in answer
        assert 1.5 < waited < 8, waited
        assert metric(server, 'dnsdisc_http_request_timeouts_total{phase="body"}') == 1
        assert server.http("GET", "/v1/services/web").status == 404  # nothing was stored


def test_the_header_deadline_holds_on_kept_alive_and_silent_connections(tmp_path: Path) -> None:
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(LIMITS)
    args = ["--config", str(config), "--workers", "0", "--storage", "memory"]
    with running(tmp_path, extra_args=args) as server:
        address = ("127.0.0.1", server.http_port)
        with (
            socket.create_connection(address, timeout=10) as kept,
            socket.create_connection(address, timeout=10) as silent,
        ):
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert kept.recv(4096).startswith(b"HTTP/1.1 200")
            time.sleep(3)  # idle past header_timeout: keepalive_timeout's business, not closed
            kept.sendall(HALF_SENT)
            started = time.monotonic()
            answer = outcome(kept, 10)
            assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
            assert 1.5 < time.monotonic() - started < 8
            assert outcome(silent, 1) == b""  # nothing sent: closed without a word
        assert metric(server, 'dnsdisc_http_request_timeouts_total{phase="header"}') == 2


def test_a_worker_killed_while_descriptors_are_exhausted_is_started_again(
    tmp_path: Path,
) -> None:
    args = ["--workers", "2", "--storage", "memory"]
    with running(tmp_path, extra_args=args) as server:
        assert server.proc is not None
        pid = server.proc.pid
        wait_until(lambda: len(server.children()) == 2, 10)
        server.register("web", "web-1", address="10.0.0.1", port=80)
        victim = server.children()[0]
        # Leave the server a few descriptors, and take them with half-sent requests.
        limit = descriptors(pid) + 10
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
        statuses: list[int] = []
        with half_sent(server, "127.0.0.2", 40):
            wait_until(lambda: descriptors(pid) >= limit - 1, 10)
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: "could not start DNS worker" in server.log(), 15)
        # The descriptors are free again: the worker is started again, and until it answers
        # /readyz says so.
        started = time.monotonic()
        while time.monotonic() - started < 30:
            with contextlib.suppress(OSError):
                statuses.append(server.http("GET", "/readyz").status)
            children = server.children()
            if statuses and statuses[-1] == 200 and len(children) == 2:
                break
            time.sleep(0.05)
        assert victim not in server.children() and len(server.children()) == 2
        assert statuses[-1] == 200 and 503 in statuses, statuses
        assert metric(server, "dnsdisc_dns_worker_spawn_failures_total") >= 1
        assert metric(server, "dnsdisc_dns_worker_restarts_total") == 1
        assert server.addresses("web.svc.internal") == ["10.0.0.1"]
