"""The weighted share holds where clients really meet dnsdisc: behind unbound, and through
glibc's getaddrinfo() (which re-sorts addresses by RFC 6724). With ``max_answers: 1`` each
answer holds one address chosen by the policy, so neither reordering can undo the choice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.support.frontends import dnsdisc_in, getaddrinfo_firsts, namespace, unbound
from tests.support.helpers import DnsdiscProcess
from tests.support.stats import assert_shares

WEIGHTS = {"10.9.0.1": 1, "10.9.0.2": 2, "10.9.0.3": 3, "10.9.0.4": 4}


def registrations(policy: str, max_answers: int | None) -> list[tuple[str, str, dict[str, object]]]:
    out: list[tuple[str, str, dict[str, object]]] = [
        ("PUT", f"/v1/services/web/instances/web-{n}", {"address": a, "port": 80, "weight": w})
        for n, (a, w) in enumerate(WEIGHTS.items(), start=1)
    ]
    out.append(
        ("PUT", "/v1/services/web", {"policy": policy, "max_answers": max_answers, "ttl": 0})
    )
    return out


def test_weighted_share_through_unbound(tmp_path: Path, server: DnsdiscProcess) -> None:
    for method, path, body in registrations("weighted", 1):
        assert server.http(method, path, body).status in (200, 201)
    counts: Counter[str] = Counter()
    with unbound(tmp_path, server) as resolver:
        for _ in range(3000):
            msg = resolver.query("web.svc.internal.", "A")
            addresses = [rr.to_text() for rrset in msg.answer for rr in rrset]
            assert len(addresses) == 1
            counts[addresses[0]] += 1
    assert_shares(counts, WEIGHTS, alpha=0.0001, max_abs_error=0.03)


def test_weighted_share_through_getaddrinfo(tmp_path: Path) -> None:
    with namespace() as ns, dnsdisc_in(ns, tmp_path, registrations("weighted", 1)):
        counts = getaddrinfo_firsts(ns, 2000)
    assert_shares(counts, WEIGHTS, alpha=0.0001, max_abs_error=0.035)
