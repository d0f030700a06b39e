"""DNSSEC (#24): UDP queries/s of DO=1 queries against a signed zone, with the signature cache
warm, against the same queries with DO=0 on the same server; the cold signing rate; the cost
of a burst of new subsets.

    .venv/bin/python bench/dnssec.py [--workers 1] [--seconds 8] [--rounds 3]

One dnsdisc on loopback with ``dnssec.enabled`` (ECDSAP256SHA256) and a service ``web`` of 8
weighted instances with ``max_answers: 2`` (28 subsets, each signed once then kept). Mixes
(binary dnsperf input, the same questions): ``plain`` (``web.D A``, ``w0.web.D A``, ``web.D MX``
NODATA, ``nothing.D A``, DO=0) and ``signed`` (the same with DO=1). Then, in-process, the
cold signing rate (``Signer.rrsigs`` on new RRsets) and the time for a burst of 1,000 new
subsets of a 1,000-instance RRset. Prints each run, the medians and the ratio. The server is
stopped by its PID; data goes to a temporary directory.
"""

from __future__ import annotations

import statistics
import struct
import sys
import time
from pathlib import Path

import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.tcp import dnsperf_parser, mixes_run  # noqa: E402
from dnsdisc.dnsserver import dnssec, wire  # noqa: E402
from tests.support.helpers import DnsdiscProcess  # noqa: E402

QUESTIONS = [
    ("web.svc.internal.", "A"),
    ("w0.web.svc.internal.", "A"),
    ("web.svc.internal.", "MX"),
    ("nothing.svc.internal.", "A"),
]


def write_queries(path: Path, do: bool) -> Path:
    out = b""
    for name, rdtype in QUESTIONS:
        q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232, want_dnssec=do)
        q.flags = 0
        wire_q = q.to_wire()
        out += struct.pack("!H", len(wire_q)) + wire_q
    path.write_bytes(out * 50)
    return path


def cold_rate(seconds: float = 2.0) -> tuple[float, float]:
    """Signatures/s on RRsets never signed before, and ms for 1,000 new subsets."""
    now = time.time()
    signer = dnssec.Signer([dnssec.new_key(13, True, now), dnssec.new_key(13, False, now)])
    apex = wire.text_to_wire("svc.internal.")
    owner = wire.text_to_wire("web.svc.internal.")
    n = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        body = wire.rr_body(wire.A, 5, struct.pack("!I", 0x0A000000 + n))
        signer.rrsigs(owner, apex, wire.A, [body])
        n += 1
    rate = n / (time.perf_counter() - started)
    bodies = [wire.rr_body(wire.A, 5, struct.pack("!I", 0x0B000000 + i)) for i in range(1000)]
    started = time.perf_counter()
    for i in range(1000):
        signer.rrsigs(owner, apex, wire.A, [bodies[i], bodies[(i + 1) % 1000]])
    return rate, (time.perf_counter() - started) * 1000


def fill(server: DnsdiscProcess) -> None:
    assert server.http("PUT", "/v1/services/web", {"max_answers": 2}).status in (200, 201)
    for n in range(8):
        server.register("web", f"w{n}", address=f"10.0.0.{n + 1}", port=80, weight=10 + n)


def main() -> None:
    args = dnsperf_parser(__doc__).parse_args()

    def write(tmp: Path) -> dict[str, Path]:
        return {"plain": write_queries(tmp / "plain.bin", False),
                "signed": write_queries(tmp / "signed.bin", True)}  # fmt: skip

    # One run of the DO=1 mix first: every subset signed once (the cache warm).
    results = mixes_run(args, write, fill, "dnssec:\n  enabled: true\n", warm="signed")
    plain, signed = statistics.median(results["plain"]), statistics.median(results["signed"])
    rate, burst = cold_rate()
    print(f"\nUDP, workers {args.workers}, {args.rounds} rounds of {args.seconds} s (medians)")
    print(f"| DO=0 | {plain:.0f} q/s |\n| DO=1, warm | {signed:.0f} q/s | {signed / plain:.2f}x |")
    print(f"cold signing: {rate:,.0f} RRsets/s (ECDSAP256SHA256, one key);"
          f" a burst of 1,000 new 2-record subsets: {burst:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
