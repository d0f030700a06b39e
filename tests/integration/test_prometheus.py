"""A real Prometheus follows dnsdisc through ``dns_sd_configs`` (#20): with SRV discovery of
``_web._tcp.svc.internal``, its /api/v1/targets lists exactly the registered instances
(``<id>.web.svc.internal:<port>``, the SRV targets), gains one that registers and loses one
that deregisters; and it scrapes them, resolving those names through dnsdisc too.

How Prometheus is pointed at dnsdisc: its DNS discovery has no server setting; it reads
/etc/resolv.conf itself (miekg/dns), where no port can be given, so the server must be on port
53. dnsdisc listens on port 53 of a random free 127.0.0.0/8 address, and Prometheus runs in a
private mount namespace where a resolv.conf naming that address is bind-mounted over
/etc/resolv.conf (``frontends.prometheus(nameserver=...)``); the machine's resolv.conf is never
touched. Root is needed for both (CI runs as root; elsewhere the test skips).

Prometheus (2.42) passes discovery results on to its scrape manager at most every 5 s, and the
scrape manager reloads its targets at most every 5 s, so a change can take up to about 10 s
(plus the 1 s refresh) to show in /api/v1/targets (measured: about 5 s for each change); the
waits are bounded at 20 s."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.frontends import DOMAIN, Prometheus, loopback_for_port_53, prometheus
from tests.support.helpers import IN_CI, DnsdiscProcess, running

WAIT = 20.0


class Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"# TYPE fake_up gauge\nfake_up 1\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def exporters(n: int) -> Iterator[list[int]]:
    """``n`` tiny /metrics servers on 127.0.0.1: the ports the instances register with."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Metrics) for _ in range(n)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield [s.server_address[1] for s in servers]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def addresses(prom: Prometheus) -> set[str]:
    return {t["labels"]["instance"] for t in prom.targets()}


def wait_for(prom: Prometheus, want: set[str], timeout: float = WAIT) -> float:
    """Seconds until Prometheus's active targets are exactly ``want``; fails after ``timeout``."""
    start = time.monotonic()
    while True:
        got = addresses(prom)
        if got == want:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, f"targets {sorted(got)}, want {sorted(want)}"
        time.sleep(0.2)


def target(iid: str, port: int) -> str:
    return f"{iid}.web.{DOMAIN}:{port}"


def test_prometheus_dns_sd_follows_registrations(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        message = "dnsdisc on port 53 and a mount namespace need root"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    host = loopback_for_port_53()
    with (
        exporters(3) as ports,
        running(tmp_path, dns_host=host, dns_port=53, extra_args=["--workers", "1"]) as server,
    ):
        register(server, "w1", ports[0])
        register(server, "w2", ports[1])
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    "job_name": "web",
                    "dns_sd_configs": [
                        {"names": [f"_web._tcp.{DOMAIN}"], "type": "SRV", "refresh_interval": "1s"}
                    ],
                }
            ],
        }
        with prometheus(tmp_path, config, nameserver=host) as prom:
            first = wait_for(prom, {target("w1", ports[0]), target("w2", ports[1])})
            # Scraped: Prometheus resolved the SRV targets' names through dnsdisc as well.
            deadline = time.monotonic() + WAIT
            while {t["health"] for t in prom.targets()} != {"up"}:
                assert time.monotonic() < deadline, prom.targets()
                time.sleep(0.2)

            register(server, "w3", ports[2])
            added = wait_for(
                prom, {target("w1", ports[0]), target("w2", ports[1]), target("w3", ports[2])}
            )

            assert server.http("DELETE", "/v1/services/web/instances/w1").status == 204
            removed = wait_for(prom, {target("w2", ports[1]), target("w3", ports[2])})
            print(f"targets followed: first {first:.1f}s, added {added:.1f}s, gone {removed:.1f}s")


def register(server: DnsdiscProcess, iid: str, port: int) -> None:
    server.register("web", iid, address="127.0.0.1", port=port, protocol="tcp")
