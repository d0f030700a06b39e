"""Reloads under pressure: removing the token is warned about; a burst of reloads is coalesced;
a reload that changes nothing the answer index is made of keeps it; the dashboard costs one
request per refresh however many services there are (GET /v1/services?stats=1)."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import aiohttp

from dnsdisc.api.http import UI_FILES
from tests.support.helpers import DnsdiscProcess, wait_until

DOMAIN = "svc.internal"


async def _register(port: int, services: int) -> None:
    async def one(session: aiohttp.ClientSession, n: int) -> None:
        url = f"http://127.0.0.1:{port}/v1/services/s{n}/instances/i0"
        body = {"address": f"10.1.{n // 256}.{n % 256 or 1}", "port": 80}
        async with session.put(url, json=body) as resp:
            assert resp.status in (200, 201)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
        await asyncio.gather(*(one(session, n) for n in range(services)))


async def _reload_at_once(port: int, count: int) -> list[int]:
    async def one(session: aiohttp.ClientSession) -> int:
        async with session.post(f"http://127.0.0.1:{port}/v1/reload", json={}) as resp:
            return resp.status

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=count)) as session:
        return list(await asyncio.gather(*(one(session) for _ in range(count))))


def a_records(node: DnsdiscProcess, name: str) -> list[str]:
    return sorted(node.addresses(name))


def _serial(node: DnsdiscProcess) -> int:
    return int(node.query(DOMAIN, "SOA").answer[0][0].serial)


def test_removing_the_token_by_reload_is_warned_about(tmp_path: Path) -> None:
    conf = tmp_path / "dnsdisc.yaml"
    conf.write_text("http:\n  token: s3cret-token\n")
    node = DnsdiscProcess(tmp_path / "node", extra_args=["--config", str(conf)]).start()
    node.token = "s3cret-token"
    try:
        assert node.http("POST", "/v1/reload").status == 200
        assert "http.token was removed" not in node.log()
        conf.write_text("negative_ttl: 5\n")
        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "http.token was removed" in node.log(), 10)
        line = next(x for x in node.log().splitlines() if "http.token was removed" in x)
        assert "WARNING" in line and "no longer authenticated" in line
    finally:
        node.stop()


def test_an_unchanged_index_is_kept_and_changed_records_are_replaced_in_place(
    tmp_path: Path,
) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    zone = zones / "z.yaml"
    zone.write_text(
        "services:\n  db:\n    instances:\n      db-1: {address: 192.0.2.10, port: 5432}\n"
        "records:\n  - {name: app, type: A, value: 192.0.2.1}\n"
    )
    conf = tmp_path / "dnsdisc.yaml"
    conf.write_text("negative_ttl: 5\n")
    node = DnsdiscProcess(
        tmp_path / "node",
        extra_args=["--workers", "1", "--zones", str(zones), "--config", str(conf)],
    ).start()
    try:
        asyncio.run(_register(node.http_port, 1500))
        assert a_records(node, f"s7.{DOMAIN}") == ["10.1.0.7"]
        # A reload that changes nothing the index is made of keeps it, and changes nothing.
        assert node.http("POST", "/v1/reload").status == 200
        assert node.log().count("answer index kept") == 1
        assert a_records(node, f"app.{DOMAIN}") == ["192.0.2.1"]
        # A changed static service is rebuilt in place: no new index.
        zone.write_text(zone.read_text().replace("192.0.2.10", "192.0.2.11"))
        assert node.http("POST", "/v1/reload").status == 200
        assert node.log().count("answer index kept") == 2
        assert a_records(node, f"db.{DOMAIN}") == ["192.0.2.11"]
        # A changed zone record is replaced in place (no new index, no service sent again);
        # 8 reloads asked at once all see it.
        serial = _serial(node)
        zone.write_text(zone.read_text().replace("192.0.2.1}", "192.0.2.2}"))
        statuses = asyncio.run(_reload_at_once(node.http_port, 8))
        # Each answered once a reload that started after it asked had run (how many ran
        # depends on when they arrived: tests/unit/server/test_reloader.py counts them).
        assert statuses == [200] * 8
        assert "zone records replaced in place" in node.log()
        assert "answer index rebuilt" not in node.log()
        assert a_records(node, f"app.{DOMAIN}") == ["192.0.2.2"]
        assert a_records(node, f"s1499.{DOMAIN}") == ["10.1.5.219"]
        assert _serial(node) > serial
        # A record over a registered service's name shadows it; removing it frees the name.
        zone.write_text(zone.read_text() + "  - {name: s7, type: A, value: 192.0.2.7}\n")
        assert node.http("POST", "/v1/reload").status == 200
        assert a_records(node, f"s7.{DOMAIN}") == ["192.0.2.7"]
        zone.write_text(zone.read_text().replace("  - {name: s7, type: A, value: 192.0.2.7}\n", ""))
        assert node.http("POST", "/v1/reload").status == 200
        assert a_records(node, f"s7.{DOMAIN}") == ["10.1.0.7"]
        assert "answer index rebuilt" not in node.log()
        # A zone setting still needs a new index.
        conf.write_text("negative_ttl: 7\n")
        assert node.http("POST", "/v1/reload").status == 200
        assert "answer index rebuilt" in node.log()
        assert a_records(node, f"s1499.{DOMAIN}") == ["10.1.5.219"]
    finally:
        node.stop()


def test_the_bulk_stats_list_carries_every_service_with_its_answers(tmp_path: Path) -> None:
    node = DnsdiscProcess(tmp_path / "node", extra_args=["--workers", "1"]).start()
    try:
        node.register("web", "w1", address="10.0.0.1", port=80)
        node.register("web", "w2", address="10.0.0.2", port=80)
        node.register("api", "a1", address="10.0.1.1", port=80)
        for _ in range(6):
            assert node.addresses(f"api.{DOMAIN}") == ["10.0.1.1"]
        plain = node.http("GET", "/v1/services").body["services"]
        assert all("instances" not in s for s in plain)
        bulk = node.http("GET", "/v1/services?stats=1").body["services"]
        assert [s["name"] for s in bulk] == ["api", "web"]
        for s in bulk:
            one = node.http("GET", f"/v1/services/{s['name']}?stats=1").body
            assert s.keys() == one.keys() and s["instance_count"] == one["instance_count"]
            assert [i["id"] for i in s["instances"]] == [i["id"] for i in one["instances"]]
        assert bulk[0]["instances"][0]["answers"] == 6
        assert {p["name"]: {k: v for k, v in p.items()} for p in plain} == {
            s["name"]: {k: v for k, v in s.items() if k != "instances"} for s in bulk
        }
    finally:
        node.stop()


def test_one_dashboard_refresh_makes_one_api_request() -> None:
    js = UI_FILES["app.js"][0].decode()
    # One fetch in the code (inside getJSON), and getJSON called once per refresh: the bulk list.
    assert len(re.findall(r"\bfetch\(", js)) == 1
    calls = re.findall(r"\bgetJSON\(([^)]*)\)", js)
    calls = [c for c in calls if c.strip() != "url"]  # the definition
    assert calls == ["`${API}?stats=1`"], calls
    assert "${API}/" not in js  # no per-service URL
