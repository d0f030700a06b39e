"""The HTTP registration API against a real dnsdisc process: the contract, its errors, the token,
read-your-writes in DNS, and read-only static services.

The bad-input battery shares one server: each case snapshots the registry (over HTTP) and the DNS
answers before and after its request, so a case that stores anything fails on its own.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from tests.support.helpers import ROOT, DnsdiscProcess, HttpResult, running

DOMAIN = "svc.internal"
ANY_FIELD = object()  # the contract names no field for this error: any string will do


def fqdn(name: str) -> str:
    return f"{name}.{DOMAIN}"


def assert_error(res: HttpResult, status: int, fld: object = ANY_FIELD) -> None:
    """A JSON error body ``{"error": "<non-empty>", "field": "<str>"}`` with this status."""
    assert res.status == status, (res.status, res.raw[:300])
    assert isinstance(res.body, dict), f"not a JSON object: {res.raw[:300]!r}"
    assert isinstance(res.body.get("error"), str) and res.body["error"], res.body
    assert isinstance(res.body.get("field"), str), res.body
    if isinstance(fld, str):
        assert res.body["field"] == fld, res.body
    elif isinstance(fld, tuple):
        assert res.body["field"] in fld, res.body


def answers(msg: dns.message.Message, rdtype: str = "A") -> list[str]:
    want = dns.rdatatype.from_text(rdtype)
    return sorted(rr.to_text() for rrset in msg.answer if rrset.rdtype == want for rr in rrset)


def assert_nodata(server: DnsdiscProcess, name: str, rdtype: str = "A") -> None:
    msg = server.query(name, rdtype)
    assert msg.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(msg.rcode())
    assert msg.answer == []
    assert any(rrset.rdtype == dns.rdatatype.SOA for rrset in msg.authority), msg.to_text()


def rcode(server: DnsdiscProcess, name: str, rdtype: str = "A") -> int:
    return server.query(name, rdtype).rcode()


# -- happy paths ---------------------------------------------------------------------------------


def test_probes(server: DnsdiscProcess) -> None:
    assert server.http("GET", "/healthz").status == 200
    ready = server.http("GET", "/readyz")
    assert ready.status == 200 and ready.body["ready"] is True


def test_register_creates_then_replaces_with_defaults_filled_in(server: DnsdiscProcess) -> None:
    path = "/v1/services/web/instances/web-1"
    full = {
        "address": "10.0.0.1",
        "port": 8080,
        "weight": 7,
        "priority": 3,
        "protocol": "udp",
        "tags": ["canary", "zone-a"],
        "meta": {"version": "1.2.3"},
        "ttl": 30,
    }
    created = server.http("PUT", path, full)
    assert created.status == 201, created
    assert created.body["service"] == "web" and created.body["id"] == "web-1"
    for key, value in full.items():
        assert created.body[key] == value, key
    assert server.addresses(fqdn("web-1.web")) == ["10.0.0.1"]
    assert server.http("GET", path).body == created.body

    replaced = server.http("PUT", path, {"address": "10.0.0.9", "port": 9090})
    assert replaced.status == 200, replaced
    body = replaced.body
    assert (body["service"], body["id"], body["address"], body["port"]) == (
        "web",
        "web-1",
        "10.0.0.9",
        9090,
    )
    # PUT replaces: everything not sent goes back to its default.
    assert body["weight"] == 100
    assert body["priority"] == 0
    assert body["protocol"] == "tcp"
    assert body["tags"] == []
    assert body["meta"] == {}
    assert body["ttl"] is None
    assert server.http("GET", path).body == body
    # Visible in DNS as soon as the call returned: the old address is gone.
    assert server.addresses(fqdn("web-1.web")) == ["10.0.0.9"]
    assert server.addresses(fqdn("web")) == ["10.0.0.9"]

    v6 = server.http(
        "PUT", "/v1/services/web/instances/web-6", {"address": "2001:db8::6", "port": 80}
    )
    assert v6.status == 201 and v6.body["address"] == "2001:db8::6"
    assert server.addresses(fqdn("web-6.web"), "AAAA") == ["2001:db8::6"]
    assert server.addresses(fqdn("web"), "AAAA") == ["2001:db8::6"]


def test_reads_list_service_and_instance(server: DnsdiscProcess) -> None:
    server.register("web", "web-1", address="10.0.0.1", port=80)
    server.register("web", "web-2", address="10.0.0.2", port=80)
    server.register("api", "api-1", address="10.0.1.1", port=443)

    listed = server.http("GET", "/v1/services")
    assert listed.status == 200
    counts = {s["name"]: s["instance_count"] for s in listed.body["services"]}
    assert counts == {"api": 1, "web": 2}

    svc = server.http("GET", "/v1/services/web")
    assert svc.status == 200
    assert svc.body["name"] == "web"
    assert {"policy", "max_answers", "ttl", "meta"} <= set(svc.body)
    assert sorted(i["id"] for i in svc.body["instances"]) == ["web-1", "web-2"]

    one = server.http("GET", "/v1/services/web/instances/web-2")
    assert one.status == 200
    assert (one.body["id"], one.body["address"], one.body["port"]) == ("web-2", "10.0.0.2", 80)

    assert_error(server.http("GET", "/v1/services/nope"), 404, "service")
    assert_error(server.http("GET", "/v1/services/web/instances/nope"), 404, "id")
    assert_error(server.http("GET", "/v1/services/nope/instances/web-1"), 404, "service")


def test_delete_instance_then_404_and_gone_from_dns(server: DnsdiscProcess) -> None:
    server.register("web", "web-1", address="10.0.0.1", port=80)
    server.register("web", "web-2", address="10.0.0.2", port=80)
    assert sorted(server.addresses(fqdn("web"))) == ["10.0.0.1", "10.0.0.2"]

    gone = server.http("DELETE", "/v1/services/web/instances/web-1")
    assert gone.status == 204 and gone.raw == b""
    assert rcode(server, fqdn("web-1.web")) == dns.rcode.NXDOMAIN
    assert server.addresses(fqdn("web")) == ["10.0.0.2"]
    assert_error(server.http("GET", "/v1/services/web/instances/web-1"), 404, "id")
    assert_error(server.http("DELETE", "/v1/services/web/instances/web-1"), 404, "id")
    assert_error(server.http("DELETE", "/v1/services/nope/instances/web-1"), 404, "service")

    # The last instance goes; the service stays known, so its name is NODATA, not NXDOMAIN.
    assert server.http("DELETE", "/v1/services/web/instances/web-2").status == 204
    listed = server.http("GET", "/v1/services").body["services"]
    assert [(s["name"], s["instance_count"]) for s in listed] == [("web", 0)]
    assert_nodata(server, fqdn("web"))


def test_heartbeat(server: DnsdiscProcess) -> None:
    server.register("web", "web-1", address="10.0.0.1", port=80)
    path = "/v1/services/web/instances/web-1/heartbeat"
    first = server.http("POST", path, {"load": 0.75})
    assert first.status == 200, first
    assert first.body["id"] == "web-1" and first.body["load"] == 0.75
    assert server.http("GET", "/v1/services/web/instances/web-1").body["load"] == 0.75

    bare = server.http("POST", path)  # the body is optional; the load is kept
    assert bare.status == 200 and bare.body["load"] == 0.75
    integer = server.http("POST", path, {"load": 3})
    assert integer.status == 200 and integer.body["load"] == 3

    assert_error(server.http("POST", "/v1/services/web/instances/nope/heartbeat"), 404, "id")
    assert_error(server.http("POST", "/v1/services/nope/instances/web-1/heartbeat"), 404, "service")
    assert server.addresses(fqdn("web-1.web")) == ["10.0.0.1"]


def test_put_service_creates_then_updates_settings(server: DnsdiscProcess) -> None:
    settings = {"policy": "weighted", "max_answers": 1, "ttl": 60, "meta": {"team": "core"}}
    created = server.http("PUT", "/v1/services/web", settings)
    assert created.status == 201, created
    for key, value in settings.items():
        assert created.body[key] == value, key
    assert created.body["instances"] == []
    assert_nodata(server, fqdn("web"))

    updated = server.http(
        "PUT", "/v1/services/web", {"policy": "random", "max_answers": None, "ttl": 0}
    )
    assert updated.status == 200, updated
    assert (updated.body["policy"], updated.body["max_answers"], updated.body["ttl"]) == (
        "random",
        None,
        0,
    )
    got = server.http("GET", "/v1/services/web").body
    assert (got["policy"], got["max_answers"], got["ttl"]) == ("random", None, 0)

    # Settings reach DNS at once: the TTL and the answer cap.
    assert server.http("PUT", "/v1/services/web", {"ttl": 42, "max_answers": 1}).status == 200
    server.register("web", "web-1", address="10.0.0.1", port=80)
    server.register("web", "web-2", address="10.0.0.2", port=80)
    msg = server.query(fqdn("web"))
    assert len(answers(msg)) == 1 and msg.answer[0].ttl == 42
    assert server.http("PUT", "/v1/services/web", {"ttl": 42}).status == 200
    assert sorted(server.addresses(fqdn("web"))) == ["10.0.0.1", "10.0.0.2"]

    # A service created by registering an instance already exists: PUT answers 200.
    server.register("api", "api-1", address="10.0.1.1", port=443)
    assert server.http("PUT", "/v1/services/api", {"ttl": 9}).status == 200
    assert server.query(fqdn("api")).answer[0].ttl == 9


def test_known_empty_service_is_nodata_and_deleted_service_is_nxdomain(
    server: DnsdiscProcess,
) -> None:
    assert server.http("PUT", "/v1/services/empty").status == 201  # no body: defaults
    assert_nodata(server, fqdn("empty"))
    assert_nodata(server, fqdn("empty"), "AAAA")
    assert rcode(server, fqdn("never")) == dns.rcode.NXDOMAIN

    server.register("web", "web-1", address="10.0.0.1", port=80)
    assert server.http("DELETE", "/v1/services/web").status == 204
    assert rcode(server, fqdn("web")) == dns.rcode.NXDOMAIN
    assert rcode(server, fqdn("web-1.web")) == dns.rcode.NXDOMAIN
    assert_error(server.http("GET", "/v1/services/web"), 404, "service")
    assert_error(server.http("GET", "/v1/services/web/instances/web-1"), 404, "service")
    assert_error(server.http("DELETE", "/v1/services/web"), 404, "service")

    assert server.http("DELETE", "/v1/services/empty").status == 204
    assert rcode(server, fqdn("empty")) == dns.rcode.NXDOMAIN
    assert server.http("GET", "/v1/services").body == {"services": []}


def test_names_are_case_insensitive_and_stored_lower_case(server: DnsdiscProcess) -> None:
    res = server.http(
        "PUT", "/v1/services/Web/instances/WEB-1", {"address": "10.0.0.1", "port": 80}
    )
    assert res.status == 201, res
    assert (res.body["service"], res.body["id"]) == ("web", "web-1")
    again = server.http(
        "PUT", "/v1/services/WEB/instances/web-1", {"address": "10.0.0.2", "port": 80}
    )
    assert again.status == 200, again  # the same instance, replaced
    assert server.http("GET", "/v1/services/wEb/instances/Web-1").body["address"] == "10.0.0.2"
    listed = server.http("GET", "/v1/services").body["services"]
    assert [(s["name"], s["instance_count"]) for s in listed] == [("web", 1)]
    assert server.addresses(fqdn("web-1.web")) == ["10.0.0.2"]
    assert server.addresses("WEB-1.Web.SVC.internal") == ["10.0.0.2"]
    svc = server.http("PUT", "/v1/services/API", {"ttl": 5})
    assert svc.status == 201 and svc.body["name"] == "api"
    assert server.http("DELETE", "/v1/services/Web/instances/WEB-1").status == 204
    assert rcode(server, fqdn("web-1.web")) == dns.rcode.NXDOMAIN


# -- the bad-input battery: one server, registry and DNS compared around each case ---------------

EXISTING = "/v1/services/web/instances/web-1"
NEW_ID = "/v1/services/web/instances/new-1"
NEW_SERVICE = "/v1/services/fresh/instances/fresh-1"
INSTANCE_TARGETS = {"replace": EXISTING, "new-id": NEW_ID, "new-service": NEW_SERVICE}
VALID: dict[str, Any] = {"address": "10.9.9.9", "port": 9999}
OVERSIZED_META = json.dumps({**VALID, "meta": {"k": "x" * (70 * 1024)}}).encode()


def padded(body: dict[str, Any], size: int) -> bytes:
    """Valid JSON of exactly ``size`` bytes (whitespace after the first brace)."""
    text = json.dumps(body).encode()
    return b"{" + b" " * (size - len(text)) + text[1:]


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: Any = None
    raw: bytes | None = None
    status: int = 400
    field: object = ANY_FIELD


def with_(**kw: Any) -> dict[str, Any]:
    return {**VALID, **kw}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in VALID.items() if k != key}


def _raw_valid(extra: str) -> bytes:
    return ('{"address": "10.9.9.9", "port": 9999' + extra + "}").encode()


# (case id, body or raw bytes, expected field, expected status)
INSTANCE_BODIES: list[tuple[str, Any, object, int]] = [
    ("malformed-json", b'{"address": "10.9.9.9", "port": 9999', "body", 400),
    ("trailing-garbage", b'{"address": "10.9.9.9", "port": 9999} x', "body", 400),
    ("empty-body", b"", "body", 400),
    ("json-array", b'[{"address": "10.9.9.9", "port": 9999}]', "body", 400),
    ("json-string", b'"10.9.9.9:9999"', "body", 400),
    ("json-null", b"null", "body", 400),
    ("json-number", b"42", "body", 400),
    ("not-utf8", b'{"address": "10.9.9.9\xff", "port": 9999}', "body", 400),
    ("port-NaN", b'{"address": "10.9.9.9", "port": NaN}', "body", 400),
    ("ttl-Infinity", _raw_valid(', "ttl": Infinity'), "body", 400),
    ("weight--Infinity", _raw_valid(', "weight": -Infinity'), "body", 400),
    ("ttl-1e400", _raw_valid(', "ttl": 1e400'), "ttl", 400),
    ("port-string", with_(port="80"), "port", 400),
    ("port-true", with_(port=True), "port", 400),
    ("port-1.5", with_(port=1.5), "port", 400),
    ("port-80.0", with_(port=80.0), "port", 400),
    ("port-0", with_(port=0), "port", 400),
    ("port-65536", with_(port=65536), "port", 400),
    ("port--1", with_(port=-1), "port", 400),
    ("port-null", with_(port=None), "port", 400),
    ("port-list", with_(port=[80]), "port", 400),
    ("weight-65536", with_(weight=65536), "weight", 400),
    ("weight--1", with_(weight=-1), "weight", 400),
    ("weight-x", with_(weight="x"), "weight", 400),
    ("weight-true", with_(weight=True), "weight", 400),
    ("priority-65536", with_(priority=65536), "priority", 400),
    ("priority--1", with_(priority=-1), "priority", 400),
    ("priority-string", with_(priority="0"), "priority", 400),
    ("protocol-sctp", with_(protocol="sctp"), "protocol", 400),
    ("protocol-empty", with_(protocol=""), "protocol", 400),
    ("protocol-number", with_(protocol=6), "protocol", 400),
    ("address-999", with_(address="999.1.1.1"), "address", 400),
    ("address-word", with_(address="not-an-ip"), "address", 400),
    ("address-scoped", with_(address="fe80::1%eth0"), "address", 400),
    ("address-number", with_(address=123), "address", 400),
    ("address-empty", with_(address=""), "address", 400),
    ("address-null", with_(address=None), "address", 400),
    ("address-cidr", with_(address="10.0.0.1/24"), "address", 400),
    ("address-hostname", with_(address="web.example.com"), "address", 400),
    ("address-newline", with_(address="10.0.0.1\n"), "address", 400),
    ("tags-string", with_(tags="canary"), "tags", 400),
    ("tags-object", with_(tags={"canary": True}), "tags", 400),
    ("tags-number", with_(tags=[5]), "tags", 400),
    ("tags-underscore", with_(tags=["Bad_Label"]), "tags", 400),
    ("tags-leading-dash", with_(tags=["-x"]), "tags", 400),
    ("tags-trailing-dash", with_(tags=["x-"]), "tags", 400),
    ("tags-64-chars", with_(tags=["a" * 64]), "tags", 400),
    ("tags-empty-label", with_(tags=[""]), "tags", 400),
    ("tags-dot", with_(tags=["a.b"]), "tags", 400),
    ("tags-trailing-newline", with_(tags=["canary\n"]), "tags", 400),
    ("tags-non-ascii", with_(tags=["caf\u00e9"]), "tags", 400),
    ("tags-kelvin-sign", with_(tags=["\u212a"]), "tags", 400),
    ("meta-string", with_(meta="k=v"), "meta", 400),
    ("meta-list", with_(meta=["k", "v"]), "meta", 400),
    ("meta-int-value", with_(meta={"k": 1}), "meta", 400),
    ("meta-null-value", with_(meta={"k": None}), "meta", 400),
    ("meta-object-value", with_(meta={"k": {"a": "b"}}), "meta", 400),
    ("meta-huge-value", with_(meta={"k": "v" * 1000}), "meta", 400),
    ("ttl-0", with_(ttl=0), "ttl", 400),
    ("ttl--5", with_(ttl=-5), "ttl", 400),
    ("ttl-string", with_(ttl="10"), "ttl", 400),
    ("ttl-true", with_(ttl=True), "ttl", 400),
    ("unknown-field", with_(colour="red"), "colour", 400),
    ("unknown-field-case", with_(Port=80), "Port", 400),
    ("missing-address", without("address"), "address", 400),
    ("missing-port", without("port"), "port", 400),
    ("empty-object", {}, ("address", "port"), 400),
    ("oversized-meta", OVERSIZED_META, "body", 413),
    ("oversized-padded", padded(VALID, 64 * 1024 + 1), "body", 413),
]

SERVICE_TARGETS = {"existing": "/v1/services/web", "new": "/v1/services/fresh"}
SERVICE_BODIES: list[tuple[str, Any, object, int]] = [
    ("malformed-json", b'{"ttl": 5', "body", 400),
    ("json-array", b"[]", "body", 400),
    ("json-null", b"null", "body", 400),
    ("json-string", b'"weighted"', "body", 400),
    ("ttl-NaN", b'{"ttl": NaN}', "body", 400),
    ("policy-unknown", {"policy": "fastest"}, "policy", 400),
    ("policy-number", {"policy": 1}, "policy", 400),
    ("policy-list", {"policy": ["weighted"]}, "policy", 400),
    ("max-answers-0", {"max_answers": 0}, "max_answers", 400),
    ("max-answers--1", {"max_answers": -1}, "max_answers", 400),
    ("max-answers-string", {"max_answers": "3"}, "max_answers", 400),
    ("max-answers-true", {"max_answers": True}, "max_answers", 400),
    ("max-answers-1.5", {"max_answers": 1.5}, "max_answers", 400),
    ("ttl--1", {"ttl": -1}, "ttl", 400),
    ("ttl-86401", {"ttl": 86401}, "ttl", 400),
    ("ttl-string", {"ttl": "5"}, "ttl", 400),
    ("ttl-true", {"ttl": True}, "ttl", 400),
    ("ttl-1.5", {"ttl": 1.5}, "ttl", 400),
    ("ttl-null", {"ttl": None}, "ttl", 400),
    ("meta-string", {"meta": "team=core"}, "meta", 400),
    ("meta-int-value", {"meta": {"team": 1}}, "meta", 400),
    ("unknown-field", {"policy": "random", "colour": "red"}, "colour", 400),
    ("oversized", padded({"ttl": 5}, 64 * 1024 + 1), "body", 413),
]

HEARTBEAT = EXISTING + "/heartbeat"
HEARTBEAT_BODIES: list[tuple[str, Any, object, int]] = [
    ("malformed-json", b'{"load": ', "body", 400),
    ("json-array", b"[1]", "body", 400),
    ("json-number", b"0.5", "body", 400),
    ("load-NaN", b'{"load": NaN}', "body", 400),
    ("load-string", {"load": "high"}, "load", 400),
    ("load-negative", {"load": -1}, "load", 400),
    ("load-true", {"load": True}, "load", 400),
    ("load-1e400", b'{"load": 1e400}', "load", 400),
    ("unknown-field", {"load": 1, "status": "ok"}, "status", 400),
    ("oversized", padded({"load": 1}, 64 * 1024 + 1), "body", 413),
]

A_64 = "a" * 64
PATH_CASES: list[tuple[str, Case]] = [
    (
        "service-underscore",
        Case("PUT", "/v1/services/bad_name/instances/x-1", VALID, field="service"),
    ),
    ("service-64-chars", Case("PUT", f"/v1/services/{A_64}/instances/x-1", VALID, field="service")),
    (
        "service-leading-dash",
        Case("PUT", "/v1/services/-web/instances/x-1", VALID, field="service"),
    ),
    (
        "service-trailing-dash",
        Case("PUT", "/v1/services/web-/instances/x-1", VALID, field="service"),
    ),
    ("service-dot", Case("PUT", "/v1/services/web%2Ex/instances/x-1", VALID, field="service")),
    ("service-space", Case("PUT", "/v1/services/we%20b/instances/x-1", VALID, field="service")),
    (
        "service-non-ascii",
        Case("PUT", "/v1/services/w%C3%A9b/instances/x-1", VALID, field="service"),
    ),
    (
        "service-kelvin-sign",
        Case("PUT", "/v1/services/%E2%84%AA/instances/x-1", VALID, field="service"),
    ),
    (
        "service-trailing-newline",
        Case("PUT", "/v1/services/web%0A/instances/x-1", VALID, field="service"),
    ),
    ("id-underscore", Case("PUT", "/v1/services/web/instances/bad_id", VALID, field="id")),
    ("id-64-chars", Case("PUT", f"/v1/services/web/instances/{A_64}", VALID, field="id")),
    ("id-leading-dash", Case("PUT", "/v1/services/web/instances/-x", VALID, field="id")),
    ("id-space", Case("PUT", "/v1/services/web/instances/%20", VALID, field="id")),
    ("id-trailing-newline", Case("PUT", "/v1/services/web/instances/x-1%0A", VALID, field="id")),
    ("put-service-bad-name", Case("PUT", "/v1/services/bad_name", {"ttl": 5}, field="service")),
    ("put-service-64-chars", Case("PUT", f"/v1/services/{A_64}", {"ttl": 5}, field="service")),
    (
        "put-service-trailing-newline",
        Case("PUT", "/v1/services/web%0A", {"ttl": 5}, field="service"),
    ),
    ("delete-service-bad-name", Case("DELETE", "/v1/services/bad_name", field="service")),
    ("delete-instance-bad-id", Case("DELETE", "/v1/services/web/instances/bad_id", field="id")),
    (
        "delete-instance-bad-service",
        Case("DELETE", "/v1/services/bad_name/instances/web-1", field="service"),
    ),
    ("heartbeat-bad-id", Case("POST", "/v1/services/web/instances/bad_id/heartbeat", field="id")),
    ("get-service-bad-name", Case("GET", "/v1/services/bad_name", field="service")),
    ("get-instance-bad-id", Case("GET", "/v1/services/web/instances/bad_id", field="id")),
    # Unknown things: 404, and still nothing changes.
    (
        "delete-unknown-instance",
        Case("DELETE", "/v1/services/web/instances/nope", status=404, field="id"),
    ),
    ("delete-unknown-service", Case("DELETE", "/v1/services/nope", status=404, field="service")),
    (
        "heartbeat-unknown-instance",
        Case("POST", "/v1/services/web/instances/nope/heartbeat", status=404, field="id"),
    ),
]

METHOD_CASES: list[tuple[str, Case]] = [
    ("post-instance", Case("POST", NEW_ID, VALID, status=405)),
    ("patch-instance", Case("PATCH", EXISTING, {"port": 1}, status=405)),
    ("patch-service", Case("PATCH", "/v1/services/web", {"ttl": 1}, status=405)),
    ("post-service", Case("POST", "/v1/services/fresh", {"ttl": 1}, status=405)),
    ("delete-services-list", Case("DELETE", "/v1/services", status=405)),
    ("put-services-list", Case("PUT", "/v1/services", {"ttl": 1}, status=405)),
    ("post-services-list", Case("POST", "/v1/services", {"ttl": 1}, status=405)),
    ("get-heartbeat", Case("GET", HEARTBEAT, status=405)),
    ("put-heartbeat", Case("PUT", HEARTBEAT, {"load": 1}, status=405)),
    ("delete-healthz", Case("DELETE", "/healthz", status=405)),
]

UNKNOWN_PATH_CASES: list[tuple[str, Case]] = [
    ("root", Case("GET", "/", status=404)),
    ("v1-nothing", Case("GET", "/v1/nothing", status=404)),
    ("v2", Case("PUT", "/v2/services/web/instances/new-1", VALID, status=404)),
    ("extra-segment", Case("PUT", NEW_ID + "/extra", VALID, status=404)),
    ("instances-no-id", Case("PUT", "/v1/services/web/instances", VALID, status=404)),
    ("instances-empty-id", Case("PUT", "/v1/services/web/instances/", VALID, status=404)),
    ("empty-service", Case("PUT", "/v1/services//instances/x-1", VALID, status=404)),
]


def _body_case(method: str, path: str, body: Any, fld: object, status: int) -> Case:
    if isinstance(body, bytes):
        return Case(method, path, raw=body, status=status, field=fld)
    return Case(method, path, body, status=status, field=fld)


BATTERY = (
    [
        pytest.param(_body_case("PUT", path, body, fld, status), id=f"instance-{target}-{name}")
        for target, path in INSTANCE_TARGETS.items()
        for name, body, fld, status in INSTANCE_BODIES
    ]
    + [
        pytest.param(_body_case("PUT", path, body, fld, status), id=f"service-{target}-{name}")
        for target, path in SERVICE_TARGETS.items()
        for name, body, fld, status in SERVICE_BODIES
    ]
    + [
        pytest.param(_body_case("POST", HEARTBEAT, body, fld, status), id=f"heartbeat-{name}")
        for name, body, fld, status in HEARTBEAT_BODIES
    ]
    + [pytest.param(case, id=f"path-{name}") for name, case in PATH_CASES]
    + [pytest.param(case, id=f"method-{name}") for name, case in METHOD_CASES]
    + [pytest.param(case, id=f"unknown-path-{name}") for name, case in UNKNOWN_PATH_CASES]
)

# What the battery watches: every listing and object a bad request could touch, and DNS names.
WATCHED_GETS = [
    "/v1/services",
    "/v1/services/web",
    "/v1/services/fresh",
    EXISTING,
    NEW_ID,
    NEW_SERVICE,
]
WATCHED_DNS = [
    (fqdn("web"), "A"),
    (fqdn("web"), "AAAA"),
    (f"_web._tcp.{DOMAIN}", "SRV"),
    (fqdn("web-1.web"), "A"),
    (fqdn("new-1.web"), "A"),
    (fqdn("x-1.web"), "A"),
    (fqdn("fresh"), "A"),
    (fqdn("fresh-1.fresh"), "A"),
    (fqdn("k"), "A"),
]


def snapshot(server: DnsdiscProcess) -> dict[str, Any]:
    http = {}
    for path in WATCHED_GETS:
        res = server.http("GET", path)
        http[path] = (res.status, res.body)
    dns_view = {}
    for name, rdtype in WATCHED_DNS:
        msg = server.query(name, rdtype, tcp=True)
        dns_view[f"{name}/{rdtype}"] = (
            dns.rcode.to_text(msg.rcode()),
            sorted(
                (r.ttl, dns.rdatatype.to_text(r.rdtype), sorted(x.to_text() for x in r))
                for r in msg.answer
            ),
        )
    return {"http": http, "dns": dns_view}


@pytest.fixture(scope="module")
def battery_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsdiscProcess]:
    with running(tmp_path_factory.mktemp("battery")) as srv:
        srv.register(
            "web",
            "web-1",
            address="10.0.0.1",
            port=8080,
            weight=5,
            tags=["canary"],
            meta={"version": "1"},
            ttl=3600,
        )
        srv.register("web", "web-2", address="2001:db8::2", port=8080)
        assert srv.http("POST", HEARTBEAT, {"load": 0.25}).status == 200
        assert srv.http("PUT", "/v1/services/web", {"policy": "weighted", "ttl": 11}).status == 200
        yield srv


def send(server: DnsdiscProcess, case: Case) -> HttpResult:
    return server.http(case.method, case.path, case.body, raw=case.raw)


@pytest.mark.parametrize("case", BATTERY)
def test_bad_input_is_rejected_and_changes_nothing(
    battery_server: DnsdiscProcess, case: Case
) -> None:
    before = snapshot(battery_server)
    res = send(battery_server, case)
    assert 400 <= res.status < 500, (res.status, res.raw[:300])
    assert_error(res, case.status, case.field)
    assert snapshot(battery_server) == before
    assert battery_server.proc is not None and battery_server.proc.poll() is None


def test_body_of_exactly_64_kib_is_accepted(battery_server: DnsdiscProcess) -> None:
    """The limit is "more than 64 KiB": a body of exactly 65536 bytes is fine."""
    path = "/v1/services/edge/instances/edge-1"
    body = padded({"address": "10.8.8.8", "port": 80}, 64 * 1024)
    assert len(body) == 64 * 1024
    res = battery_server.http("PUT", path, raw=body)
    assert res.status == 201, (res.status, res.raw[:300])
    assert battery_server.addresses(fqdn("edge-1.edge")) == ["10.8.8.8"]
    assert battery_server.http("DELETE", "/v1/services/edge").status == 204


def test_405_names_the_allowed_methods(battery_server: DnsdiscProcess) -> None:
    """RFC 9110 15.5.6: a 405 response MUST carry an Allow header listing the target's methods."""
    for method, path, allowed in (
        ("PATCH", EXISTING, {"GET", "PUT", "DELETE"}),
        ("DELETE", "/v1/services", {"GET"}),
        ("GET", HEARTBEAT, {"POST"}),
    ):
        req = urllib.request.Request(
            f"http://127.0.0.1:{battery_server.http_port}{path}", method=method
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 405
        header = info.value.headers.get("Allow")
        assert header is not None, f"{method} {path}: 405 without an Allow header"
        assert allowed <= {m.strip() for m in header.split(",")}, (method, path, header)


# -- the bearer token -----------------------------------------------------------------------------


def test_token_guards_writes_but_not_reads(tmp_path: Path) -> None:
    good = {"Authorization": "Bearer s3cret"}
    path = "/v1/services/web/instances/web-1"
    with running(tmp_path, "auth", env={"DNSDISC_TOKEN": "s3cret"}) as srv:
        assert srv.token is None  # the client sends only the headers given below
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer "},
            {"Authorization": "Bearer s3cret2"},
            {"Authorization": "s3cret"},
            {"Authorization": "Basic czNjcmV0"},
        ):
            assert_error(srv.http("PUT", path, VALID, headers=headers), 401, "Authorization")
        assert_error(srv.http("PUT", "/v1/services/web", {"ttl": 5}), 401, "Authorization")
        assert_error(srv.http("DELETE", "/v1/services/web"), 401, "Authorization")
        assert srv.http("GET", "/v1/services").body == {"services": []}
        assert rcode(srv, fqdn("web")) == dns.rcode.NXDOMAIN

        created = srv.http("PUT", path, VALID, headers=good)
        assert created.status == 201, created
        assert srv.addresses(fqdn("web-1.web")) == ["10.9.9.9"]

        before = srv.http("GET", path).body
        assert_error(srv.http("PUT", path, with_(port=1)), 401, "Authorization")
        assert_error(srv.http("POST", path + "/heartbeat", {"load": 9}), 401, "Authorization")
        assert_error(srv.http("DELETE", path), 401, "Authorization")
        assert_error(srv.http("DELETE", "/v1/services/web"), 401, "Authorization")
        assert_error(srv.http("PUT", "/v1/services/web", {"ttl": 99}), 401, "Authorization")
        assert srv.http("GET", path).body == before
        assert srv.http("GET", "/v1/services/web").body["ttl"] != 99
        assert srv.addresses(fqdn("web-1.web")) == ["10.9.9.9"]

        # Reads need no token.
        for read in ("/healthz", "/readyz", "/v1/services", "/v1/services/web", path):
            assert srv.http("GET", read).status == 200, read

        beat = srv.http("POST", path + "/heartbeat", {"load": 2}, headers=good)
        assert beat.status == 200 and beat.body["load"] == 2
        assert srv.http("DELETE", path, headers=good).status == 204
        assert rcode(srv, fqdn("web-1.web")) == dns.rcode.NXDOMAIN


# -- read-your-writes under concurrency ----------------------------------------------------------


def test_concurrent_registrations_are_each_visible_at_once(server: DnsdiscProcess) -> None:
    count = 50

    def register_then_resolve(i: int) -> tuple[int, list[str], int, list[str]]:
        iid, address = f"node-{i}", f"10.4.{i // 200}.{i % 200 + 1}"
        res = server.http(
            "PUT", f"/v1/services/web/instances/{iid}", {"address": address, "port": 80}
        )
        seen = server.addresses(fqdn(f"{iid}.web"))
        gone = server.http("DELETE", f"/v1/services/web/instances/{iid}") if i % 5 == 0 else None
        after = server.addresses(fqdn(f"{iid}.web")) if gone else [address]
        return res.status, seen, gone.status if gone else 204, after

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(register_then_resolve, range(count)))

    for i, (status, seen, deleted, after) in enumerate(results):
        address = f"10.4.{i // 200}.{i % 200 + 1}"
        assert status == 201, (i, status)
        assert seen == [address], (i, seen)
        assert deleted == 204, (i, deleted)
        assert after == ([] if i % 5 == 0 else [address]), (i, after)

    kept = sorted(f"10.4.{i // 200}.{i % 200 + 1}" for i in range(count) if i % 5)
    assert sorted(server.addresses(fqdn("web"), tcp=True)) == kept
    assert server.http("GET", "/v1/services/web").body["instance_count"] == len(kept)


# -- static services from zone files -------------------------------------------------------------


def test_static_instances_are_read_only(tmp_path: Path) -> None:
    node = DnsdiscProcess(tmp_path / "static", extra_args=["--zones", str(ROOT / "zones")]).start()
    try:
        svc = node.http("GET", "/v1/services/postgres")
        assert svc.status == 200 and svc.body["static"] is True
        assert sorted(i["id"] for i in svc.body["instances"]) == ["pg-1", "pg-2"]
        before = snapshot_static(node)

        assert_error(
            node.http(
                "PUT", "/v1/services/postgres/instances/pg-1", {"address": "10.0.0.1", "port": 1}
            ),
            409,
        )
        assert_error(node.http("DELETE", "/v1/services/postgres/instances/pg-1"), 409)
        assert_error(node.http("DELETE", "/v1/services/postgres"), 409)
        assert_error(node.http("PUT", "/v1/services/postgres", {"ttl": 1}), 409)
        assert snapshot_static(node) == before
    finally:
        node.stop()


def snapshot_static(node: DnsdiscProcess) -> tuple[Any, ...]:
    return (
        node.http("GET", "/v1/services/postgres").body,
        node.addresses(fqdn("pg-1.postgres")),
        sorted(node.addresses(fqdn("postgres"))),
        node.query(fqdn("postgres")).answer[0].ttl,
    )


def test_numbers_too_big_for_a_float_and_deep_nesting_are_400(server: DnsdiscProcess) -> None:
    # Found in review: these were 500s (OverflowError, RecursionError).
    path = "/v1/services/web/instances/web-1"
    result = server.http(
        "PUT", path, raw=b'{"address": "10.0.0.1", "port": 80, "ttl": 1' + b"0" * 400 + b"}"
    )
    assert result.status == 400 and result.body["field"] == "ttl"
    result = server.http("PUT", path, raw=b"[" * 60000)
    assert result.status == 400 and result.body["field"] == "body"
    assert server.http("GET", path).status == 404
