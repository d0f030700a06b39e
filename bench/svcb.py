"""HTTPS records (#23): UDP queries/s for ``HTTPS web.D`` against ``A web.D`` on the same
service, with dnsperf, alternating in one run.

    .venv/bin/python bench/svcb.py [--workers 1] [--seconds 8] [--rounds 3]

One dnsdisc on loopback with a service ``web`` of 8 instances (weighted, ``max_answers: 2``,
``https: {alpn: [h2, h3]}``, ``dnssd: true``). Mixes, each of one question:

- ``a``: ``web.D A`` (the baseline);
- ``https``: ``web.D HTTPS``: the same members, policy and cap; larger records, with glue;
- ``dnssd``: ``_web._tcp.D PTR``, a fixed RRset (a browse step).

Prints each run, the medians and each mix over the baseline. The server is stopped by its
PID; data goes to a temporary directory.
"""

from __future__ import annotations

import shutil
import statistics
import struct
import sys
import tempfile
from pathlib import Path

import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.tcp import alternating, dnsperf_parser  # noqa: E402
from tests.support.helpers import DnsdiscProcess  # noqa: E402

MIXES = {
    "a": ("web.svc.internal.", "A"),
    "https": ("web.svc.internal.", "HTTPS"),
    "dnssd": ("_web._tcp.svc.internal.", "PTR"),
}


def write_queries(path: Path, name: str, rdtype: str) -> Path:
    """Binary dnsperf input (``-B``): each query as 2 bytes of length and its wire form."""
    q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    q.flags = 0  # no RD: a resolver's question to an authority
    wire = q.to_wire()
    path.write_bytes((struct.pack("!H", len(wire)) + wire) * 100)
    return path


def fill(server: DnsdiscProcess) -> None:
    settings = {"max_answers": 2, "https": {"alpn": ["h2", "h3"]}, "dnssd": True}
    assert server.http("PUT", "/v1/services/web", settings).status in (200, 201)
    for n in range(8):
        server.register("web", f"w{n}", address=f"10.0.0.{n + 1}", port=443, weight=10 + n)


def main() -> None:
    args = dnsperf_parser(__doc__).parse_args()
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is needed (apt-get install dnsperf)")
    tmp = Path(tempfile.mkdtemp())
    server = DnsdiscProcess(tmp / "node", extra_args=["--workers", args.workers])
    files = {mix: write_queries(tmp / f"{mix}.bin", *q) for mix, q in MIXES.items()}
    results: dict[str, list[float]] = {}
    try:
        server.start()
        fill(server)
        results = alternating(server.dns_port, files, args, 6)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(results["a"])
    print(f"\nUDP, workers {args.workers}, {args.rounds} rounds of {args.seconds} s (medians)\n")
    print("| question | q/s | over A |")
    print("|---|---:|---:|")
    for mix in files:
        qps = statistics.median(results[mix])
        print(f"| {' '.join(MIXES[mix])} | {qps:.0f} | {qps / base:.2f}x |")


if __name__ == "__main__":
    main()
