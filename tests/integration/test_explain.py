"""``GET /v1/services/{service}/explain`` and ``dnsdisc explain`` (#19): the probabilities it
states match answers measured with dnspython (chi-square over 4,000 for the policies that
draw; certainty for ``consistent``; the zone for locality), each instance is marked with the
step that removed it, and bad parameters get a 400 naming the parameter."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import dns.edns
import dns.message
import dns.query

from tests.support.helpers import ROOT, DnsdiscProcess, running

QUERIES = 4000


def ask(server: DnsdiscProcess, name: str, ecs: str | None = None) -> list[str]:
    options = []
    if ecs:
        address, prefix = ecs.split("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    q = dns.message.make_query(name, "A", use_edns=0, options=options)
    reply = dns.query.udp(q, "127.0.0.1", port=server.dns_port, timeout=3)
    return [rr.address for rrset in reply.answer for rr in rrset]


def explained(server: DnsdiscProcess, service: str, query: str = "") -> dict[str, dict]:  # type: ignore[type-arg]
    result = server.http("GET", f"/v1/services/{service}/explain{query}")
    assert result.status == 200, result
    return {i["id"]: i for i in result.body["instances"]}


def check_against_answers(server: DnsdiscProcess, service: str, ids: dict[str, str]) -> None:
    """Chi-square of the first places of QUERIES answers against p_first, and each instance's
    share of answers within 0.03 of p_in_answer. ``ids``: address -> instance id."""
    stated = explained(server, service)
    firsts: Counter[str] = Counter()
    present: Counter[str] = Counter()
    for _ in range(QUERIES):
        got = ask(server, f"{service}.svc.internal.")
        firsts[ids[got[0]]] += 1
        present.update(ids[a] for a in got)
    expected = {iid: QUERIES * s["p_first"] for iid, s in stated.items() if s["p_first"] > 0}
    assert set(firsts) <= set(expected), (firsts, stated)
    chi2 = sum((firsts[i] - e) ** 2 / e for i, e in expected.items())
    assert chi2 < 16.3 + 3 * (len(expected) - 4), (service, firsts, expected)  # p = 0.001
    for iid, s in stated.items():
        assert abs(present[iid] / QUERIES - s["p_in_answer"]) < 0.03, (service, iid, present, s)


def test_explain_matches_measured_answers_for_each_policy(tmp_path: Path) -> None:
    with running(tmp_path, extra_args=["--workers", "1"]) as server:
        ids = {}
        for n, weight in enumerate((1, 2, 3, 4), 1):
            ids[f"10.0.0.{n}"] = f"w{n}"
            for service, extra in (
                ("weighted", {}),
                ("smooth", {}),
                ("priority", {"priority": 0 if n <= 2 else 1}),
                ("latency", {}),
            ):
                server.register(
                    service, f"w{n}", address=f"10.0.0.{n}", port=80, weight=weight, **extra
                )
        server.http("PUT", "/v1/services/weighted", {"policy": "weighted", "max_answers": 2})
        # One requester (dnspython from 127.0.0.1): its long-run shares are the sequence's.
        server.http(
            "PUT", "/v1/services/smooth",
            {"policy": "weighted", "max_answers": 2, "sequence": "smooth"},
        )  # fmt: skip
        server.http("PUT", "/v1/services/priority", {"policy": "priority", "max_answers": 1})
        server.http("PUT", "/v1/services/latency", {"policy": "latency", "max_answers": 1})
        for n, ms in enumerate((40, 10, 20, 10), 1):
            hb = server.http(
                "POST", f"/v1/services/latency/instances/w{n}/heartbeat", {"latency_ms": ms}
            )
            assert hb.status == 200, hb
        stated = explained(server, "priority")
        assert stated["w3"]["reason"] == "policy" and stated["w3"]["p_in_answer"] == 0
        assert abs(stated["w2"]["p_first"] - 2 / 3) < 1e-6
        for service in ("weighted", "smooth", "priority", "latency"):
            check_against_answers(server, service, ids)


def test_explain_consistent_locality_reasons_and_bad_parameters(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("locality:\n  networks:\n    eu-1a: [10.1.0.0/16]\n    eu-1b: [10.2.0.0/16]\n")
    with running(tmp_path, extra_args=["--config", str(conf)]) as server:
        zones = ("eu-1a", "eu-1a", "eu-1b", "eu-1b", "eu-1b")
        for n, zone in enumerate(zones, 1):
            server.register(
                "web",
                f"w{n}",
                address=f"10.0.0.{n}",
                port=80,
                zone=zone,
                tags=["t"] if n != 3 else [],
            )
            server.register("sticky", f"s{n}", address=f"10.0.1.{n}", port=80)
        server.register("web", "v6", address="2001:db8::1", port=80, zone="eu-1b")
        server.http("PUT", "/v1/services/web", {"locality": "prefer", "max_answers": 1})
        server.http("PUT", "/v1/services/sticky", {"policy": "consistent", "max_answers": 1})
        server.http("PUT", "/v1/services/web/instances/w4/maintenance", {"enabled": True})
        server.register("web", "w5", address="10.0.0.5", port=80, zone="eu-1b", weight=0)

        # Locality: a client of eu-1b gets eu-1b's instances handed out; the others say why.
        result = server.http("GET", "/v1/services/web/explain?ecs=10.2.9.0/24")
        assert result.body["client_zone"] == "eu-1b" and result.body["ecs_scope"] == 16
        got = {i["id"]: i for i in result.body["instances"]}
        assert got["w1"]["reason"] == "zone" and got["w2"]["reason"] == "zone"
        assert got["w3"]["included"] and got["w3"]["p_first"] == 1.0
        assert got["w4"]["reason"] == "maintenance"
        assert got["w5"]["reason"] == "drained"
        assert got["v6"]["reason"] == "address family"
        answers = Counter(ask(server, "web.svc.internal.", "10.2.9.0/24")[0] for _ in range(50))
        assert answers == {"10.0.0.3": 50}
        tagged = explained(server, "web", "?tag=t&client=10.1.2.3")
        assert tagged["w3"]["reason"] == "tag" and tagged["w1"]["included"]

        # consistent: certainty for the subnet, and the answers agree.
        sticky = explained(server, "sticky", "?ecs=10.9.8.0/24")
        (chosen,) = [i for i in sticky.values() if i["p_first"] == 1.0]
        for _ in range(20):
            assert ask(server, "sticky.svc.internal.", "10.9.8.0/24") == [chosen["address"]]

        for query, field in (
            ("?type=MX", "type"), ("?client=nope", "client"), ("?ecs=10.0.0.1/8", "ecs"),
            ("?tag=a_b", "tag"), ("?colour=red", "colour"),
        ):  # fmt: skip
            bad = server.http("GET", f"/v1/services/web/explain{query}")
            assert bad.status == 400 and bad.body["field"] == field, (query, bad)
        assert server.http("GET", "/v1/services/nothing/explain").status == 404

        cli = subprocess.run(
            [sys.executable, "-m", "dnsdisc", "explain", "web", "--ecs", "10.2.9.0/24",
             "--http", f"127.0.0.1:{server.http_port}"],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        lines = cli.stdout.splitlines()
        assert "client in eu-1b" in lines[0] and "ECS scope /16" in lines[0], lines
        rows = {line.split()[0]: line for line in lines[2:]}
        assert "no: zone" in rows["w1"] and "1.000" in rows["w3"], lines
