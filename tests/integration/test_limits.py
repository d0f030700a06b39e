"""Registry limits and instance addresses over the HTTP API of a real dnsdisc: each cap refuses
the write past it with 409 naming the cap's config key and stores nothing; a reload changes the
caps; unusable addresses get 400 naming ``address``; IPv4-mapped IPv6 is stored and served as A.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dns.rdatatype
import pytest

from tests.support.helpers import DnsdiscProcess, running

DOMAIN = "svc.internal"

LIMITS = """\
limits:
  services: {services}
  instances_per_service: 3
  instances: 5
  tags_per_service: 4
  meta_bytes: 64
"""


def _config(path: Path, services: int = 3) -> Path:
    path.write_text(LIMITS.format(services=services))
    return path


def put(server: DnsdiscProcess, service: str, iid: str, **body: Any) -> Any:
    body.setdefault("address", "10.0.0.1")
    body.setdefault("port", 80)
    return server.http("PUT", f"/v1/services/{service}/instances/{iid}", body)


def assert_limit(res: Any, key: str) -> None:
    assert res.status == 409, (res.status, res.raw[:300])
    assert res.body["field"] == key, res.body
    assert key in res.body["error"], res.body


def instance_ids(server: DnsdiscProcess, service: str) -> list[str]:
    res = server.http("GET", f"/v1/services/{service}")
    return sorted(i["id"] for i in res.body["instances"]) if res.status == 200 else []


def test_each_cap_refuses_the_write_past_it_and_a_reload_changes_it(tmp_path: Path) -> None:
    conf = _config(tmp_path / "dnsdisc.yaml")
    with running(tmp_path, extra_args=["--config", str(conf), "--workers", "0"]) as server:
        # instances_per_service: 3
        for i in range(3):
            assert put(server, "web", f"w{i}").status == 201
        assert_limit(put(server, "web", "w3"), "limits.instances_per_service")
        assert instance_ids(server, "web") == ["w0", "w1", "w2"]
        # Replacing an instance at the cap is not a new one.
        assert put(server, "web", "w0", port=81).status == 200
        # instances in all: 5
        assert put(server, "api", "a0").status == 201
        assert put(server, "api", "a1").status == 201
        assert_limit(put(server, "api", "a2"), "limits.instances")
        # services: 3 (web, api, and one more)
        assert server.http("PUT", "/v1/services/db", {"ttl": 5}).status == 201
        assert_limit(server.http("PUT", "/v1/services/cache", {"ttl": 5}), "limits.services")
        assert server.http("GET", "/v1/services/cache").status == 404
        # tags_per_service: 4 distinct over the service's instances
        assert put(server, "api", "a0", tags=["t1", "t2", "t3"]).status == 200
        assert put(server, "api", "a1", tags=["t3", "t4"]).status == 200
        assert_limit(put(server, "api", "a1", tags=["t4", "t5"]), "limits.tags_per_service")
        assert sorted(server.http("GET", "/v1/services/api/instances/a1").body["tags"]) == [
            "t3",
            "t4",
        ]
        # meta_bytes: 64 bytes of key=value pairs, for instances and services alike
        assert put(server, "web", "w1", meta={"k": "v" * 62}).status == 200
        assert_limit(put(server, "web", "w1", meta={"k": "v" * 63}), "limits.meta_bytes")
        res = server.http("PUT", "/v1/services/db", {"meta": {"a": "b" * 40, "c": "d" * 40}})
        assert_limit(res, "limits.meta_bytes")
        # Nothing refused reached DNS.
        msg = server.query(f"w3.web.{DOMAIN}")
        assert not msg.answer
        # A reload raises the services cap: the refused write now succeeds.
        _config(conf, services=4)
        assert server.http("POST", "/v1/reload").status in (200, 204)
        assert server.http("PUT", "/v1/services/cache", {"ttl": 5}).status == 201


@pytest.mark.parametrize(
    "address",
    ["0.0.0.0", "::", "255.255.255.255", "224.0.0.1", "239.255.255.250", "ff02::1", "fe80::1",
     "::ffff:0.0.0.0", "::ffff:224.0.0.1"],
)  # fmt: skip
def test_unusable_addresses_are_refused_naming_address(
    server: DnsdiscProcess, address: str
) -> None:
    res = put(server, "web", "x1", address=address)
    assert res.status == 400, (res.status, res.raw[:300])
    assert res.body["field"] == "address", res.body
    assert server.http("GET", "/v1/services/web").status == 404


def test_ipv4_mapped_address_is_stored_and_served_as_ipv4(server: DnsdiscProcess) -> None:
    res = put(server, "web", "m1", address="::ffff:10.0.0.1")
    assert res.status == 201, res.raw
    assert res.body["address"] == "10.0.0.1"
    assert server.http("GET", "/v1/services/web/instances/m1").body["address"] == "10.0.0.1"
    name = f"m1.web.{DOMAIN}"
    assert server.addresses(name, "A") == ["10.0.0.1"]
    msg = server.query(name, "AAAA")
    assert not [r for r in msg.answer if r.rdtype == dns.rdatatype.AAAA]
    # IPv4 link-local needs no zone index: kept.
    assert put(server, "web", "l1", address="169.254.10.1").status == 201


def test_zone_file_services_get_the_same_address_rules(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "static.yaml").write_text(
        "services:\n  legacy:\n    instances:\n      a:\n        address: 0.0.0.0\n        port: 80\n"
    )
    server = DnsdiscProcess(tmp_path / "node", extra_args=["--zones", str(zones)])
    with pytest.raises(RuntimeError, match="exited with 2") as info:
        server.start()
    assert "static.yaml" in str(info.value)
    assert "services.legacy.instances.a.address" in str(info.value)
