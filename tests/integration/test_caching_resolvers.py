"""Weights through caching resolvers (#19): PowerDNS Recursor and knot-resolver keep even a
TTL-1 answer for a while (pdns 1 s, kresd its ``cache.min_ttl``), so all their clients get the
answer of that cache window. With ``sequence: smooth`` the windows of one resolver follow the
weights within 2 (per answering process); the same check on ``sequence: random`` is reported
beside (it misses often: 3 to 7 in the runs so far)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import stats as runs
from tests.support.frontends import Resolver, knot_resolver, pdns_recursor
from tests.support.helpers import DnsdiscProcess, running

WEIGHTS = {"127.0.1.1": 100, "127.0.1.2": 100, "127.0.1.3": 200}  # 1:1:2
WINDOWS = 40
GAP = 1.3  # seconds between lookups: longer than either resolver keeps a TTL-1 answer


def worst_run(answers: list[str]) -> float:
    return runs.worst_run(answers, WEIGHTS)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DnsdiscProcess]:
    # One answering process: each DNS process keeps its own place per requester, and a
    # resolver's queries (from random source ports) are spread over the processes.
    with running(tmp_path, extra_args=["--workers", "1"]) as node:
        for service, sequence in (("smooth", "smooth"), ("random", "random")):
            result = node.http(
                "PUT", f"/v1/services/{service}",
                {"sequence": sequence, "ttl": 1, "max_answers": 1},
            )  # fmt: skip
            assert result.status in (200, 201), result
            for n, (address, weight) in enumerate(WEIGHTS.items(), 1):
                node.register(service, f"i{n}", address=address, port=80, weight=weight)
        yield node


def windows(resolvers: dict[str, Resolver]) -> dict[tuple[str, str], list[str]]:
    """The answer of each cache window of each service through each resolver, WINDOWS of them:
    a lookup after the last answer expired makes the resolver ask dnsdisc once, and its answer
    comes with the full TTL (1); a lookup that still found the last window's answer in the cache
    (TTL 0) is not a new window and is left out."""
    got: dict[tuple[str, str], list[str]] = {}
    deadline = time.monotonic() + 3 * WINDOWS * GAP
    while min((len(v) for v in got.values()), default=0) < WINDOWS:
        assert time.monotonic() < deadline, {k: len(v) for k, v in got.items()}
        started = time.monotonic()
        for name, resolver in resolvers.items():
            for service in ("smooth", "random"):
                reply = resolver.query(f"{service}.svc.internal.", "A")
                (rrset,) = reply.answer
                (address,) = [rr.address for rr in rrset]
                answers = got.setdefault((name, service), [])
                if rrset.ttl == 1 and len(answers) < WINDOWS:
                    answers.append(address)
        time.sleep(max(0.0, GAP - (time.monotonic() - started)))
    return got


def test_cache_windows_of_each_resolver_follow_the_weights_with_smooth_sequences(
    tmp_path: Path, server: DnsdiscProcess
) -> None:
    # Each resolver asks from an address of its own: dnsdisc keeps one sequence per requester.
    with (
        pdns_recursor(tmp_path, server, source="127.0.0.2") as pdns,
        knot_resolver(tmp_path, server, source="127.0.0.3", min_ttl=1) as kresd,
    ):
        got = windows({"pdns": pdns, "kresd": kresd})
    report = {key: round(worst_run(answers), 2) for key, answers in got.items()}
    print("worst |count - share| over any run of windows:", report)
    for name in ("pdns", "kresd"):
        smooth = got[(name, "smooth")]
        counts = Counter(smooth)
        # Exact shares of 40 windows at 1:1:2: 10, 10, 20.
        assert all(abs(counts[a] - WINDOWS * w / 400) <= 2 for a, w in WEIGHTS.items()), (
            name, counts, report,
        )  # fmt: skip
        assert worst_run(smooth) <= 2, (name, smooth, report)
        assert len(set(got[(name, "random")])) >= 2  # the random service is answered too


def test_fifty_requesters_by_ecs_follow_the_weights_together(server: DnsdiscProcess) -> None:
    import dns.edns
    import dns.message
    import dns.query

    total: Counter[str] = Counter()
    firsts: Counter[str] = Counter()
    for n in range(50):
        answers = []
        for _ in range(20):
            q = dns.message.make_query(
                "smooth.svc.internal.", "A", use_edns=0,
                options=[dns.edns.ECSOption(f"10.77.{n}.0", 24)],
            )  # fmt: skip
            reply = dns.query.udp(q, "127.0.0.1", port=server.dns_port, timeout=3)
            answers.append(reply.answer[0][0].address)
        firsts[answers[0]] += 1
        total.update(answers)
        assert worst_run(answers) < 2, (n, answers)  # each subnet is a requester of its own
    assert len(firsts) >= 2, firsts  # new requesters start at random places
    expected = {a: 1000 * w / 400 for a, w in WEIGHTS.items()}
    chi2 = sum((total[a] - e) ** 2 / e for a, e in expected.items())
    assert chi2 < 13.8, total  # 2 degrees of freedom, p = 0.001
