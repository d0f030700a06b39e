"""Reload cost at scale: how long POST /v1/reload takes with many registered services, and the
DNS latency while reloads run back to back.

    .venv/bin/python bench/reload.py [--services 5000] [--workers 2] [--reloads 5] [--seconds 10]

Starts dnsdisc (storage memory, ``--workers`` DNS processes, one zone file) on loopback ports,
registers ``--services`` services of one instance each, then times ``--reloads`` reloads that
change nothing, ``--reloads`` that change one zone record, and measures the p50/p99 latency of
UDP queries for a registered name (one at a time, a few hundred per second) while idle,
while clients keep POSTing /v1/reload for ``--seconds`` (4 at once: the server coalesces them),
and while they do so changing a zone record before each.
The server is stopped by PID; data goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.helpers import DnsdiscProcess  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def register(port: int, services: int, clients: int = 32) -> None:
    todo = iter(range(services))

    async def client(session: aiohttp.ClientSession) -> None:
        for n in todo:
            body = {"address": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256 or 1}", "port": 80}
            url = f"http://127.0.0.1:{port}/v1/services/s{n}/instances/i0"
            async with session.put(url, json=body) as resp:
                await resp.read()
                if resp.status not in (200, 201):
                    raise RuntimeError(f"PUT {url}: {resp.status}")

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))


def reload_once(server: DnsdiscProcess) -> float:
    t0 = time.perf_counter()
    r = server.http("POST", "/v1/reload")
    assert r.status == 200, r
    return time.perf_counter() - t0


class Prober(threading.Thread):
    """UDP queries one at a time (2 s timeout counts as 2 s), paced at ``rate``/s."""

    def __init__(self, port: int, rate: float = 200) -> None:
        super().__init__(daemon=True)
        self.port, self.pause = port, 1 / rate
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(2.0)
        wire = dns.message.make_query("s1.svc.internal", "A").to_wire()
        while not self.stop.is_set():
            t0 = time.perf_counter()
            sock.sendto(wire, ("127.0.0.1", self.port))
            with contextlib.suppress(TimeoutError):
                sock.recv(4096)
            took = time.perf_counter() - t0
            self.latencies.append(took)
            time.sleep(max(0.0, self.pause - took))
        sock.close()


def probe(
    server: DnsdiscProcess, seconds: float, reloading: bool, zone: Path | None = None
) -> list[float]:
    prober = Prober(server.dns_port)
    prober.start()
    deadline = time.monotonic() + seconds
    done = 0

    def reloader() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            if zone is not None:  # each reload changes a zone record
                zone.write_text(
                    f"records:\n  - {{name: app, type: A, value: 192.0.3.{done % 250 + 1}}}\n"
                )
            reload_once(server)
            done += 1

    threads = [threading.Thread(target=reloader) for _ in range(4 if reloading else 0)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, deadline - time.monotonic()))
    for t in threads:
        t.join()
    prober.stop.set()
    prober.join()
    if reloading:
        print(f"  {done} reloads answered in {seconds:.0f} s")
    return prober.latencies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="dnsdisc-bench-reload-"))
    zones = directory / "zones"
    zones.mkdir()
    zone = zones / "z.yaml"
    zone.write_text("records:\n  - {name: app, type: A, value: 192.0.2.1}\n")
    server = DnsdiscProcess(
        directory / "node",
        extra_args=[
            "--workers", str(args.workers), "--storage", "memory", "--zones", str(zones)
        ],
    ).start(timeout=60)  # fmt: skip
    try:
        t0 = time.perf_counter()
        asyncio.run(register(server.http_port, args.services))
        print(f"{args.services} services registered in {time.perf_counter() - t0:.1f} s")
        same = [reload_once(server) for _ in range(args.reloads)]
        print(f"reload, nothing changed: median {statistics.median(same) * 1000:.0f} ms "
              f"(min {min(same) * 1000:.0f}, max {max(same) * 1000:.0f})")  # fmt: skip
        changed = []
        for n in range(args.reloads):
            zone.write_text(f"records:\n  - {{name: app, type: A, value: 192.0.2.{n + 2}}}\n")
            changed.append(reload_once(server))
        print(f"reload, one zone record changed: median {statistics.median(changed) * 1000:.0f} "
              f"ms (min {min(changed) * 1000:.0f}, max {max(changed) * 1000:.0f})")  # fmt: skip
        for reloading, what in ((False, "idle"), (True, "during back-to-back reloads")):
            lat = probe(server, args.seconds, reloading)
            print(
                f"DNS {what}: "
                f"{len(lat)} queries, p50 {percentile(lat, 50) * 1000:.1f} ms, "
                f"p99 {percentile(lat, 99) * 1000:.1f} ms, max {max(lat) * 1000:.0f} ms"
            )
        lat = probe(server, args.seconds, True, zone)
        print(
            f"DNS during back-to-back reloads that change a zone record: {len(lat)} queries, "
            f"p50 {percentile(lat, 50) * 1000:.1f} ms, p99 {percentile(lat, 99) * 1000:.1f} ms, "
            f"max {max(lat) * 1000:.0f} ms"
        )
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
