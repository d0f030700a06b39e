"""Balancing measured end to end: real queries against a running server, counted.

Client kinds behind a resolver or getaddrinfo() are in test_balancing_clients.py; here the
client is dnspython talking to dnsdisc directly.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dns.flags
import dns.rdatatype
import pytest

from tests.support.helpers import DnsdiscProcess, running
from tests.support.stats import CRITICAL_0001, assert_shares, chi_square

WEIGHTS = {"10.9.0.1": 1, "10.9.0.2": 2, "10.9.0.3": 3, "10.9.0.4": 4}
QUERIES = 4000


def register_weighted(server: DnsdiscProcess, policy: str, **settings: object) -> None:
    for n, (address, weight) in enumerate(WEIGHTS.items(), start=1):
        server.register("web", f"web-{n}", address=address, port=8080, weight=weight)
    result = server.http("PUT", "/v1/services/web", {"policy": policy, "ttl": 0, **settings})
    assert result.status in (200, 201), result


def first_addresses(server: DnsdiscProcess, n: int, name: str = "web.svc.internal") -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        msg = server.query(name, "A")
        records = [
            rr.to_text() for rrset in msg.answer for rr in rrset if rrset.rdtype == dns.rdatatype.A
        ]
        counts[records[0]] += 1
    return counts


def test_weighted_max_answers_1_gives_each_address_its_weight_share(server: DnsdiscProcess) -> None:
    register_weighted(server, "weighted", max_answers=1)
    msg = server.query("web.svc.internal", "A")
    assert sum(len(r) for r in msg.answer) == 1
    counts = first_addresses(server, QUERIES)
    assert_shares(counts, WEIGHTS, alpha=0.0001, max_abs_error=0.03)
    # A uniform or first-record-only policy is far outside: check the statistic would see it.
    uniform = Counter({a: QUERIES // 4 for a in WEIGHTS})
    assert chi_square(uniform, WEIGHTS) > 10 * CRITICAL_0001[3]


def test_weighted_without_cap_orders_by_weight(server: DnsdiscProcess) -> None:
    register_weighted(server, "weighted")
    assert sum(len(r) for r in server.query("web.svc.internal", "A").answer) == 4
    assert_shares(first_addresses(server, QUERIES), WEIGHTS, alpha=0.0001, max_abs_error=0.03)


@pytest.mark.parametrize("workers", [0, 2])
def test_round_robin_is_exact(tmp_path: Path, workers: int) -> None:
    """Exact in each process that answers: with N worker processes every instance leads within
    N answers of its exact share (a random order would be off by about 9 in 400)."""
    with running(tmp_path, extra_args=["--workers", str(workers)]) as server:
        register_weighted(server, "round_robin")
        counts = first_addresses(server, 400)
    assert set(counts) == set(WEIGHTS)
    assert all(abs(n - 100) <= workers for n in counts.values()), counts


def test_priority_hands_out_only_the_best_tier(server: DnsdiscProcess) -> None:
    server.register("db", "db-1", address="10.8.0.1", port=5432, priority=0, weight=1)
    server.register("db", "db-2", address="10.8.0.2", port=5432, priority=0, weight=3)
    server.register("db", "db-3", address="10.8.0.3", port=5432, priority=1)
    server.http("PUT", "/v1/services/db", {"policy": "priority", "ttl": 0})
    msg = server.query("db.svc.internal", "A")
    assert sorted(rr.to_text() for rr in msg.answer[0]) == ["10.8.0.1", "10.8.0.2"]
    assert_shares(
        first_addresses(server, 2000, "db.svc.internal"),
        {"10.8.0.1": 1, "10.8.0.2": 3},
        alpha=0.0001,
    )
    # SRV keeps every record with its real priority, in RFC 2782 order.
    srv = server.query("db.svc.internal", "SRV")
    prios = [rr.priority for rrset in srv.answer for rr in rrset]
    assert sorted(prios) == [0, 0, 1]
    # The next tier appears when the tier above is gone.
    for iid in ("db-1", "db-2"):
        assert server.http("DELETE", f"/v1/services/db/instances/{iid}").status == 204
    assert [rr.to_text() for rr in server.query("db.svc.internal", "A").answer[0]] == ["10.8.0.3"]


def test_least_loaded_follows_heartbeat_load(server: DnsdiscProcess) -> None:
    register_weighted(server, "least_loaded", max_answers=1)
    # No load reported yet: weighted.
    assert_shares(first_addresses(server, 2000), WEIGHTS, alpha=0.0001, max_abs_error=0.04)
    for n, load in enumerate([0.9, 0.2, 0.7, 0.4], start=1):
        assert (
            server.http(
                "POST", f"/v1/services/web/instances/web-{n}/heartbeat", {"load": load}
            ).status
            == 200
        )
    assert first_addresses(server, 50) == {"10.9.0.2": 50}
    server.http("POST", "/v1/services/web/instances/web-2/heartbeat", {"load": 0.95})
    assert first_addresses(server, 50) == {"10.9.0.4": 50}


def test_latency_policy_prefers_fast_instances(server: DnsdiscProcess) -> None:
    server.register("api", "fast", address="10.7.0.1", port=80)
    server.register("api", "slow", address="10.7.0.2", port=80)
    server.http("PUT", "/v1/services/api", {"policy": "latency", "max_answers": 1, "ttl": 0})
    server.http("POST", "/v1/services/api/instances/fast/heartbeat", {"latency_ms": 5})
    server.http("POST", "/v1/services/api/instances/slow/heartbeat", {"latency_ms": 20})
    counts = first_addresses(server, 2000, "api.svc.internal")
    assert_shares(counts, {"10.7.0.1": 4, "10.7.0.2": 1}, alpha=0.0001)


def test_srv_truncated_by_udp_size_keeps_a_weighted_sample(server: DnsdiscProcess) -> None:
    # 30 instances at one priority, weights 1 and 9: a 512-byte UDP reply holds only some of
    # them; those it holds must be a weighted sample, not the same first few every time.
    for i in range(30):
        server.register(
            "wide", f"node-number-{i}", address=f"10.6.0.{i + 1}", port=80, weight=9 if i % 2 else 1
        )
    server.http("PUT", "/v1/services/wide", {"ttl": 0})
    kept: Counter[str] = Counter()
    for _ in range(300):
        msg = server.query("wide.svc.internal", "SRV", use_edns=False)
        assert msg.flags & dns.flags.TC
        for rrset in msg.answer:
            for rr in rrset:
                kept["heavy" if rr.weight == 9 else "light"] += 1
    share_heavy = kept["heavy"] / sum(kept.values())
    # A "first N" cut would keep the same records each time; a weighted sample favours heavy ones.
    assert share_heavy > 0.7, kept
