"""Batched UDP (recvmmsg/sendmmsg, the default on Linux) against the event loop's datagram
transport (``dns.udp_batch: false``), measured in alternating runs with dnsperf.

    .venv/bin/python bench/udp_batch.py [--rounds 3] [--seconds 6] [--workers auto]
                                        [--modes max,deep,rate]

Each round starts dnsdisc once per setting on loopback ports, registers the shared data set (as
``bench/tcp.py``) and runs dnsperf in each mode: ``max`` (``-q 100``), ``deep`` (``-q 500``) and
``rate`` (20,000 queries/s offered). The settings alternate within a round because this machine's
figures drift by 2x over minutes; compare the two columns of one round. Prints queries/s and
queries per CPU-second of the DNS workers (user + system time from /proc, which leaves out time
stolen by the hypervisor), per run and as medians. Servers are stopped by PID; data goes to a
temporary directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tcp import dnsperf, fill, queries  # noqa: E402

from tests.support.helpers import DnsdiscProcess  # noqa: E402

MODES = {"max": (100, None), "deep": (500, None), "rate": (1000, 20000)}


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def run(batched: bool, args: argparse.Namespace, tmp: Path) -> dict[str, tuple[float, float]]:
    """{mode: (queries/s, queries per worker CPU-second)} for one server."""
    config = tmp / f"{'on' if batched else 'off'}.yaml"
    config.write_text(f"dns:\n  udp_batch: {'true' if batched else 'false'}\n")
    server = DnsdiscProcess(
        Path(tempfile.mkdtemp(dir=tmp)) / "node",
        extra_args=["--workers", args.workers, "--config", str(config)],
    )
    out = {}
    try:
        server.start()
        fill(server)
        qfile = queries(tmp / "queries.txt")
        assert server.proc is not None
        pid = server.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids = [int(c) for c in children] or [pid]  # workers, or the main process (workers 0)
        for mode in args.modes:
            inflight, rate = MODES[mode]
            perf = argparse.Namespace(seconds=args.seconds, clients=32, inflight=inflight)
            before = cpu_seconds(pids)
            found = dnsperf(server.dns_port, qfile, perf, "udp", rate)
            used = cpu_seconds(pids) - before
            qps = float(found["qps"])
            out[mode] = (qps, qps * args.seconds / used if used else 0.0)
    finally:
        server.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=6)
    p.add_argument("--workers", default="auto")
    p.add_argument("--modes", default="max,deep,rate")
    args = p.parse_args()
    args.modes = args.modes.split(",")
    if unknown := set(args.modes) - MODES.keys():
        raise SystemExit(f"unknown modes {sorted(unknown)}; choose from {sorted(MODES)}")
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is needed (apt-get install dnsperf)")
    tmp = Path(tempfile.mkdtemp())
    results: dict[bool, list[dict[str, tuple[float, float]]]] = {True: [], False: []}
    try:
        for r in range(args.rounds):
            for batched in (False, True) if r % 2 == 0 else (True, False):
                got = run(batched, args, tmp)
                results[batched].append(got)
                name = "batched" if batched else "unbatched"
                print(
                    f"round {r + 1} {name:9}: "
                    + "  ".join(f"{m} {q:,.0f} q/s {c:,.0f} q/cpu-s" for m, (q, c) in got.items()),
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nmedians of {args.rounds} rounds, workers {args.workers}, {args.seconds} s per run\n")
    print("| mode | unbatched q/s | batched q/s | unbatched q/CPU-s | batched q/CPU-s |")
    print("|---|---:|---:|---:|---:|")
    for mode in args.modes:
        off = [run_[mode] for run_ in results[False]]
        on = [run_[mode] for run_ in results[True]]
        cells = [statistics.median(x[i] for x in side) for i in (0, 1) for side in (off, on)]
        print(f"| {mode} | " + " | ".join(f"{c:,.0f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
