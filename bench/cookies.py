"""UDP queries/s with DNS cookies on against off, with dnsperf, alternating in one run.

    .venv/bin/python bench/cookies.py [--workers 1] [--seconds 8] [--rounds 3]

Starts two dnsdisc servers on loopback ports with the data set of ``bench/tcp.py``, one with
``dns.cookies: false``, and runs dnsperf (UDP, as fast as answers come) against each in turn,
``--rounds`` times, in three query mixes: plain queries (no EDNS), EDNS queries carrying a
client cookie (``-E 10:<8 bytes>``: a fresh server cookie is made for every reply), and EDNS
queries carrying a full client + server cookie that the ``on`` server accepts (it checks the
hash of every query). Prints each run, the medians, and on / off per mix. Servers are stopped
by PID; data goes to a temporary directory.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import sys
import tempfile
from pathlib import Path

import dns.edns
import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.tcp import dnsperf, dnsperf_parser, fill, queries  # noqa: E402
from tests.support.helpers import DnsdiscProcess  # noqa: E402

CLIENT = "0102030405060708"


def server_cookie(port: int) -> str:
    """The full cookie (client + server, hex) the server hands out for CLIENT."""
    q = dns.message.make_query(
        "web.svc.internal.",
        "A",
        use_edns=0,
        options=[dns.edns.GenericOption(dns.edns.COOKIE, bytes.fromhex(CLIENT))],
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(q.to_wire(), ("127.0.0.1", port))
        reply = dns.message.from_wire(s.recv(4096))
    for option in reply.options:
        if option.otype == dns.edns.COOKIE:
            return option.to_wire().hex()
    raise SystemExit("the server sent no cookie back")


def main() -> None:
    args = dnsperf_parser(__doc__).parse_args()
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is needed (apt-get install dnsperf)")
    tmp = Path(tempfile.mkdtemp())
    (tmp / "off.yaml").write_text("dns: {cookies: false}\n")
    servers = {
        "on": DnsdiscProcess(tmp / "on", extra_args=["--workers", args.workers]),
        "off": DnsdiscProcess(
            tmp / "off", extra_args=["--workers", args.workers, "--config", str(tmp / "off.yaml")]
        ),
    }
    qfile = queries(tmp / "queries.txt")
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for server in servers.values():
            server.start()
            fill(server)
        full = server_cookie(servers["on"].dns_port)
        mixes = {
            "plain": [],
            "client cookie": ["-E", f"10:{CLIENT}"],
            "valid server cookie": ["-E", f"10:{full}"],
        }
        for n in range(args.rounds):
            order = ("on", "off") if n % 2 == 0 else ("off", "on")
            for mix, extra in mixes.items():
                for name in order:
                    found = dnsperf(servers[name].dns_port, qfile, args, "udp", extra=extra)
                    qps = float(found["qps"])
                    results.setdefault((mix, name), []).append(qps)
                    print(f"round {n + 1} {mix:20} {name:3}: {qps:9.0f} q/s", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nUDP, workers {args.workers}, {args.rounds} rounds of {args.seconds} s (medians)\n")
    print("| queries | cookies off q/s | cookies on q/s | on / off |")
    print("|---|---:|---:|---:|")
    for mix in mixes:
        off = statistics.median(results[(mix, "off")])
        on = statistics.median(results[(mix, "on")])
        print(f"| {mix} | {off:.0f} | {on:.0f} | {on / off:.2f}x |")


if __name__ == "__main__":
    main()
