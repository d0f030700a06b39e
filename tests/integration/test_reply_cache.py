"""The reply cache under the letter case resolvers randomise (DNS 0x20) and padded queries
(#16 item 2): a worker's cache stays within dns.reply_cache_bytes and answers echo the case."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import dns.edns
import dns.message

from tests.support.helpers import running, wait_until

LIMIT = 1 << 20


def cache_bytes(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("dnsdisc_dns_reply_cache_bytes "):
            return float(line.split()[1])
    raise AssertionError("no dnsdisc_dns_reply_cache_bytes in /metrics")


def test_random_case_and_padded_queries_stay_within_the_cache_bound(tmp_path: Path) -> None:
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(f"dns:\n  reply_cache_bytes: {LIMIT}\n")
    with running(tmp_path, extra_args=["--config", str(config), "--workers", "1"]) as srv:
        for n in range(60):
            srv.register("big", f"i{n}", address=f"10.1.0.{n + 1}", port=80)
        srv.http("PUT", "/v1/services/big", {"policy": "round_robin", "max_answers": 4})
        rng = random.Random(16)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        addresses = {f"10.1.0.{n + 1}" for n in range(60)}
        try:
            for i in range(3000):
                name = "".join(c.upper() if rng.random() < 0.5 else c for c in "big.svc.internal.")
                if i % 3 == 0:  # NXDOMAIN for a distinct name, padded to 4 KB
                    name = f"n{i}." + name
                    pad = dns.edns.GenericOption(12, bytes(4000))  # type: ignore[arg-type]
                    q = dns.message.make_query(name, "A", use_edns=0, options=[pad])
                else:
                    q = dns.message.make_query(name, "A", use_edns=0, payload=1232)
                data = q.to_wire(max_size=65535)
                sock.sendto(data, ("127.0.0.1", srv.dns_port))
                reply = sock.recv(65535)
                assert reply[:2] == data[:2]
                # The question comes back exactly as spelled (0x20 resolvers check the case).
                assert reply[12 : 12 + len(name) + 1] == data[12 : 12 + len(name) + 1], i
                msg = dns.message.from_wire(reply)
                if i % 3:
                    got = {rr.to_text() for rrset in msg.answer for rr in rrset}
                    assert len(got) == 4 and got <= addresses, got
        finally:
            sock.close()
        wait_until(lambda: cache_bytes(srv.http("GET", "/metrics").raw.decode()) > 0, 10)
        held = cache_bytes(srv.http("GET", "/metrics").raw.decode())
        assert 0 < held <= LIMIT
