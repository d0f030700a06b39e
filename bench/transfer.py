"""Zone transfers at scale (#23): an AXFR of a zone of 100,000 instances (time, records, and the
DNS worker's memory while it streams), and how soon a NOTIFY follows a registration under 500
registrations/s.

    .venv/bin/python bench/transfer.py [--instances 100000] [--services 1000] [--rounds 3]
                                       [--rate 500] [--seconds 10] [--signed]

Starts dnsdisc (SQLite, one DNS worker, ``transfer.allow: [127.0.0.0/8]`` and ``transfer.notify``
pointing at a UDP listener in this process), registers ``--instances`` instances over
``--services`` services through ``POST /v1/batch``, then:

* AXFR, ``--rounds`` times: a raw TCP client reads every message and counts the records (no
  parsing beyond the header: the time is the server's); the worker's resident memory is
  sampled every 20 ms from ``/proc/PID/status`` during the transfer. Printed: seconds, records,
  MB sent, the worker's RSS before and its peak during, against the zone's size on the wire.
* ``--signed`` (#24): ``dnssec.enabled``, so every AXFR is the zone signed (RRSIGs and an NSEC
  chain, zonesign.py). The first round signs every RRset (cold), the next ones take the
  signatures from the signer's cache (warm). Meanwhile a UDP query for one instance's A goes to
  the same worker every 20 ms: the slowest of them says how long the worker kept its queries
  waiting. ``--seconds 0`` leaves out the NOTIFY part.
* NOTIFY under load: ``--rate`` single PUTs a second for ``--seconds`` s (new instances of one
  service, four clients); for each, the time from its 2xx to the first NOTIFY received after
  it, p50/p90/p99/max. NOTIFY rounds are coalesced to one a second by design (RFC 1996 lets a
  primary wait), so the figure is bounded by that second plus the round's own latency.

The server is ended by its PID; data goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import dns.exception
import dns.message
import dns.opcode
import dns.query

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.helpers import DnsdiscProcess, free_port  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def register(url: str, instances: int, services: int) -> float:
    ops = [
        {
            "op": "register",
            "service": f"s{n % services}",
            "id": f"i{n}",
            "body": {"address": f"10.{n // 65536}.{(n // 256) % 256}.{n % 256}", "port": 80},
        }
        for n in range(instances)
    ]
    chunks = [ops[i : i + 128] for i in range(0, len(ops), 128)]
    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def worker(mine: list[list[dict[str, object]]]) -> None:
            for chunk in mine:
                async with session.post(f"{url}/v1/batch", json={"ops": chunk}) as resp:
                    assert resp.status == 200, await resp.text()

        await asyncio.gather(*(worker(chunks[k::4]) for k in range(4)))
    return time.perf_counter() - started


def end_of_name(data: bytes, pos: int) -> int:
    """Where the uncompressed name at ``pos`` ends (the AXFR writes owners whole)."""
    while data[pos]:
        pos += data[pos] + 1
    return pos + 1


def read_axfr(port: int, query: bytes, timeout: float) -> tuple[int, int]:
    """Send the AXFR ``query`` over TCP and read the transfer to its end, keeping nothing:
    (records, bytes). ConnectionError when the connection ends mid-transfer."""
    records = size = 0
    soa = b""  # the transfer's first record (its SOA, names uncompressed), which also ends it
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(struct.pack("!H", len(query)) + query)
            reader = sock.makefile("rb", buffering=1 << 20)
            while True:
                (length,) = struct.unpack("!H", reader.read(2))
                data = reader.read(length)
                size += length + 2
                if data[3] & 0x0F:
                    raise SystemExit(f"AXFR failed: rcode {data[3] & 0x0F}")
                count = struct.unpack_from("!H", data, 6)[0]
                records += count
                if not soa:
                    pos = end_of_name(data, 12) + 4  # the question
                    end = end_of_name(data, pos) + 10
                    soa = data[pos : end + struct.unpack_from("!H", data, end - 2)[0]]
                    if count == 1:
                        continue
                # Not a count of SOA-typed bytes: signatures and NSEC bitmaps may hold those.
                if data.endswith(soa):
                    return records, size
    except struct.error:  # the connection ended mid-transfer
        raise ConnectionError(
            f"closed after {records:,} records, {size / 1e6:.1f} MB, "
            f"{time.perf_counter() - started:.1f} s"
        ) from None


def axfr(port: int, worker: int, probe: str = "") -> dict[str, float]:
    """One AXFR read to its end: seconds, records, bytes, and the worker's RSS peak meanwhile;
    with ``probe`` (a name), the slowest of the A queries for it sent every 20 ms meanwhile."""
    query = dns.message.make_query("svc.internal.", "AXFR").to_wire()
    peak = before = rss_mb(worker)
    done = threading.Event()
    slowest = 0.0
    probes = 0

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(worker))
            time.sleep(0.02)

    def ask() -> None:
        nonlocal slowest, probes
        q = dns.message.make_query(probe, "A")
        while not done.is_set():
            sent = time.perf_counter()
            with contextlib.suppress(dns.exception.Timeout):  # counted as the 10 s it waited
                dns.query.udp(q, "127.0.0.1", port=port, timeout=10)
            slowest = max(slowest, time.perf_counter() - sent)
            probes += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=sample, daemon=True)]
    if probe:
        threads.append(threading.Thread(target=ask, daemon=True))
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    records, size = read_axfr(port, query, 60)
    took = time.perf_counter() - started
    done.set()
    for thread in threads:
        thread.join()
    return {"seconds": took, "records": records, "mb": size / 1e6, "rss": before, "peak": peak,
            "slowest_ms": slowest * 1000, "probes": probes}  # fmt: skip


class NotifyListener:
    """A secondary's NOTIFY port: records when each NOTIFY for svc.internal. arrives, and
    answers it (so that the server does not send it again)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.times: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                continue
            msg = dns.message.from_wire(data)
            zone = msg.question[0].name.to_text()
            if msg.opcode() == dns.opcode.NOTIFY and zone == "svc.internal.":
                self.times.append(time.monotonic())
            self.sock.sendto(dns.message.make_response(msg).to_wire(), peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


async def writes(url: str, rate: float, seconds: float) -> list[float]:
    """PUTs at ``rate`` a second for ``seconds``; the monotonic time each got its 2xx."""
    done: list[float] = []
    total = int(rate * seconds)
    start = time.monotonic()
    async with aiohttp.ClientSession() as session:

        async def client(k: int) -> None:
            for n in range(k, total, 4):
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                path = f"{url}/v1/services/load/instances/n{n}"
                body = {"address": f"10.200.{n // 250}.{n % 250 + 1}", "port": 80}
                async with session.put(path, json=body) as resp:
                    assert resp.status in (200, 201), await resp.text()
                done.append(time.monotonic())

        await asyncio.gather(*(client(k) for k in range(4)))
    return done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--instances", type=int, default=100_000)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--signed", action="store_true", help="dnssec.enabled: signed transfers")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    listener = NotifyListener()
    conf = tmp / "bench.yaml"
    conf.write_text(
        "transfer:\n  allow: ['127.0.0.0/8']\n"
        f"  notify: ['127.0.0.1:{listener.port}']\n"
        "limits:\n  instances: 1000000\n  instances_per_service: 1000000\n"
        + ("dnssec:\n  enabled: true\n" if args.signed else "")
    )
    server = DnsdiscProcess(tmp / "node", extra_args=["--workers", "1", "--config", str(conf)])
    try:
        server.start(timeout=60)
        [worker] = server.children()
        took = asyncio.run(register(server.http_url, args.instances, args.services))
        print(f"{args.instances:,} instances over {args.services} services registered in"
              f" {took:.1f} s; worker RSS {rss_mb(worker):.0f} MB", flush=True)  # fmt: skip
        # The worker applies what it was sent as it gets CPU: wait until it holds the last
        # instance, and its memory stops growing, so the AXFR measures the transfer alone.
        last = f"i{args.instances - 1}.s{(args.instances - 1) % args.services}.svc.internal"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if server.addresses(last, timeout=10):
                    break
            except dns.exception.Timeout:
                pass  # busy applying
            time.sleep(0.2)
        held = 0.0
        while abs(rss_mb(worker) - held) > 1 and time.monotonic() < deadline:
            held = rss_mb(worker)
            time.sleep(1)
        print(f"worker caught up: RSS {rss_mb(worker):.0f} MB", flush=True)
        rows = []
        probe = "i0.s0.svc.internal." if args.signed else ""
        for r in range(args.rounds):
            d = axfr(server.dns_port, worker, probe)
            rows.append(d)
            state = ("cold, " if r == 0 else "warm, ") if args.signed else ""
            print(
                f"AXFR {r + 1} ({state}{'signed' if args.signed else 'unsigned'}):"
                f" {d['seconds']:.2f} s, {d['records']:,.0f} records"
                f" ({d['records'] / d['seconds']:,.0f}/s), {d['mb']:.1f} MB on the wire;"
                f" worker RSS {d['rss']:.0f} MB before, peak {d['peak']:.0f} MB"
                f" (+{d['peak'] - d['rss']:.1f} MB)"
                + (f"; {d['probes']:.0f} queries meanwhile, slowest {d['slowest_ms']:.0f} ms"
                   if probe else ""),
                flush=True,
            )  # fmt: skip
        med = statistics.median(d["seconds"] for d in rows)
        growth = max(d["peak"] - d["rss"] for d in rows)
        print(f"\nAXFR median {med:.2f} s; worker RSS growth at most {growth:.1f} MB against"
              f" {rows[0]['mb']:.1f} MB of zone on the wire")  # fmt: skip
        if not args.seconds:
            return
        listener.times.clear()
        acked = asyncio.run(writes(server.http_url, args.rate, args.seconds))
        time.sleep(2.5)  # the last round
        arrivals = sorted(listener.times)
        lags = []
        for t in acked:
            after = next((a for a in arrivals if a >= t), None)
            if after is not None:
                lags.append((after - t) * 1000)
        lags.sort()
        q = statistics.quantiles(lags, n=100) if len(lags) > 1 else [float("nan")] * 99
        print(
            f"NOTIFY under {len(acked) / args.seconds:,.0f} registrations/s: {len(arrivals)}"
            f" NOTIFYs for {len(acked)} writes; write -> next NOTIFY p50 {q[49]:.0f} ms,"
            f" p90 {q[89]:.0f} ms, p99 {q[98]:.0f} ms, max {lags[-1]:.0f} ms"
            f" ({len(acked) - len(lags)} writes with none after)",
            flush=True,
        )
    finally:
        server.stop()
        listener.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
