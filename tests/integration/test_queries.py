"""Named queries (#21) against a running server, with dig, dnspython and unbound: tag sets
(all of them, and ``!tag`` excluded), metadata filters, ``only_passing``; a failover chain that
moves to another service when a real HTTP check finds every instance of the first dead, and back
when it lives again; a template answering for every service; the query's own ``max_answers`` and
``policy``; definitions from the config file (read-only) and over the API (durable); and bad
input refused with the field named and nothing stored."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import dns.rcode
import dns.rdatatype

from tests.support.backends import http_backend
from tests.support.frontends import DOMAIN, unbound
from tests.support.helpers import (
    DnsdiscProcess,
    free_port,
    metric,
    require_tool,
    running,
    wait_until,
)

INTERVAL = 0.2


def addresses(server: DnsdiscProcess, name: str) -> set[str]:
    return set(server.addresses(f"{name}.{DOMAIN}", "A"))


def srv_targets(server: DnsdiscProcess, name: str) -> set[str]:
    return {r.split()[-1] for r in server.addresses(f"{name}.{DOMAIN}", "SRV")}


def dig(server: DnsdiscProcess, name: str, rdtype: str = "A") -> list[str]:
    out = subprocess.run(
        [require_tool("dig"), "+short", "+norecurse", f"@{server.dns_host}", "-p",
         str(server.dns_port), f"{name}.{DOMAIN}", rdtype],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    return sorted(out.stdout.split("\n")[:-1])


def put_query(server: DnsdiscProcess, name: str, body: dict[str, object]) -> None:
    result = server.http("PUT", f"/v1/queries/{name}", body)
    assert result.status in (200, 201), result


def test_filters_tags_negation_meta_and_only_passing(server: DnsdiscProcess) -> None:
    reg = server.register
    reg("web", "a", address="10.0.0.1", port=80, tags=["eu", "v2"], meta={"tier": "gold"})
    reg("web", "b", address="10.0.0.2", port=80, tags=["eu", "v1"], meta={"tier": "gold"})
    reg("web", "c", address="10.0.0.3", port=80, tags=["us", "v2"], meta={"tier": "gold"})
    reg("web", "d", address="10.0.0.4", port=80, tags=["eu", "v2"], meta={"tier": "bronze"}, ttl=60)
    put_query(server, "eu-v2", {"service": "web", "tags": ["eu", "v2"]})
    put_query(server, "eu-not-v1", {"service": "web", "tags": ["eu", "!v1"]})
    put_query(server, "gold-eu", {"service": "web", "tags": ["eu"], "meta": {"tier": "gold"}})
    put_query(server, "sure", {"service": "web", "tags": ["v2"], "only_passing": True})
    assert dig(server, "eu-v2.query") == ["10.0.0.1", "10.0.0.4"]  # both tags
    assert addresses(server, "eu-not-v1.query") == {"10.0.0.1", "10.0.0.4"}  # v1 left out
    assert addresses(server, "gold-eu.query") == {"10.0.0.1", "10.0.0.2"}
    assert srv_targets(server, "eu-v2.query") == {f"a.web.{DOMAIN}.", f"d.web.{DOMAIN}."}
    assert srv_targets(server, "_eu-v2._tcp.query") == {f"a.web.{DOMAIN}.", f"d.web.{DOMAIN}."}
    # d reports warning: still handed out by eu-v2, not by the only_passing query.
    server.http("POST", "/v1/services/web/instances/d/heartbeat", {"status": "warning"})
    assert "10.0.0.4" in addresses(server, "eu-v2.query")
    assert addresses(server, "sure.query") == {"10.0.0.1", "10.0.0.3"}
    # A query whose tags nobody carries: NODATA; an unknown query name: NXDOMAIN.
    put_query(server, "none", {"service": "web", "tags": ["ap"]})
    msg = server.query(f"none.query.{DOMAIN}", "A")
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
    assert server.query(f"nobody.query.{DOMAIN}", "A").rcode() == dns.rcode.NXDOMAIN


def test_failover_follows_a_real_http_check_and_comes_back(
    tmp_path: Path, server: DnsdiscProcess
) -> None:
    port = free_port()
    check = {"type": "http", "path": "/health", "interval": INTERVAL, "timeout": INTERVAL}
    put_query(server, "web", {"service": "web-eu", "failover": ["web-us"]})
    # Before web-eu exists: the chain's next step answers.
    server.register("web-us", "u1", address="127.0.0.9", port=port)
    assert srv_targets(server, "web.query") == {f"u1.web-us.{DOMAIN}."}
    with unbound(tmp_path, server) as resolver:
        with http_backend(port, "127.0.0.1"), http_backend(port, "127.0.0.2"):
            for n in (1, 2):
                server.register("web-eu", f"e{n}", address=f"127.0.0.{n}", port=port, check=check)
            wait_until(lambda: addresses(server, "web.query") == {"127.0.0.1", "127.0.0.2"}, 3)
            answer = resolver.query(f"web.query.{DOMAIN}", "A")
            assert {r.address for rr in answer.answer for r in rr} == {"127.0.0.1", "127.0.0.2"}
            state = server.http("GET", "/v1/queries/web").body["answering"]
            assert state == {"step": 0, "service": "web-eu"}
        died = time.monotonic()
        # Every web-eu check now fails: within the check bound the query answers web-us.
        wait_until(lambda: addresses(server, "web.query") == {"127.0.0.9"}, INTERVAL * 2 + 2)
        print(f"\nweb-eu dead -> web.query answers web-us in {time.monotonic() - died:.2f} s")
        answer = resolver.query(f"web.query.{DOMAIN}", "A")
        assert {r.address for rr in answer.answer for r in rr} == {"127.0.0.9"}
        assert server.http("GET", "/v1/queries/web").body["answering"]["service"] == "web-us"
        explained = server.http("GET", "/v1/queries/web/explain").body
        assert [s["healthy"] for s in explained["chain"]] == [0, 1]
        assert explained["step"] == 1 and explained["service"] == "web-us"
        # Answers are counted per query and by the step that gave them.
        for _ in range(5):
            addresses(server, "web.query")
        assert metric(server, 'dnsdisc_query_answers_total{query="web",step="failover"}') >= 5
        assert metric(server, 'dnsdisc_query_failovers_total{query="web"}') >= 1
        assert metric(server, 'dnsdisc_query_step{query="web"}') == 1
        with http_backend(port, "127.0.0.1"), http_backend(port, "127.0.0.2"):
            wait_until(lambda: addresses(server, "web.query") == {"127.0.0.1", "127.0.0.2"}, 3)
            answer = resolver.query(f"web.query.{DOMAIN}", "A")
            assert {r.address for rr in answer.answer for r in rr} == {"127.0.0.1", "127.0.0.2"}


def test_one_template_answers_for_every_service(server: DnsdiscProcess) -> None:
    put_query(server, "near-", {"template": "prefix", "service": "${match}-eu",
                                "failover": ["${match}-us"]})  # fmt: skip
    server.register("web-eu", "w1", address="10.1.0.1", port=80)
    server.register("api-us", "a1", address="10.2.0.1", port=8080)
    assert addresses(server, "near-web.query") == {"10.1.0.1"}
    assert addresses(server, "near-api.query") == {"10.2.0.1"}  # no api-eu: its failover
    assert srv_targets(server, "_near-api._tcp.query") == {f"a1.api-us.{DOMAIN}."}
    assert server.query(f"near-db.query.{DOMAIN}", "A").rcode() == dns.rcode.NXDOMAIN
    server.register("db-eu", "d1", address="10.3.0.1", port=5432)  # a new service: a new name
    assert addresses(server, "near-db.query") == {"10.3.0.1"}
    explained = server.http("GET", "/v1/queries/near-api/explain").body
    assert explained["query"] == "near-api" and explained["service"] == "api-us"
    # A plain query of a template's name wins.
    put_query(server, "near-web", {"service": "api-us"})
    assert addresses(server, "near-web.query") == {"10.2.0.1"}
    assert server.http("DELETE", "/v1/queries/near-web").status == 204
    assert addresses(server, "near-web.query") == {"10.1.0.1"}
    assert server.http("DELETE", "/v1/queries/near-").status == 204
    assert server.query(f"near-web.query.{DOMAIN}", "A").rcode() == dns.rcode.NXDOMAIN


def test_the_query_overrides_win_over_the_service_settings(server: DnsdiscProcess) -> None:
    server.http("PUT", "/v1/services/web", {"policy": "weighted", "max_answers": 4, "ttl": 30})
    for n in range(1, 7):
        prio = 0 if n <= 3 else 1
        server.register("web", f"i{n}", address=f"10.0.0.{n}", port=80, priority=prio)
    put_query(server, "two", {"service": "web", "max_answers": 2, "policy": "priority", "ttl": 7})
    seen_service: set[str] = set()
    seen_query: set[str] = set()
    for _ in range(40):
        plain = server.addresses(f"web.{DOMAIN}", "A")
        assert len(plain) == 4  # the service's own cap
        seen_service.update(plain)
        msg = server.query(f"two.query.{DOMAIN}", "A")
        rrset = msg.find_rrset(msg.answer, msg.question[0].name, 1, dns.rdatatype.A)
        assert len(rrset) == 2 and rrset.ttl == 7  # the query's cap and TTL
        seen_query.update(r.address for r in rrset)
    # weighted spreads over both priorities; the query's priority policy keeps the first tier.
    assert seen_query == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    assert seen_service & {"10.0.0.4", "10.0.0.5", "10.0.0.6"}


def test_config_queries_are_read_only_and_api_queries_survive_a_restart(tmp_path: Path) -> None:
    config = tmp_path / "dnsdisc.yaml"
    config.write_text("queries:\n  fixed:\n    service: web\n    tags: [eu]\n")
    args = ["--config", str(config)]
    with running(tmp_path, "n", extra_args=args, loopback_checks=False) as server:
        server.register("web", "a", address="10.0.0.1", port=80, tags=["eu"])
        server.register("web", "b", address="10.0.0.2", port=80)
        assert addresses(server, "fixed.query") == {"10.0.0.1"}
        result = server.http("PUT", "/v1/queries/fixed", {"service": "web"})
        assert result.status == 409 and result.body["field"] == "name"
        assert server.http("GET", "/v1/queries/fixed").body["static"] is True
        put_query(server, "all-web", {"service": "web"})
        server.kill()  # kill -9: the definition was durable when the PUT answered
    with running(tmp_path, "n", extra_args=args, loopback_checks=False) as again:
        assert again.http("GET", "/v1/queries/all-web").status == 200
        assert addresses(again, "all-web.query") == {"10.0.0.1", "10.0.0.2"}
        assert addresses(again, "fixed.query") == {"10.0.0.1"}


BAD = [
    ("web", {"service": "web", "colour": "red"}, "colour"),
    ("web", {"tags": ["eu"]}, "service"),
    ("web", {"service": "web", "failover": ["web-us", "web"]}, "failover"),
    ("web", {"service": "web", "failover": [{"service": "x", "weight": 1}]}, "failover[0].weight"),
    ("web", {"service": "web", "tags": ["a b"]}, "tags"),
    ("web", {"service": "web", "policy": "fastest"}, "policy"),
    ("web", {"service": "web", "max_answers": 0}, "max_answers"),
    ("web", {"service": "query"}, "service"),
    ("Bad_Name", {"service": "web"}, "name"),
    ("near-", {"template": "prefix", "service": "web"}, "service"),
    ("near-", {"template": "suffix", "service": "${match}"}, "template"),
]


def test_bad_input_names_the_field_and_stores_nothing(server: DnsdiscProcess) -> None:
    for name, body, fld in BAD:
        result = server.http("PUT", f"/v1/queries/{name}", body)
        assert result.status == 400 and result.body["field"] == fld, (name, body, result)
    assert server.http("GET", "/v1/queries").body["queries"] == []
    # A query naming a service that does not exist (yet) is allowed: NODATA until it does.
    put_query(server, "later", {"service": "not-yet"})
    msg = server.query(f"later.query.{DOMAIN}", "A")
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
    server.register("not-yet", "x", address="10.9.9.9", port=80)
    assert addresses(server, "later.query") == {"10.9.9.9"}
    # The label "query" is no service's name.
    result = server.http(
        "PUT", "/v1/services/query/instances/x", {"address": "10.0.0.1", "port": 1}
    )
    assert result.status == 409 and result.body["field"] == "service"
    assert server.http("DELETE", "/v1/queries/nothing").status == 404


def test_a_least_loaded_query_follows_the_reported_load(server: DnsdiscProcess) -> None:
    """Heartbeats' load reaches the query's copy of the members in the DNS workers too."""
    server.register("web", "a", address="10.0.0.1", port=80, ttl=60)
    server.register("web", "b", address="10.0.0.2", port=80, ttl=60)
    put_query(server, "light", {"service": "web", "policy": "least_loaded"})
    for load_a, load_b, first in ((0.9, 0.1, "10.0.0.2"), (0.1, 0.9, "10.0.0.1")):
        server.http("POST", "/v1/services/web/instances/a/heartbeat", {"load": load_a})
        server.http("POST", "/v1/services/web/instances/b/heartbeat", {"load": load_b})

        def leads(first: str = first) -> bool:
            return all(
                server.addresses(f"light.query.{DOMAIN}", "A")[0] == first for _ in range(10)
            )

        wait_until(leads, 3)


def test_a_template_made_name_is_taken_over_only_by_an_operator(tmp_path: Path) -> None:
    import hashlib

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    config = tmp_path / "acl.yaml"
    config.write_text(
        "acl:\n  tokens:\n"
        f'    - {{name: team, secret_sha256: "{sha("team")}", '
        'rules: [{services: "team*", access: write}, {services: "*", access: read}]}\n'
        f'    - {{name: ops, secret_sha256: "{sha("ops")}", '
        'rules: [{services: "*", access: write}, {operator: true}]}\n'
    )
    args = ["--config", str(config), "--storage", "memory"]
    with running(tmp_path, "n", extra_args=args, loopback_checks=False, token="ops") as server:
        server.register("web", "w", address="10.0.0.1", port=80)
        server.register("teamsvc", "t", address="10.6.6.6", port=80)
        put_query(server, "near-", {"template": "prefix", "service": "${match}"})
        server.token = "team"
        result = server.http("PUT", "/v1/queries/near-web", {"service": "teamsvc"})
        assert result.status == 403 and result.body["field"] == "name"
        assert server.http("PUT", "/v1/queries/mine", {"service": "teamsvc"}).status == 201
        assert addresses(server, "near-web.query") == {"10.0.0.1"}  # still the template's
        server.token = "ops"
        put_query(server, "near-web", {"service": "teamsvc"})  # an operator may
        assert addresses(server, "near-web.query") == {"10.6.6.6"}
