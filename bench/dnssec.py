"""DNSSEC (#24): UDP queries/s of DO=1 queries against a signed zone, with the signature cache
warm, against the same queries with DO=0 on the same server; a flood of names that do not exist
with the signing budget on; the cost of a burst of new subsets; the cold signing rate.

    .venv/bin/python bench/dnssec.py [--workers 1] [--seconds 8] [--rounds 3] [--burst 64]

One dnsdisc on loopback with ``dnssec.enabled`` (ECDSAP256SHA256; ``dnssec.max_signatures``
at its default, 2,000 a second per DNS process) and a service ``web`` of 8 weighted instances
with ``max_answers: 2`` (28 subsets, each signed once then kept). Mixes (binary dnsperf input),
alternating within each round:

- ``plain`` / ``signed``: ``web.D A``, ``w0.web.D A``, ``web.D MX`` NODATA, ``nothing.D A``,
  DO=0 / DO=1 (one run of ``signed`` first: every subset signed once);
- ``flood DO=0`` / ``flood DO=1``: a name that does not exist per query, never asked before
  (a file of fresh names each run): with DO=1 each needs an NSEC signature of its own, and past
  the budget it is answered SERVFAIL (the share is printed).

Then, each round, a burst: a new service of ``--burst`` instances with ``max_answers: 2``
(2,016 subsets for 64) is registered and its name asked with DO=1 for ``--burst-seconds``
(each new subset drawn needs a signature), then as long again (warm); the q/s and SERVFAIL
share of each and the signatures made. Then the same flood on a second server with
``max_signatures: 0`` (no bound), for comparison. In-process: the cold signing rate
(``Signer.rrsigs`` on new RRsets) and the time for 1,000 new subsets of a 1,000-instance RRset.
Prints each run, the medians and the ratios over DO=0. Servers are stopped by their PID; data
goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.tcp import dnsperf_parser, print_ratios  # noqa: E402
from dnsdisc.dnsserver import dnssec, wire  # noqa: E402
from tests.support.helpers import DnsdiscProcess, metric  # noqa: E402

D = "svc.internal."
QUESTIONS = [
    ("web." + D, "A"),
    ("w0.web." + D, "A"),
    ("web." + D, "MX"),
    ("nothing." + D, "A"),
]
# Names per flood file: more than a run asks (each run its own file, so none is asked twice).
FLOOD_NAMES = 800_000


def write_queries(path: Path, do: bool, questions: list[tuple[str, str]] = QUESTIONS) -> Path:
    out = b""
    for name, rdtype in questions:
        q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232, want_dnssec=do)
        q.flags = 0
        wire_q = q.to_wire()
        out += struct.pack("!H", len(wire_q)) + wire_q
    path.write_bytes(out * 50)
    return path


def write_flood(path: Path, prefix: str, do: bool, count: int = FLOOD_NAMES) -> Path:
    """``count`` A queries for names that do not exist, each once (EDNS, 1232, DO as given)."""
    opt = b"\x00\x00\x29\x04\xd0\x00\x00" + (b"\x80\x00" if do else b"\x00\x00") + b"\x00\x00"
    tail = wire.text_to_wire(D) + b"\x00\x01\x00\x01" + opt
    head = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 1)
    chunks = []
    for n in range(count):
        label = f"{prefix}{n:x}".encode()
        query = head + bytes([len(label)]) + label + tail
        chunks.append(struct.pack("!H", len(query)) + query)
    path.write_bytes(b"".join(chunks))
    return path


def run(port: int, qfile: Path, args: argparse.Namespace, seconds: float) -> tuple[float, float]:
    """dnsperf over UDP on a binary file: q/s and the share of SERVFAIL (%)."""
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile), "-B", "-t", "2",
           "-l", str(seconds), "-c", str(args.clients), "-q", str(args.inflight)]  # fmt: skip
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    servfail = re.search(r"SERVFAIL \d+ \(([\d.]+)%\)", out)
    return float(qps.group(1)) if qps else 0.0, float(servfail.group(1)) if servfail else 0.0


def cold_rate(seconds: float = 2.0) -> tuple[float, float]:
    """Signatures/s on RRsets never signed before, and ms for 1,000 new subsets."""
    now = time.time()
    signer = dnssec.Signer([dnssec.new_key(13, True, now), dnssec.new_key(13, False, now)])
    apex = wire.text_to_wire(D)
    owner = wire.text_to_wire("web." + D)
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


def burst(
    server: DnsdiscProcess, tmp: Path, args: argparse.Namespace, name: str
) -> tuple[float, float, float, float, float]:
    """A service of ``args.burst`` instances (max_answers 2) registered, then asked with DO=1
    for ``args.burst_seconds`` (new subsets) and as long again (warm): q/s and SERVFAIL % of
    each, and the signatures made during the first."""
    assert server.http("PUT", f"/v1/services/{name}", {"max_answers": 2}).status in (200, 201)
    for n in range(args.burst):
        server.register(name, f"i{n}", address=f"10.{n // 250 + 1}.{n % 250}.1", port=80)
    qfile = write_queries(tmp / f"{name}.bin", True, [(f"{name}.{D}", "A")])
    # The last instance reached the DNS process: its name answers (an A query, DO=0).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.addresses(f"i{args.burst - 1}.{name}.{D}"):
            break
        time.sleep(0.05)
    before = metric(server, "dnsdisc_dns_signatures_total")
    cold = run(server.dns_port, qfile, args, args.burst_seconds)
    made = metric(server, "dnsdisc_dns_signatures_total") - before
    warm = run(server.dns_port, qfile, args, args.burst_seconds)
    return cold[0], cold[1], warm[0], warm[1], made


def main() -> None:
    p = dnsperf_parser(__doc__)
    p.add_argument("--burst", type=int, default=64, help="instances of the burst's service")
    p.add_argument("--burst-seconds", type=float, default=2.0)
    p.add_argument("--max-signatures", type=int, help="dnssec.max_signatures (default: its own)")
    args = p.parse_args()
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is needed (apt-get install dnsperf)")
    tmp = Path(tempfile.mkdtemp())
    results: dict[str, list[float]] = {}
    servfail: dict[str, list[float]] = {}
    bursts = []
    try:
        files = {"plain": write_queries(tmp / "plain.bin", False),
                 "signed": write_queries(tmp / "signed.bin", True)}  # fmt: skip
        budget = "" if args.max_signatures is None else f"  max_signatures: {args.max_signatures}\n"
        (tmp / "on.yaml").write_text("dnssec:\n  enabled: true\n" + budget)
        server = DnsdiscProcess(
            tmp / "on", extra_args=["--workers", args.workers, "--config", str(tmp / "on.yaml")]
        )
        try:
            server.start()
            fill(server)
            run(server.dns_port, files["signed"], args, args.seconds)  # every subset signed
            for n in range(args.rounds):
                mixes = ["plain", "signed", "flood DO=0", "flood DO=1"]
                for mix in mixes if n % 2 == 0 else mixes[::-1]:
                    if mix.startswith("flood"):
                        do = mix.endswith("1")
                        qfile = write_flood(tmp / "flood.bin", f"f{n}{int(do)}-", do)
                    else:
                        qfile = files[mix]
                    qps, failed = run(server.dns_port, qfile, args, args.seconds)
                    results.setdefault(mix, []).append(qps)
                    servfail.setdefault(mix, []).append(failed)
                    if mix.startswith("flood") and qps * args.seconds > FLOOD_NAMES:
                        print("  (more queries than names: some were asked twice)")
                    print(f"round {n + 1} {mix:10}: {qps:9.0f} q/s (SERVFAIL {failed:.1f}%)",
                          flush=True)  # fmt: skip
                bursts.append(burst(server, tmp, args, f"burst{n}"))
                print(f"round {n + 1} burst: {bursts[-1][0]:.0f} q/s ({bursts[-1][1]:.1f}%"
                      f" SERVFAIL), warm {bursts[-1][2]:.0f} q/s, {bursts[-1][4]:.0f} signatures",
                      flush=True)  # fmt: skip
        finally:
            server.stop()
        (tmp / "off.yaml").write_text("dnssec:\n  enabled: true\n  max_signatures: 0\n")
        off = DnsdiscProcess(
            tmp / "off", extra_args=["--workers", args.workers, "--config", str(tmp / "off.yaml")]
        )
        try:
            off.start()
            fill(off)
            for n in range(args.rounds):
                qfile = write_flood(tmp / "flood.bin", f"u{n}-", True)
                qps, failed = run(off.dns_port, qfile, args, args.seconds)
                results.setdefault("flood DO=1, no budget", []).append(qps)
                servfail.setdefault("flood DO=1, no budget", []).append(failed)
                print(f"round {n + 1} flood DO=1, no budget: {qps:9.0f} q/s", flush=True)
        finally:
            off.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_ratios(args, results, "plain", "mix", lambda mix: mix)
    print("\n| mix | SERVFAIL % (median) |\n|---|---:|")
    for mix, shares in servfail.items():
        print(f"| {mix} | {statistics.median(shares):.1f} |")
    flood0 = statistics.median(results["flood DO=0"])
    flood1 = statistics.median(results["flood DO=1"])
    print(f"\nflood DO=1 with the budget / flood DO=0: {flood1 / flood0:.2f}x")
    subsets = args.burst * (args.burst - 1) // 2
    print(f"\nburst: {args.burst} instances, max_answers 2 ({subsets:,} subsets),"
          f" {args.burst_seconds:g} s of DO=1 queries each (medians)\n")  # fmt: skip
    print("| | q/s | SERVFAIL % | signatures made |\n|---|---:|---:|---:|")
    cold, warm = (statistics.median(b[0] for b in bursts), statistics.median(b[2] for b in bursts))
    failed, made = statistics.median(b[1] for b in bursts), statistics.median(b[4] for b in bursts)
    print(f"| new subsets | {cold:.0f} | {failed:.1f} | {made:.0f} |")
    print(f"| warm | {warm:.0f} | {statistics.median(b[3] for b in bursts):.1f} | |")
    print(f"burst / warm: {cold / warm:.2f}x")
    rate, burst_ms = cold_rate()
    print(f"cold signing: {rate:,.0f} RRsets/s (ECDSAP256SHA256, one key);"
          f" 1,000 new 2-record subsets in-process: {burst_ms:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
