"""DNS over TCP with pipelined queries on persistent connections, beside UDP, with dnsperf.

    .venv/bin/python bench/tcp.py [--workers auto] [--seconds 10] [--clients 32] [--inflight 100]
                                  [--dot] [--rounds 1]

Starts dnsdisc on loopback ports, registers the shared data set (service ``web``, instances
web-1..web-5 at 10.0.0.1-5, weights 10..50, priority 10, weighted policy with max_answers 5),
and runs dnsperf on the same query mix (50% A, 40% SRV, 10% NXDOMAIN) twice: over UDP, and over
TCP (``-m tcp``: each of ``--clients`` connections stays open and keeps ``--inflight`` queries
outstanding, so queries are pipelined). Prints QPS, loss and latency for each. The server is
stopped by PID and its data directory removed.

With ``--dot`` the server also serves DNS over TLS (a certificate made with openssl) and dnsperf
runs over it too (``-m dot``, the same connections and pipelining); ``--rounds`` repeats the
runs, alternating their order, and the medians and the ratio DoT / TCP are printed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.certs import Ca  # noqa: E402
from tests.support.helpers import DnsdiscProcess, free_port  # noqa: E402


def queries(path: Path) -> Path:
    lines = []
    for i in range(100):
        if i % 10 < 5:
            lines.append("web.svc.internal A")
        elif i % 10 < 9:
            lines.append("_web._tcp.svc.internal SRV")
        else:
            lines.append(f"missing-{i % 7}.svc.internal A")
    path.write_text("\n".join(lines) + "\n")
    return path


def fill(server: DnsdiscProcess) -> None:
    """The shared data set: service ``web``, weighted, 5 instances with weights 10..50."""
    for n in range(1, 6):
        server.register(
            "web", f"web-{n}", address=f"10.0.0.{n}", port=8080, priority=10, weight=n * 10
        )
    server.http("PUT", "/v1/services/web", {"policy": "weighted", "max_answers": 5, "ttl": 5})


def dnsperf(
    port: int,
    qfile: Path,
    args: argparse.Namespace,
    mode: str,
    rate: int | None = None,
    extra: Sequence[str] = (),
) -> dict[str, str]:
    """dnsperf's figures over ``mode`` (udp, tcp, dot); ``rate``: queries/s offered (-Q), else as
    fast as answers come; ``extra``: more dnsperf arguments."""
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile), "-t", "2",
           "-l", str(args.seconds), "-c", str(args.clients), "-q", str(args.inflight),
           "-m", mode, *extra]  # fmt: skip
    if rate:
        cmd += ["-Q", str(rate)]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=args.seconds + 30, check=True
    ).stdout
    found = {}
    for key, pattern in {
        "qps": r"Queries per second:\s+([\d.]+)",
        "lost": r"Queries lost:\s+\d+ \(([\d.]+)%\)",
        "avg_ms": r"Average Latency \(s\):\s+([\d.]+)",
        "max_ms": r"Average Latency \(s\):.*max ([\d.]+)",
    }.items():
        m = re.search(pattern, out)
        value = m.group(1) if m else "?"
        if key.endswith("_ms") and m:
            value = f"{float(value) * 1000:.3f}"
        found[key] = value
    return found


def alternating(
    port: int, files: dict[str, Path], args: argparse.Namespace, width: int = 6
) -> dict[str, list[float]]:
    """UDP q/s of each mix's binary query file (dnsperf ``-B``), ``args.rounds`` rounds, the
    mixes in turn, the order reversed every other round (the machine drifts); each run printed."""
    results: dict[str, list[float]] = {}
    for n in range(args.rounds):
        order = list(files) if n % 2 == 0 else list(reversed(files))
        for mix in order:
            found = dnsperf(port, files[mix], args, "udp", extra=["-B"])
            qps = float(found["qps"])
            results.setdefault(mix, []).append(qps)
            print(f"round {n + 1} {mix:{width}}: {qps:9.0f} q/s (lost {found['lost']}%)",
                  flush=True)  # fmt: skip
    return results


def mixes_run(
    args: argparse.Namespace,
    write: Callable[[Path], dict[str, Path]],
    fill: Callable[[DnsdiscProcess], None],
    config: str = "",
    width: int = 6,
    warm: str | None = None,
) -> dict[str, list[float]]:
    """The whole of a mix bench: one dnsdisc (``args.workers``, the YAML ``config`` if any),
    ``fill`` it, ``write`` the query files (mix -> file) into a temporary directory, run
    ``warm``'s file once if given (caches filled), then ``alternating``; the server ended by
    its PID, the directory removed."""
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is needed (apt-get install dnsperf)")
    tmp = Path(tempfile.mkdtemp())
    extra = ["--workers", args.workers]
    if config:
        (tmp / "bench.yaml").write_text(config)
        extra += ["--config", str(tmp / "bench.yaml")]
    server = DnsdiscProcess(tmp / "node", extra_args=extra)
    try:
        files = write(tmp)
        server.start()
        fill(server)
        if warm is not None:
            dnsperf(server.dns_port, files[warm], args, "udp", extra=["-B"])
        return alternating(server.dns_port, files, args, width)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def print_ratios(
    args: argparse.Namespace, results: dict[str, list[float]], base: str, head: str,
    label: Callable[[str], str],
) -> None:  # fmt: skip
    """The medians of each mix as a Markdown table, each over ``base``'s."""
    over = statistics.median(results[base])
    print(f"\nUDP, workers {args.workers}, {args.rounds} rounds of {args.seconds} s (medians)\n")
    print(f"| {head} | q/s | over {label(base)} |")
    print("|---|---:|---:|")
    for mix, runs in results.items():
        qps = statistics.median(runs)
        print(f"| {label(mix)} | {qps:.0f} | {qps / over:.2f}x |")


def dnsperf_parser(
    doc: str | None, workers: str = "1", seconds: int = 8, rounds: int = 3
) -> argparse.ArgumentParser:
    """The arguments every dnsperf bench takes (what ``dnsperf`` reads from ``args``)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workers", default=workers)
    p.add_argument("--seconds", type=int, default=seconds)
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--inflight", type=int, default=100)
    return p


def main() -> None:
    p = dnsperf_parser(__doc__, workers="auto", seconds=10, rounds=1)
    p.add_argument("--dot", action="store_true", help="also DNS over TLS (dnsperf -m dot)")
    args = p.parse_args()
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is needed (apt-get install dnsperf)")
    tmp = Path(tempfile.mkdtemp())
    dot_port = free_port()
    # dnsperf's connections all come from 127.0.0.1: the per-client cap must hold them all.
    config = f"dns:\n  tcp_max_connections_per_client: {max(args.clients, 20)}\n"
    if args.dot:
        ca = Ca.make(tmp / "pki")
        pair = ca.issue(tmp / "pki", "server", "bench")
        config += (
            f"  tls_listen: ['127.0.0.1:{dot_port}']\n"
            f"  tls: {{cert_file: {pair.cert}, key_file: {pair.key}}}\n"
        )
    (tmp / "bench.yaml").write_text(config)
    extra = ["--workers", args.workers, "--config", str(tmp / "bench.yaml")]
    server = DnsdiscProcess(tmp / "node", extra_args=extra)
    rows: list[tuple[str, dict[str, str]]] = []
    try:
        server.start()
        fill(server)
        qfile = queries(tmp / "queries.txt")
        for n in range(args.rounds):
            modes = ["udp", "tcp"] + (["dot"] if args.dot else [])
            for mode in modes if n % 2 == 0 else modes[::-1]:
                port = dot_port if mode == "dot" else server.dns_port
                rows.append((mode, dnsperf(port, qfile, args, mode)))
                print(f"round {n + 1} {mode}: {rows[-1][1]['qps']} q/s", flush=True)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\ndnsdisc, workers {args.workers}, {args.clients} clients x {args.inflight} in flight, "
        f"{args.seconds} s\n"
    )
    print("| transport | QPS | lost % | avg ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['qps']} | {r['lost']} | {r['avg_ms']} | {r['max_ms']} |")
    medians = {
        mode: statistics.median(float(r["qps"]) for m, r in rows if m == mode)
        for mode in dict.fromkeys(m for m, _ in rows)
    }
    print("\nmedian QPS: " + ", ".join(f"{m} {q:.0f}" for m, q in medians.items()))
    if "dot" in medians:
        print(f"DoT / TCP pipelined: {medians['dot'] / medians['tcp']:.2f}x")


if __name__ == "__main__":
    main()
