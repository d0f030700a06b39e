"""Answers by the client (#18): UDP queries/s with EDNS Client Subnet on a ``locality: spill``
service against the same queries without ECS on a ``locality: off`` one, with dnsperf,
alternating in one run; and the memory that 100,000 distinct client subnets cost.

    .venv/bin/python bench/ecs.py [--workers 1] [--seconds 8] [--rounds 3] [--before TREE]
                                  [--mixes "flat, no ECS;near, ECS"]

One dnsdisc on loopback, ``locality.networks`` mapping 4 zones (10.1-4.0.0/16), two services of
the same 8 instances (2 per zone, weights 10/20/30/40 by zone, ``max_answers: 2``): ``near``
with ``locality: spill`` and ``flat`` with ``locality: off``. The query files are binary
(dnsperf ``-B``): half A, half SRV, the ECS mixes from 1,000 distinct /24s spread over the 4
zones. Mixes:

- ``flat, no ECS``: the baseline (the answer path before #18);
- ``flat, ECS``: ECS read and echoed with scope 0 (the answer does not depend on the client);
- ``near, ECS``: located, spilled by demand and capacity, echoed with the zone's scope;
- ``near, no ECS``: the packet's source (127.0.0.1, in no zone) looked up: the normal answer.

``--before TREE``: another checkout with its own ``.venv`` (``git worktree add /tmp/before
10413ab``, then ``python3 -m venv .venv && .venv/bin/pip install -e '.[test]'``), from before
ECS was read: a server of it answers the ``flat`` mixes (there ECS is ignored, not echoed) in
the same rounds, for what the feature costs queries that do not use it.

Prints each run, the medians, and each mix over the baseline. Then sends 100,000 queries from
distinct /24s (dnsperf ``-n 1``) and prints the resident memory of the DNS processes before and
after. Servers are stopped by PID; data goes to a temporary directory.
"""

from __future__ import annotations

import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import dns.edns
import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.tcp import dnsperf, dnsperf_parser  # noqa: E402
from tests.support.helpers import DnsdiscProcess  # noqa: E402

CONFIG = """\
locality:
  networks:
    z1: [10.1.0.0/16]
    z2: [10.2.0.0/16]
    z3: [10.3.0.0/16]
    z4: [10.4.0.0/16]
"""


def subnet(n: int) -> str:
    """The n-th of the mix's /24s, in zone 1 + n % 4."""
    return f"10.{1 + n % 4}.{(n // 4) % 256}.0"


def write_queries(path: Path, service: str, subnets: list[str] | None) -> Path:
    """Binary dnsperf input: each query as 2 bytes of length and its wire form."""
    out = bytearray()
    count = len(subnets) if subnets else 100
    for n in range(count):
        name, rdtype = (
            (f"{service}.svc.internal.", "A")
            if n % 2 == 0
            else (f"_{service}._tcp.svc.internal.", "SRV")
        )
        options = [dns.edns.ECSOption(subnets[n], 24)] if subnets else []
        q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232, options=options)
        q.flags = 0  # no RD: a resolver's question to an authority
        wire = q.to_wire()
        out += struct.pack("!H", len(wire)) + wire
    path.write_bytes(bytes(out))
    return path


def fill(server: DnsdiscProcess, located: bool = True) -> None:
    """``near`` and ``flat``; only ``flat``, without zones, for a server from before #18."""
    for service, locality in (("near", "spill"), ("flat", "off")) if located else (("flat", ""),):
        settings: dict[str, object] = {"max_answers": 2, "ttl": 5}
        if located:
            settings["locality"] = locality
        server.http("PUT", f"/v1/services/{service}", settings)
        for zone in range(1, 5):
            for k in range(2):
                body: dict[str, object] = {
                    "address": f"10.0.{zone}.{k + 1}",
                    "port": 8080,
                    "weight": 10 * zone,
                }
                if located:
                    body["zone"] = f"z{zone}"
                server.register(service, f"i{zone}{k}", **body)


def rss_kib(server: DnsdiscProcess) -> int:
    """Resident memory of the server's DNS processes (its workers, or itself without them)."""
    assert server.proc is not None
    pids = server.children() or [server.proc.pid]
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def main() -> None:
    p = dnsperf_parser(__doc__)
    p.add_argument("--before", type=Path, help="a checkout from before #18, with its own .venv")
    p.add_argument("--mixes", help="mixes to run, separated by semicolons (default: all)")
    args = p.parse_args()
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is needed (apt-get install dnsperf)")
    tmp = Path(tempfile.mkdtemp())
    (tmp / "dnsdisc.yaml").write_text(CONFIG)
    server = DnsdiscProcess(
        tmp / "node", extra_args=["--workers", args.workers, "--config", str(tmp / "dnsdisc.yaml")]
    )
    mix_subnets = [subnet(n) for n in range(1000)]
    files = {
        "flat, no ECS": write_queries(tmp / "flat.bin", "flat", None),
        "flat, ECS": write_queries(tmp / "flat-ecs.bin", "flat", mix_subnets),
        "near, ECS": write_queries(tmp / "near-ecs.bin", "near", mix_subnets),
        "near, no ECS": write_queries(tmp / "near.bin", "near", None),
    }
    before = None
    if args.before:
        before = DnsdiscProcess(
            tmp / "before", extra_args=["--workers", args.workers], tree=args.before.resolve()
        )
    wanted = args.mixes.split(";") if args.mixes else list(files)
    runs = [(mix, server) for mix in files if mix in wanted]
    if before is not None:
        runs += [(f"before: {m}", before) for m in files if m.startswith("flat") and m in wanted]
    results: dict[str, list[float]] = {}
    try:
        server.start()
        fill(server)
        if before is not None:
            before.start()
            fill(before, located=False)
        for n in range(args.rounds):
            for mix, target in runs if n % 2 == 0 else list(reversed(runs)):
                qfile = files[mix.removeprefix("before: ")]
                found = dnsperf(target.dns_port, qfile, args, "udp", extra=["-B"])
                qps = float(found["qps"])
                results.setdefault(mix, []).append(qps)
                print(f"round {n + 1} {mix:22}: {qps:9.0f} q/s (lost {found['lost']}%)", flush=True)
        # Memory: 100,000 distinct /24s (10.0.0.0/8 and 11.0.0.0/8), each asked once.
        many = [f"{10 + n // 65536}.{(n // 256) % 256}.{n % 256}.0" for n in range(100_000)]
        big = write_queries(tmp / "many.bin", "near", many)
        rss_before = rss_kib(server)
        subprocess.run(
            ["dnsperf", "-s", "127.0.0.1", "-p", str(server.dns_port), "-d", str(big), "-B",
             "-n", "1", "-q", "100", "-t", "2"],
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        rss_after = rss_kib(server)
    finally:
        server.stop()
        if before is not None:
            before.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(results[runs[0][0]])
    print(f"\nUDP, workers {args.workers}, {args.rounds} rounds of {args.seconds} s (medians)\n")
    print(f"| queries | q/s | over {runs[0][0]} |")
    print("|---|---:|---:|")
    for mix, _ in runs:
        qps = statistics.median(results[mix])
        print(f"| {mix} | {qps:.0f} | {qps / base:.2f}x |")
    print(
        f"\nDNS processes' RSS: {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB "
        f"after 100,000 distinct /24s ({(rss_after - rss_before) / 1024:+.1f} MiB)"
    )


if __name__ == "__main__":
    main()
