"""Active checks as a weapon (#16 items 5, 8, 18): one registrant's slow checks must not starve
everyone's, checks registered over the API must not reach the server's own host or metadata
services nor hammer a target, and what a target answers must not reach API readers or the log."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.helpers import LOOPBACK_CHECKS, DnsdiscProcess, running, wait_until


@contextmanager
def tarpit() -> Iterator[int]:
    """A TCP server that accepts and never answers: every check against it runs to its timeout."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    held: list[tuple[float, socket.socket]] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            now = time.monotonic()
            held.append((now, conn))
            while held and held[0][0] < now - 5:  # checks time out long before
                held.pop(0)[1].close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for _, conn in held:
            conn.close()
        sock.close()


@contextmanager
def responder(status_line: bytes) -> Iterator[tuple[int, list[float]]]:
    """An HTTP server answering every request with ``status_line``; yields its port and the times
    of the requests it received."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    sock.settimeout(0.1)
    hits: list[float] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(4096)
                    hits.append(time.monotonic())
                    conn.sendall(
                        status_line + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], hits
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def _config(tmp_path: Path, extra: str = "") -> list[str]:
    conf = tmp_path / "checks.yaml"
    conf.write_text(LOOPBACK_CHECKS + extra)
    return ["--config", str(conf)]


def _health(node: DnsdiscProcess, service: str, iid: str) -> dict[str, object]:
    body = node.http("GET", f"/v1/services/{service}/instances/{iid}").body
    health: dict[str, object] = body["health"]
    return health


def test_a_tarpit_registrant_does_not_starve_another_services_checks(tmp_path: Path) -> None:
    with tarpit() as pit, responder(b"HTTP/1.1 200 OK") as (good, _):
        # 300 checks against a tarpit, each asking to hold its connection for 5 s every 0.1 s:
        # what the API took before (it now refuses timeout > interval and intervals under 1 s;
        # a zone file may still ask, and its checks are cut to their interval).
        zones = tmp_path / "zones"
        zones.mkdir()
        slow = (
            f"{{address: 127.0.0.1, port: {pit}, check: {{type: http, interval: 0.1, timeout: 5}}}}"
        )
        (zones / "spam.yaml").write_text(
            "services:\n  spam:\n    instances:\n"
            + "".join(f"      s-{i}: {slow}\n" for i in range(300))
        )
        with running(tmp_path, extra_args=[*_config(tmp_path), "--zones", str(zones)]) as node:
            check = {"type": "http", "path": "/", "interval": 0.5, "timeout": 0.5, "fall": 1}
            node.register("payments", "p-1", address="127.0.0.1", port=good, check=check)
            wait_until(lambda: _health(node, "payments", "p-1")["status"] == "passing", 10)
            # Naive (one shared pool of 256, waiting counted in the timeout): critical in 3 s.
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                assert _health(node, "payments", "p-1")["status"] == "passing"
                assert node.addresses("payments.svc.internal") == ["127.0.0.1"]
                time.sleep(0.25)
            metrics = node.http("GET", "/metrics").raw.decode()
    skipped = re.search(r"^dnsdisc_health_checks_skipped_total (\S+)$", metrics, re.M)
    assert skipped is not None and float(skipped.group(1)) > 0


def test_api_checks_may_not_target_the_servers_host_or_link_local(tmp_path: Path) -> None:
    with running(tmp_path, loopback_checks=False) as node:
        for address in ("169.254.169.254", "0.0.0.0", "::ffff:127.0.0.1", "127.0.0.1", "::1"):
            reply = node.http(
                "PUT",
                "/v1/services/web/instances/w-1",
                {"address": address, "port": 80, "check": {"type": "http", "interval": 10}},
            )
            # 0.0.0.0 may be refused as an address before its check is looked at.
            assert reply.status == 400, (address, reply)
            assert reply.body["field"] in ("check", "address"), (address, reply.body)
            if address != "0.0.0.0":
                assert "check_networks" in reply.body["error"], reply.body
        # The same address without a check is only a DNS record: allowed.
        assert node.register("web", "w-2", address="127.0.0.1", port=80).status == 201
        # Anyone may not ask for more than one check a second per instance.
        reply = node.http(
            "PUT",
            "/v1/services/web/instances/w-3",
            {"address": "10.0.0.3", "port": 80, "check": {"type": "tcp", "interval": 0.06}},
        )
        assert (reply.status, reply.body["field"]) == (400, "check"), reply
        assert "interval" in reply.body["error"]
        reply = node.http(
            "PUT",
            "/v1/services/web/instances/w-3",
            {"address": "10.0.0.3", "port": 80, "check": {"type": "tcp", "timeout": 20}},
        )
        assert (reply.status, reply.body["field"]) == (400, "check"), reply


def test_zone_file_checks_are_trusted_with_any_address(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "db.yaml").write_text(
        "services:\n"
        "  db:\n"
        "    instances:\n"
        "      a: {address: 169.254.169.254, port: 80, check: {type: tcp, interval: 0.5}}\n"
        "      b: {address: 127.0.0.1, port: 9, check: {type: tcp, interval: 0.2}}\n"
        "      c: {address: '::ffff:127.0.0.1', port: 9, check: {type: tcp, interval: 0.5}}\n"
    )
    with running(tmp_path, loopback_checks=False, extra_args=["--zones", str(zones)]) as node:
        body = node.http("GET", "/v1/services/db").body
        assert sorted(i["id"] for i in body["instances"]) == ["a", "b", "c"]


def test_the_check_budget_holds_whatever_is_registered(tmp_path: Path) -> None:
    rate, seconds = 10, 4.0
    extra = f"  checks_per_second: {rate}\n"
    with (
        responder(b"HTTP/1.1 200 OK") as (port, hits),
        running(tmp_path, extra_args=_config(tmp_path, extra)) as node,
    ):
        check = {"type": "http", "path": "/", "interval": 0.06, "timeout": 0.06}
        for i in range(50):
            node.register("flood", f"f-{i}", address="127.0.0.1", port=port, check=check)
        time.sleep(1.0)  # past the initial burst
        start = time.monotonic()
        time.sleep(seconds)
        received = sum(1 for t in hits if start <= t < start + seconds)
    # Naive: 50 checks every 0.06 s, ~830 a second. The budget: 10 a second, give or take.
    assert received <= rate * seconds * 1.5, received
    assert received >= rate * seconds * 0.3, received  # and checks still run


def test_the_remote_reason_phrase_never_reaches_the_api_or_the_log(tmp_path: Path) -> None:
    lines = {
        "html": b"HTTP/1.1 503 <script>alert(1)</script> EVIL",
        "esc": b"HTTP/1.1 503 bad\x1b[2J\x1b[31mEVIL",
        "cr": b"HTTP/1.1 503 bad\rInjected: EVIL",
    }
    with running(tmp_path, extra_args=_config(tmp_path)) as node:
        with (
            responder(lines["html"]) as (html, _),
            responder(lines["esc"]) as (esc, _),
            responder(lines["cr"]) as (cr, _),
        ):
            check = {"type": "http", "path": "/", "interval": 0.2, "timeout": 0.2}
            for iid, port in (("html", html), ("esc", esc), ("cr", cr)):
                node.register("web", iid, address="127.0.0.1", port=port, check=check)
            for iid in lines:
                wait_until(lambda iid=iid: bool(_health(node, "web", iid)["output"]), 10)
            for iid in lines:
                output = str(_health(node, "web", iid)["output"])
                assert "EVIL" not in output and "<" not in output and "\x1b" not in output, output
                assert output.isprintable(), output
            raw = node.http("GET", "/v1/services/web").raw
            assert b"EVIL" not in raw and b"\\u001b" not in raw
        log = node.log()
    # Every line of the log is one event: nothing a target sent ended a line.
    for line in log.splitlines():
        if line.strip():
            assert re.match(r"\d{4}-\d\d-\d\d ", line), line
    assert "\x1b" not in log
