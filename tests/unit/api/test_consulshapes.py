"""Consul's registration body read into an Instance (keys in any case, Go durations, one check),
and Go's duration spelling."""

from __future__ import annotations

import pytest

from dnsdisc.api.consulshapes import registration
from dnsdisc.errors import ValidationError
from dnsdisc.values import go_duration


def test_go_durations() -> None:
    assert go_duration("10s", "f") == 10
    assert go_duration("1m30s", "f") == 90
    assert go_duration("120000ms", "f", 0, 1e9) == 120
    assert go_duration("1.5h", "f") == 5400
    assert go_duration("0", "f") == 0
    for bad in ("", "10", "s", "10 s", "5d", "1m-3s", 10, None, "1e3s"):
        with pytest.raises(ValidationError):
            go_duration(bad, "f")


def test_keys_in_any_case_and_snake_case_map_to_one_instance() -> None:
    go_style = {
        "Name": "web", "ID": "web-1", "Address": "10.0.0.1", "Port": 80, "Tags": ["v1"],
        "Weights": {"Passing": 7, "Warning": 1},
        "Check": {"TTL": "15s", "DeregisterCriticalServiceAfter": "1m"},
    }  # fmt: skip
    py_style = {
        "name": "web", "id": "web-1", "address": "10.0.0.1", "port": 80, "tags": ["v1"],
        "weights": {"passing": 7, "warning": 1},
        "checks": [{"ttl": "15s", "deregister_critical_service_after": "1m"}],
        "enable_tag_override": False,
    }  # fmt: skip
    a, b = registration(go_style, "127.0.0.1"), registration(py_style, "127.0.0.1")
    assert a.instance == b.instance
    inst = a.instance
    assert (inst.weight, inst.ttl, inst.deregister_after, inst.tags) == (7, 15, 60, ("v1",))
    assert a.initial_status == "critical" and a.check_id == "service:web-1"
    assert b.check_id == "service:web-1:1"


def test_http_check_and_defaults() -> None:
    reg = registration(
        {"Name": "api", "Port": 8080,
         "Check": {"HTTP": "http://127.0.0.1:8081/ready?deep=1", "Interval": "2s",
                   "Timeout": "500ms", "SuccessBeforePassing": 2, "Status": "passing"}},
        "127.0.0.1",
    )  # fmt: skip
    inst = reg.instance
    assert inst.id == "api" and inst.address == "127.0.0.1" and inst.weight == 1
    assert inst.check is not None
    assert (inst.check.type, inst.check.port, inst.check.path) == ("http", 8081, "/ready?deep=1")
    assert (inst.check.interval, inst.check.timeout, inst.check.rise) == (2, 0.5, 2)
    assert reg.initial_status is None  # an active check starts as dnsdisc's checks do


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Name": "web", "Name_": "x", "Port": 1, "Address": "10.0.0.1"}, "Name"),
        ({"Name": "web", "Port": 1, "Address": "10.0.0.1", "Kind": "connect-proxy"}, "Kind"),
        ({"Name": "web", "Port": 1, "Address": "10.0.0.1", "Check": {"TCP": "10.0.0.1"}},
         "Check.TCP"),
        ({"Name": "web", "Port": 1, "Address": "10.0.0.1", "Check": {"HTTP": "ftp://10.0.0.1/"}},
         "Check.HTTP"),
        ({"Name": "web", "Port": 1, "Address": "10.0.0.1", "Check": {"HTTP": "http://db.example/"}},
         "Check.HTTP"),
        ({"Name": "web", "Port": 1, "Address": "10.0.0.1",
          "Checks": [{"TTL": "5s"}, {"TCP": "10.0.0.1:1"}]}, "Checks"),
        ({"Name": "web", "Port": 1, "Address": "10.0.0.1", "Check": {"TCP": "10.0.0.1:1",
          "Method": "POST"}}, "Check.Method"),
        ({"Name": "web", "Port": 1, "Address": "10.0.0.1", "Check": {"TTL": "5s", "HTTP": "x"}},
         "Check"),
        ({"Name": "web", "Port": 1, "Address": "10.0.0.1",
          "Check": {"TTL": "5s", "CheckID": "my-check"}}, "Check.CheckID"),
        ({"Name": "web", "Port": 1, "Address": "10.0.0.1", "Meta": {"a": 1}}, "Meta"),
        ({"Name": "web", "Port": 1, "Address": ""}, "Address"),
    ],
)  # fmt: skip
def test_bad_registrations_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        registration(body, "")
    assert info.value.field == field


def test_consul_check_kinds_map_onto_dnsdisc_checks() -> None:
    reg = registration(
        {"Name": "api", "ID": "a1", "Address": "10.0.0.1", "Port": 8443, "Checks": [
            {"HTTP": "https://10.0.0.1:8443/ready", "TLSSkipVerify": True, "Method": "HEAD",
             "Header": {"X-Probe": ["dnsdisc", "v1"]}, "Interval": "5s"},
            {"TCP": "192.0.2.7:9000", "Interval": "10s"},
            {"GRPC": "10.0.0.1:9090/api.v1", "GRPCUseTLS": True},
            {"UDP": "10.0.0.1:53"},
            {"AliasService": "db"},
        ]},
        "",
    )  # fmt: skip
    checks = reg.instance.checks
    assert [c.id for c in checks] == ["check-1", "check-2", "check-3", "check-4", "check-5"]
    https, tcp, grpc, udp, alias = checks
    assert (https.type, https.method, https.path, https.tls_skip_verify) == (
        "https", "HEAD", "/ready", True,
    )  # fmt: skip
    assert dict(https.headers) == {"X-Probe": "dnsdisc, v1"} and https.interval == 5
    assert (tcp.type, tcp.address, tcp.port) == ("tcp", "192.0.2.7", 9000)  # its own target
    assert (grpc.type, grpc.grpc_service, grpc.tls, grpc.port) == ("grpc", "api.v1", True, 9090)
    assert grpc.address is None  # the instance's own address
    assert (udp.type, udp.port) == ("udp", 53)
    assert (alias.type, alias.alias_service) == ("alias", "db")
    assert reg.initial_status is None
