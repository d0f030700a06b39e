"""Services of 5,000 instances answer like small ones (#16 item 3): a UDP answer of a service
without max_answers carries ``dns.udp_answer_limit`` records (16), drawn with the policy's
distribution: weighted shares, round robin's rotation, latency's preference. (What a query
costs is measured by bench/draw.py, not here.)"""

from __future__ import annotations

import itertools
import socket
from collections import Counter
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest
import yaml

from tests.support.helpers import DnsdiscProcess

SIZE = 5000
CAP = 16  # dns.udp_answer_limit's default


def address(service: int, i: int) -> str:
    return f"10.{service}.{i // 250}.{i % 250 + 1}"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsdiscProcess]:
    root = tmp_path_factory.mktemp("big")
    zones = root / "zones"
    zones.mkdir()
    services = {}
    for s, policy in enumerate(("weighted", "round_robin", "latency"), start=1):
        services[policy.replace("_", "")] = {
            "policy": policy,
            "ttl": 0,
            "instances": {
                f"i{i}": {
                    "address": address(s, i),
                    "port": 80,
                    # weighted: every tenth instance weighs 9 (half the total weight).
                    "weight": 9 if policy == "weighted" and i % 10 == 0 else 1,
                }
                for i in range(SIZE)
            },
        }
    (zones / "big.yaml").write_text(yaml.safe_dump({"services": services}))
    node = DnsdiscProcess(root / "data", extra_args=["--zones", str(zones)]).start(timeout=60)
    try:
        yield node
    finally:
        node.stop()


def answers(node: DnsdiscProcess, name: str, n: int) -> Iterator[list[str]]:
    """n UDP answers (EDNS, 1232 bytes), from one socket: one worker answers them all."""
    query = dns.message.make_query(name, "A", use_edns=0, payload=1232)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for _ in range(n):
            reply = dns.query.udp(query, "127.0.0.1", timeout=5, port=node.dns_port, sock=sock)
            assert not reply.flags & dns.flags.TC
            yield [rr.to_text() for rrset in reply.answer for rr in rrset]


def test_weighted_answers_are_capped_with_the_weight_shares(big: DnsdiscProcess) -> None:
    heavy = {address(1, i) for i in range(0, SIZE, 10)}
    firsts, places = 0, 0
    queries = 4000
    for records in answers(big, "weighted.svc.internal", queries):
        assert len(records) == CAP and len(set(records)) == CAP
        assert all(r.startswith("10.1.") for r in records)
        firsts += records[0] in heavy
        places += sum(r in heavy for r in records)
    # The heavy tenth holds half the weight: first place is heavy half the time; drawing
    # uniformly would give 0.1. Answers are not independent: an order stays in the RRset's
    # standing pool for ~8 answers (rrset.POOL, REUSE), so the share over 1,500 answers has an
    # sd of ~0.04 (measured: 20 runs of 1,500 spread 0.41-0.57), not 0.013; over 4,000, ~0.025.
    # Over 16 places of 5,000 the share stays near 0.5 too.
    assert abs(firsts / queries - 0.5) < 0.1, firsts
    assert abs(places / (queries * CAP) - 0.5) < 0.04, places


def test_round_robin_answers_are_a_rotating_window(big: DnsdiscProcess) -> None:
    seen = list(answers(big, "roundrobin.svc.internal", 300))
    firsts: Counter[str] = Counter()
    for prev, cur in itertools.pairwise(seen):
        assert len(cur) == CAP
        # Each answer is the one before moved on by one place (this worker's rotation).
        assert cur[:-1] == prev[1:], (prev, cur)
        firsts[cur[0]] += 1
    assert max(firsts.values()) == 1


def test_latency_answers_prefer_the_fast_instance(big: DnsdiscProcess) -> None:
    fast, slow = address(3, 0), address(3, 1)
    for iid, ms in (("i0", 0.1), ("i1", 1000)):
        result = big.http(
            "POST", f"/v1/services/latency/instances/{iid}/heartbeat", {"latency_ms": ms}
        )
        assert result.status == 200, result
    # Unmeasured instances count as the median (1000 ms): the fast one weighs 10,000 times as
    # much as any other, 1000 / (1000 + 4999 * 0.1) = 2/3 of first places; the slow one and the
    # others share the rest evenly. Uniform drawing would give 1/5000.
    # 3,000 answers: orders are reused from a standing pool (see the weighted test), so the
    # share's sd is ~0.027 here, not the 0.009 of independent draws.
    queries = 3000
    firsts: Counter[str] = Counter()
    for records in answers(big, "latency.svc.internal", queries + 100):
        assert len(records) == CAP and len(set(records)) == CAP
        firsts[records[0]] += 1
    share = firsts[fast] / sum(firsts.values())
    assert abs(share - 2 / 3) < 0.1, firsts.most_common(3)
    assert firsts[slow] < 30


def test_tcp_answers_are_not_capped(big: DnsdiscProcess) -> None:
    msg = big.query("weighted.svc.internal", "A", tcp=True)
    assert sum(len(r) for r in msg.answer) > CAP
