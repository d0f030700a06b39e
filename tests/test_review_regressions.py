"""Regressions for bugs found in review: each test failed before its fix."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import dns.rcode
import dns.rdatatype
import pytest
from test_balance import C
from test_ratelimit import Clock, reply
from test_responder import World, texts

from dnsdisc.config import zones
from dnsdisc.config.load import from_mapping
from dnsdisc.dnsserver.ratelimit import ALLOW, RateLimiter
from dnsdisc.errors import ConfigError, ConflictError, StoreError, ValidationError
from dnsdisc.policies.balance import latency, weighted
from dnsdisc.registry.model import HeartbeatReport, Instance, ServiceSettings
from dnsdisc.registry.registry import Registry
from dnsdisc.store.base import Snapshot


def test_small_weights_do_not_underflow_into_ties() -> None:
    # weight/latency far below 1: u ** (1/w) underflowed to 0.0 and ties sorted by index.
    rng = random.Random(11)
    cands = [C(1, latency_ms=10_000.0) for _ in range(3)]
    firsts = Counter(latency(cands, i, rng)[0] for i in range(6000))
    assert all(1700 < firsts[i] < 2300 for i in range(3)), firsts
    firsts = Counter(weighted([C(1), C(1)], i, rng)[0] for i in range(4000))
    assert all(1800 < n < 2200 for n in firsts.values()), firsts


def test_domain_length_is_bounded_so_generated_names_fit() -> None:
    with pytest.raises(ConfigError, match="domain"):
        from_mapping({"domain": ".".join(["a" * 40] * 4)}, "c.yaml")
    assert from_mapping({"domain": ".".join(["a" * 40] * 3)}).domain.count(".") == 3


def test_huge_numbers_are_validation_errors_not_crashes() -> None:
    big = 10**400
    with pytest.raises(ValidationError) as info:
        Instance.from_json("web", "w-1", {"address": "10.0.0.1", "port": 80, "ttl": big})
    assert info.value.field == "ttl"
    with pytest.raises(ValidationError):
        HeartbeatReport.from_json({"load": big})
    with pytest.raises(ValidationError):
        ServiceSettings.from_json("web", {"slow_start": big})


def test_static_services_and_shadowed_names_refuse_writes() -> None:
    root = Path(__file__).resolve().parent.parent
    data = zones.load_dir(root / "zones", "svc.internal.", ServiceSettings("default"))
    taken = zones.taken_service_names(data.records, "svc.internal.")
    assert {"mail", "www", "docs", "ldap"} <= set(taken)

    async def main() -> None:
        reg = Registry(reserved=taken)
        for settings, instances in data.services:
            reg.add_static(settings, instances)
        with pytest.raises(ConflictError):  # a new id in a zone-file service
            await reg.put_instance(
                Instance.from_json("postgres", "pg-9", {"address": "10.0.0.9", "port": 5432})
            )
        with pytest.raises(ConflictError, match="zone file"):  # mail.svc.internal is a static A
            await reg.put_instance(
                Instance.from_json("mail", "m-1", {"address": "10.0.0.9", "port": 25})
            )

    asyncio.run(main())


def test_ptr_rrset_has_one_ttl() -> None:
    w = World()
    w.add("a", "a-1", address="10.0.0.5", port=80)
    w.add("b", "b-1", address="10.0.0.5", port=81)
    w.settings("a", ttl=3600)
    w.settings("b", ttl=5)
    msg = w.ask("5.0.0.10.in-addr.arpa.", "PTR")
    assert len(msg.answer) == 1 and msg.answer[0].ttl == 5
    assert texts(msg) == ["a-1.a.svc.internal.", "b-1.b.svc.internal."]


def test_cname_loop_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "z.yaml").write_text(
        "records:\n  - {name: a, type: CNAME, value: b}\n  - {name: b, type: CNAME, value: a}\n"
    )
    with pytest.raises(ConfigError, match="loops"):
        zones.load_dir(tmp_path, "svc.internal.", ServiceSettings("default"))


def test_cname_to_a_missing_name_of_ours_is_nxdomain(tmp_path: Path) -> None:
    (tmp_path / "z.yaml").write_text("records:\n  - {name: old, type: CNAME, value: gone}\n")
    w = World(tmp_path)
    msg = w.ask("old.svc.internal.")
    assert msg.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: the rcode of the last name
    assert texts(msg) == ["gone.svc.internal."]
    assert msg.authority and msg.authority[0].rdtype == dns.rdatatype.SOA


def test_rate_limit_is_not_bypassed_by_random_names() -> None:
    rrl = RateLimiter(5, slip=0, clock=Clock())
    allowed = sum(
        rrl.check("192.0.2.1", reply(f"r{i}.svc.internal.", dns.rcode.NXDOMAIN)) == ALLOW
        for i in range(1000)
    )
    assert allowed == 5


def test_invalid_stored_rows_are_a_store_error() -> None:
    class BadStore:
        name = "bad"

        async def open(self) -> Snapshot:
            snap = Snapshot()
            snap.instances[("web", "w-1")] = {"address": "not-an-ip", "port": 80}
            return snap

        async def commit(self, op: object) -> None:
            return None

        async def close(self) -> None:
            return None

    with pytest.raises(StoreError, match="web/w-1"):
        asyncio.run(Registry(BadStore()).load())  # type: ignore[arg-type]
