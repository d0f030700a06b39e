"""Named queries (#21): UDP queries/s for a named query's names against the same questions to a
plain service, with dnsperf, alternating in one run.

    .venv/bin/python bench/queries.py [--workers 1] [--seconds 8] [--rounds 3]

One dnsdisc on loopback with a service ``web`` of 8 instances (4 tagged ``eu``, half of those
also ``canary``; ``max_answers: 2``) and a service ``web-us``. Mixes, half A and half SRV:

- ``service``: ``web.D`` and ``_web._tcp.D`` (the baseline);
- ``tag``: ``eu.web.D`` and ``_web._eu.D`` (a one-tag name, for comparison);
- ``query``: ``q.query.D`` and ``_q._tcp.query.D`` of ``{service: web, tags: [eu, "!canary"],
  failover: [web-us]}``;
- ``template``: ``near-web.query.D`` and ``_near-web._tcp.query.D`` of a ``near-`` template.

Prints each run, the medians and each mix over the baseline (target: a query within 10% of a
service). The server is stopped by its PID; data goes to a temporary directory.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.tcp import dnsperf_parser, mixes_run, print_ratios  # noqa: E402
from tests.support.helpers import DnsdiscProcess  # noqa: E402

MIXES = {
    "service": ("web.svc.internal.", "_web._tcp.svc.internal."),
    "tag": ("eu.web.svc.internal.", "_web._eu.svc.internal."),
    "query": ("q.query.svc.internal.", "_q._tcp.query.svc.internal."),
    "template": ("near-web.query.svc.internal.", "_near-web._tcp.query.svc.internal."),
}


def write_queries(path: Path, names: tuple[str, str]) -> Path:
    """Binary dnsperf input (``-B``): each query as 2 bytes of length and its wire form."""
    out = bytearray()
    for n in range(100):
        name, rdtype = (names[0], "A") if n % 2 == 0 else (names[1], "SRV")
        q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
        q.flags = 0  # no RD: a resolver's question to an authority
        wire = q.to_wire()
        out += struct.pack("!H", len(wire)) + wire
    path.write_bytes(bytes(out))
    return path


def fill(server: DnsdiscProcess) -> None:
    server.http("PUT", "/v1/services/web", {"max_answers": 2})
    for n in range(8):
        tags = ["eu"] if n < 4 else ["us"]
        if n % 2:
            tags.append("canary")
        server.register("web", f"w{n}", address=f"10.0.0.{n + 1}", port=80, tags=tags)
    server.register("web-us", "u0", address="10.0.1.1", port=80)
    query = {"service": "web", "tags": ["eu", "!canary"], "failover": ["web-us"]}
    assert server.http("PUT", "/v1/queries/q", query).status == 201
    template = {"template": "prefix", "service": "${match}", "failover": ["${match}-us"]}
    assert server.http("PUT", "/v1/queries/near-", template).status == 201


def main() -> None:
    args = dnsperf_parser(__doc__).parse_args()

    def write(tmp: Path) -> dict[str, Path]:
        return {mix: write_queries(tmp / f"{mix}.bin", names) for mix, names in MIXES.items()}

    results = mixes_run(args, write, fill, width=9)
    print_ratios(args, results, "service", "names", lambda mix: mix)


if __name__ == "__main__":
    main()
