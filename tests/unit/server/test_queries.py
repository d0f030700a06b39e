"""Named queries from the registry to an in-process answer index (server/queries.py with
health/queries.py): the chain's step chosen by health, the filters, templates built for the
services they name (and a plain query winning over a template's name), answers counted per
query, and the definition's validation (registry/queries.py)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.zone import IndexSettings
from dnsdisc.errors import ValidationError
from dnsdisc.health.monitor import HealthMonitor
from dnsdisc.registry.model import CRITICAL, Instance
from dnsdisc.registry.queries import QueryDef
from dnsdisc.registry.registry import Registry
from dnsdisc.server.parts import attach

DOMAIN = wire.text_to_wire("svc.internal.")


class _Target:
    def __init__(self) -> None:
        self.index = AnswerIndex(IndexSettings(domain=DOMAIN))


def node(target: _Target, text: str) -> dict[int, list[bytes]] | None:
    found = target.index.nodes.get(wire.text_to_wire(text + ".svc.internal."))
    if found is None:
        return None
    return {t: [i.body for i in r.members] for t, r in found.rrsets.items()}


def addresses(target: _Target, text: str) -> set[str]:
    got = node(target, text)
    return {socket.inet_ntoa(b[-4:]) for b in (got or {}).get(wire.A, [])}


async def _setup() -> tuple[Registry, _Target]:
    registry = Registry()
    health = HealthMonitor(registry)
    target = _Target()
    queries = attach(registry, target, health)
    await registry.load()
    target.queries = queries  # type: ignore[attr-defined]
    return registry, target


def reg(service: str, iid: str, address: str, **body: object) -> Instance:
    return Instance.from_json(service, iid, {"address": address, "port": 80, **body})


def test_the_chain_fails_over_and_back_with_health() -> None:
    async def run() -> None:
        registry, target = await _setup()
        await registry.put_query(QueryDef.from_json("web", {"service": "eu", "failover": ["us"]}))
        assert node(target, "web.query") == {}  # NODATA before anything exists
        await registry.put_instance(reg("eu", "e1", "10.0.0.1", tags=["x"]))
        await registry.put_instance(reg("us", "u1", "10.0.1.1"))
        assert addresses(target, "web.query") == {"10.0.0.1"}
        registry.set_status("eu", "e1", CRITICAL, "down")
        assert addresses(target, "web.query") == {"10.0.1.1"}
        assert target.queries.step["web"] == 1  # type: ignore[attr-defined]
        registry.set_status("eu", "e1", "passing", "up")
        assert addresses(target, "web.query") == {"10.0.0.1"}
        assert target.queries.failovers["web"] == 1  # type: ignore[attr-defined]
        # SRV targets are the instances' own names; no PTR or host name is the query's.
        srv = node(target, "web.query")
        assert srv is not None and b"\x02e1\x02eu\x03svc\x08internal\x00" in srv[wire.SRV][0]
        assert node(target, "e1.web.query") is None
        await registry.delete_query("web")
        assert node(target, "web.query") is None

    asyncio.run(run())


def test_templates_cover_each_service_and_a_plain_query_wins() -> None:
    async def run() -> None:
        registry, target = await _setup()
        body = {"template": "prefix", "service": "${match}-eu", "failover": ["${match}-us"]}
        await registry.put_query(QueryDef.from_json("near-", body))
        await registry.put_instance(reg("web-eu", "a", "10.0.0.1"))
        await registry.put_instance(reg("api-us", "b", "10.0.0.2"))
        assert addresses(target, "near-web.query") == {"10.0.0.1"}
        assert addresses(target, "near-api.query") == {"10.0.0.2"}
        await registry.put_query(QueryDef.from_json("near-web", {"service": "api-us"}))
        assert addresses(target, "near-web.query") == {"10.0.0.2"}
        await registry.delete_query("near-web")
        assert addresses(target, "near-web.query") == {"10.0.0.1"}
        await registry.delete_instance("api-us", "b")
        await registry.delete_service("api-us")
        assert node(target, "near-api.query") is None  # NXDOMAIN: it names nothing now

    asyncio.run(run())


def test_answers_are_counted_per_query_in_this_process() -> None:
    async def run() -> None:
        registry, target = await _setup()
        await registry.put_query(QueryDef.from_json("q", {"service": "web"}))
        await registry.put_instance(reg("web", "a", "10.0.0.1"))
        found = target.index.nodes[wire.text_to_wire("q.query.svc.internal.")]
        rrset = found.rrsets[wire.A]
        for item in rrset.members:
            assert item.live is not None
            item.live.handed_out()
        assert target.queries.answers[("q", "own")] == 1  # type: ignore[attr-defined]
        assert registry.instance("web", "a").answers == 1

    asyncio.run(run())


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("q", {"service": "a", "failover": ["b", {"service": "a"}]}, "failover"),
        ("q", {"service": "a", "only_passing": "yes"}, "only_passing"),
        ("q", {"service": "a", "failover_min_healthy": 0}, "failover_min_healthy"),
        ("q", {"service": "a", "meta": {"k": 1}}, "meta"),
        ("q-", {"service": "a"}, "name"),
        ("n-", {"template": "prefix", "service": "${match}.x"}, "service"),
    ],
)
def test_bad_definitions_name_the_field(name: str, body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        QueryDef.from_json(name, body)
    assert info.value.field == field


def test_definitions_round_trip_and_templates_find_their_matches() -> None:
    body = {"service": "web", "tags": ["eu", "!old"], "meta": {"tier": "gold"},
            "only_passing": True, "max_answers": 2, "failover": ["web-us",
            {"service": "web-ap", "tags": ["x"]}], "failover_min_healthy": 2}  # fmt: skip
    q = QueryDef.from_json("q", body)
    assert QueryDef.from_json("q", q.definition()) == q
    assert q.definition() == body
    t = QueryDef.from_json("near-", {"template": "prefix", "service": "${match}-eu"})
    assert t.matches_for(["web-eu", "api-eu", "-eu", "db"]) == {"web", "api"}
    assert t.instantiate("web").services == ("web-eu",)


def test_the_longest_template_prefix_owns_a_name_whatever_changes() -> None:
    async def run() -> None:
        registry, target = await _setup()
        await registry.put_query(
            QueryDef.from_json("geo", {"template": "prefix", "service": "${match}"})
        )
        await registry.put_query(
            QueryDef.from_json("ge", {"template": "prefix", "service": "${match}"})
        )
        await registry.put_instance(reg("web", "a", "10.0.0.1"))
        await registry.put_instance(reg("oweb", "b", "10.0.3.1"))
        for _ in range(2):  # writes to either service do not move it
            assert addresses(target, "geoweb.query") == {"10.0.0.1"}  # geo + web, not ge + oweb
            await registry.put_instance(reg("oweb", "c", "10.0.3.2"))
            assert addresses(target, "geoweb.query") == {"10.0.0.1"}
            await registry.put_instance(reg("web", "d", "10.0.0.2"))
            await registry.delete_instance("web", "d")

    asyncio.run(run())


def test_figures_go_to_the_workers_only_for_queries_whose_policy_reads_them() -> None:
    async def run() -> list[str]:
        registry, target = await _setup()
        await registry.put_instance(reg("web", "a", "10.0.0.1"))
        await registry.put_query(
            QueryDef.from_json("light", {"service": "web", "policy": "least_loaded"})
        )
        await registry.put_query(QueryDef.from_json("plain", {"service": "web"}))
        sent: list[str] = []
        target.queries.figures(  # type: ignore[attr-defined]
            "web", "a", 0.5, 3.0, lambda key, *_: sent.append(key)
        )
        return sent

    assert asyncio.run(run()) == ["light.query"]
