"""Amplification by ANY and /metrics series made by clients (#16 items 10 and 11).

    .venv/bin/python bench/edge_figures.py [default|minimal|full ...]

Starts a server per ``dns.any`` mode (one process, loopback), registers one instance with 8 meta
keys, prints the ANY reply/query size ratio with and without EDNS, then sends 1,000 A queries with
qtypes 1000-1999 and prints the number of ``dnsdisc_dns_queries_total`` series and the scrape."""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.rdatatype

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.helpers import DnsdiscProcess


def ask(port: int, wire: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(wire, ("127.0.0.1", port))
        return s.recv(65535)


def main(modes: list[str]) -> None:
    tmp = Path(tempfile.mkdtemp())
    for mode in modes:
        conf = tmp / f"{mode}.yaml"
        # "default": no dns.any key, so the script runs on a tree without one too.
        extra = "" if mode == "default" else f", any: {mode}"
        conf.write_text(f"dns: {{workers: 0{extra}}}\n")
        node = DnsdiscProcess(tmp / mode, extra_args=["--config", str(conf)]).start()
        try:
            meta = {f"k{i}": "v" * 40 for i in range(8)}
            node.register("web", "web-1", address="10.0.0.1", port=80, meta=meta)
            for edns in (0, -1):
                q = dns.message.make_query(
                    "web-1.web.svc.internal.", "ANY", use_edns=edns, payload=4096
                )
                w = q.to_wire()
                r = ask(node.dns_port, w)
                ratio = len(r) / len(w)
                print(f"ANY {mode} edns={edns >= 0}: {len(w)} -> {len(r)} B, {ratio:.1f}x")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for t in range(1000, 2000):
                    q = dns.message.make_query("web.svc.internal.", "A")
                    q.question[0].rdtype = dns.rdatatype.RdataType.make(t)
                    s.sendto(q.to_wire(), ("127.0.0.1", node.dns_port))
                    if t % 50 == 0:
                        time.sleep(0.01)
            time.sleep(0.5)
            t0 = time.monotonic()
            raw = node.http("GET", "/metrics").raw
            took = time.monotonic() - t0
            lines = raw.decode().splitlines()
            n = sum(1 for line in lines if line.startswith("dnsdisc_dns_queries_total{"))
            print(f"1000 qtypes: {n} series, /metrics {len(raw)} B, scrape {took * 1000:.0f} ms")
        finally:
            node.stop()


if __name__ == "__main__":
    main(sys.argv[1:] or ["minimal", "full"])
