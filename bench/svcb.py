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

import struct
import sys
from pathlib import Path

import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.tcp import dnsperf_parser, mixes_run, print_ratios  # noqa: E402
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

    def write(tmp: Path) -> dict[str, Path]:
        return {mix: write_queries(tmp / f"{mix}.bin", *q) for mix, q in MIXES.items()}

    results = mixes_run(args, write, fill)
    print_ratios(args, results, "a", "question", lambda mix: " ".join(MIXES[mix]))


if __name__ == "__main__":
    main()
