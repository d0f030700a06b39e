"""The Consul-compatible subset (#20) with Consul's own clients, unchanged: py-consul (PyPI) and
node-consul (npm, on Debian's nodejs) register with a TTL check, pass it, watch the passing
instances with blocking queries, warn, enter maintenance and deregister; what they did is then
seen over DNS. The requests Prometheus's Consul discovery makes (Go's ``wait=120000ms``,
``stale``, ``dc``) block and carry the headers Go's client needs. Tokens come in
``X-Consul-Token`` or ``?token=``. Bad bodies and parameters get a 400 naming the field, and
nothing is stored."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest

from tests.support.backends import http_backend
from tests.support.frontends import DOMAIN
from tests.support.helpers import (
    LOOPBACK_CHECKS,
    ROOT,
    DnsdiscProcess,
    free_port,
    metric,
    require_tool,
    running,
    wait_until,
)

TOKEN = "consul-test-secret"
JS_CLIENT = ROOT / "tests" / "consul-js"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DnsdiscProcess]:
    """dnsdisc with a token: anyone may read, only the token may write (http.token)."""
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(f"http:\n  token: {TOKEN}\n{LOOPBACK_CHECKS}")
    with running(tmp_path, extra_args=["--config", str(config)], token=TOKEN) as srv:
        yield srv


def client(server: DnsdiscProcess, token: str | None = TOKEN) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=server.http_port, token=token)


def srv_targets(server: DnsdiscProcess, service: str) -> list[str]:
    return sorted(server.addresses(f"_{service}._tcp.{DOMAIN}", "SRV"))


def test_py_consul_registers_passes_watches_and_deregisters(server: DnsdiscProcess) -> None:
    c = client(server)
    assert c.agent.self()["Config"]["Datacenter"] == "dc1"
    assert c.agent.service.register(
        "web", service_id="web-1", address="127.0.0.1", port=8080, tags=["v1"],
        meta={"version": "1.2"}, check=consul.Check.ttl("30s"), weights={"Passing": 5, "Warning": 1},
    )  # fmt: skip
    # Consul starts a TTL check critical: not passing, not in DNS, until its first pass.
    index, passing = c.health.service("web", passing=True)
    assert passing == [] and int(index) > 0
    assert srv_targets(server, "web") == []
    native = server.http("GET", "/v1/services/web/instances/web-1").body
    assert native["weight"] == 5 and native["ttl"] == 30 and native["meta"] == {"version": "1.2"}

    woke: dict[str, object] = {}

    def watch() -> None:
        started = time.monotonic()
        woke["result"] = c.health.service("web", passing=True, index=index, wait="10s")
        woke["after"] = time.monotonic() - started

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.3)  # parked
    passed_at = time.monotonic()
    c.agent.check.ttl_pass("service:web-1", "ready")
    watcher.join(15)
    new_index, entries = woke["result"]  # type: ignore[misc]
    assert int(new_index) > int(index)
    assert [e["Service"]["ID"] for e in entries] == ["web-1"]
    assert entries[0]["Node"]["Node"] and entries[0]["Service"]["Port"] == 8080
    assert entries[0]["Checks"][0]["Status"] == "passing"
    assert time.monotonic() - passed_at < 2.0  # woke by the change, not the 10 s wait
    assert srv_targets(server, "web") == [f"0 5 8080 web-1.web.{DOMAIN}."]

    # warn: still handed out (as warning), no longer in ?passing
    c.agent.check.ttl_warn("service:web-1")
    assert c.health.service("web", passing=True)[1] == []
    assert [ch["Status"] for ch in c.health.service("web")[1][0]["Checks"]] == ["warning"]

    assert c.agent.service.maintenance("web-1", "true", "kernel upgrade")
    checks = c.health.service("web")[1][0]["Checks"]
    assert ("_service_maintenance:web-1", "critical", "kernel upgrade") in [
        (ch["CheckID"], ch["Status"], ch["Notes"]) for ch in checks
    ]
    assert srv_targets(server, "web") == []
    assert c.agent.service.maintenance("web-1", "false")
    c.agent.check.ttl_pass("service:web-1")
    assert len(srv_targets(server, "web")) == 1

    assert c.catalog.services()[1] == {"web": ["v1"]}
    assert c.catalog.service("web")[1][0]["ServiceAddress"] == "127.0.0.1"
    assert c.agent.service.deregister("web-1")
    assert c.catalog.services()[1] == {}
    assert server.http("GET", "/v1/services/web").body["instance_count"] == 0


def test_node_consul_client_does_the_same(server: DnsdiscProcess) -> None:
    node = require_tool("node")
    if not (JS_CLIENT / "node_modules" / "consul").is_dir():
        pytest.fail("tests/consul-js/node_modules is missing: scripts/test.sh runs npm ci there")
    run = subprocess.run(
        [node, "client.js", str(server.http_port), TOKEN],
        cwd=JS_CLIENT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr + run.stdout
    steps = {s["step"]: s for s in map(json.loads, run.stdout.splitlines())}
    assert steps["self"]["dc"] == "dc1"
    assert steps["registered"]["passing"] == 0  # TTL checks start critical
    assert steps["watch-first"]["ids"] == []
    assert steps["watch-pass"]["ids"] == ["shop-1"] and steps["watch-pass"]["port"] == 8081
    assert steps["watch-pass"]["meta"] == {"team": "cart"}
    assert steps["watch-pass"]["ms"] < 1000 and steps["watch-warn"]["ms"] < 1000
    assert steps["watch-warn"]["ids"] == []  # warning is not passing
    assert steps["warn"]["checks"] == ["warning"]
    assert ["_service_maintenance:shop-1", "critical", "upgrade"] in steps["maintenance"]["checks"]
    assert steps["catalog"]["services"] == {"shop": ["v2"]}
    assert steps["bad"]["status"] == 400 and steps["bad"]["body"]["field"] == "Name"
    assert steps["deregistered"]["services"] == {}
    assert srv_targets(server, "shop") == []


def _raw(
    server: DnsdiscProcess, path: str, timeout: float = 30
) -> tuple[int, dict[str, str], object]:
    try:
        with urllib.request.urlopen(f"{server.http_url}{path}", timeout=timeout) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def test_prometheus_style_blocking_reads(server: DnsdiscProcess) -> None:
    """What Prometheus's consul_sd asks (Go's api client): agent/self for the datacenter, then
    blocking catalog/services and health/service with ``wait=120000ms&stale&dc=``."""
    status, _, body = _raw(server, "/v1/agent/self")
    dc = body["Config"]["Datacenter"]  # type: ignore[index]
    server.register("api", "a1", address="10.0.0.1", port=9100, tags=["prod"])
    status, headers, services = _raw(server, f"/v1/catalog/services?stale=&dc={dc}")
    assert status == 200 and services == {"api": ["prod"]}
    index = int(headers["X-Consul-Index"])
    assert index > 0 and headers["X-Consul-LastContact"] == "0"
    assert headers["X-Consul-KnownLeader"] == "true"

    got: dict[str, object] = {}

    def watch() -> None:
        started = time.monotonic()
        got["reply"] = _raw(server, f"/v1/catalog/services?index={index}&wait=120000ms&stale=")
        got["after"] = time.monotonic() - started

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.3)
    server.register("db", "d1", address="10.0.0.2", port=5432)
    watcher.join(10)
    _, headers, services = got["reply"]  # type: ignore[misc]
    assert int(headers["X-Consul-Index"]) > index and set(services) == {"api", "db"}

    _, headers, entries = _raw(server, f"/v1/health/service/api?dc={dc}&stale=&tag=prod")
    assert entries[0]["Node"] is not None and entries[0]["Service"]["Address"] == "10.0.0.1"  # type: ignore[index]
    api_index = int(headers["X-Consul-Index"])
    # A wait that ends returns the same index (nothing about api changed).
    started = time.monotonic()
    _, headers, _ = _raw(server, f"/v1/health/service/api?index={api_index}&wait=300ms")
    assert int(headers["X-Consul-Index"]) == api_index and time.monotonic() - started >= 0.3
    assert _raw(server, "/v1/health/service/api?tag=canary")[2] == []
    assert _raw(server, "/v1/health/service/api?dc=eu-west")[0] == 404


def test_tokens_in_consul_header_and_query(server: DnsdiscProcess) -> None:
    body = json.dumps({"Name": "pay", "ID": "p1", "Address": "10.0.0.3", "Port": 443}).encode()

    def put(path: str, headers: dict[str, str]) -> tuple[int, object]:
        req = urllib.request.Request(f"{server.http_url}{path}", data=body, method="PUT")
        for k, v in headers.items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, None
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    # No Content-Type, as Consul's clients send it.
    status, error = put("/v1/agent/service/register", {})
    assert status == 401
    status, error = put("/v1/agent/service/register", {"X-Consul-Token": "wrong"})
    assert status == 401 and error["field"] == "X-Consul-Token"  # type: ignore[index]
    assert put("/v1/agent/service/register", {"X-Consul-Token": TOKEN})[0] == 200
    assert put(f"/v1/agent/service/register?token={TOKEN}", {})[0] == 200
    assert client(server, token=None).catalog.service("pay")[1][0]["ServiceID"] == "p1"


BAD_REGISTRATIONS = [
    ({"Name": "web", "ID": "web/1", "Port": 80, "Address": "10.0.0.1"}, "ID"),
    ({"Name": "web.api", "Port": 80, "Address": "10.0.0.1"}, "Name"),
    ({"Name": "web", "Port": 80, "Address": "10.0.0.1", "Colour": "red"}, "Colour"),
    ({"Name": "web", "Port": 80, "Address": "10.0.0.1", "Tags": ["a b"]}, "Tags"),
    ({"Name": "web", "Address": "10.0.0.1"}, "Port"),
    ({"Name": "web", "Port": 80, "Address": "db.example"}, "Address"),
    ({"Name": "web", "Port": 80, "Address": "10.0.0.1", "Connect": {"Native": True}}, "Connect"),
    ({"Name": "web", "Port": 80, "Address": "10.0.0.1", "Check": {"TTL": "soon"}}, "Check.TTL"),
    ({"Name": "web", "Port": 80, "Address": "10.0.0.1", "Check": {"Script": "x"}}, "Check.Script"),
    ({"Name": "web", "Port": 80, "Address": "10.0.0.1", "Check": {"HTTP": "http://db.example/"}},
     "Check.HTTP"),
    # Its own target is held to health.check_networks (loopback only in this server).
    ({"Name": "web", "Port": 80, "Address": "127.0.0.1", "Check": {"HTTP": "http://10.9.9.9/"}},
     "Check"),
    ({"name": "web", "port": 80, "address": "10.0.0.1", "checks": [{"ttl": "5s"}, {"ttl": "9s"}]},
     "Checks"),
    ({"Name": "web", "Port": 80, "Address": "10.0.0.1", "Weights": {"Passing": 0}},
     "Weights.Passing"),
]  # fmt: skip


def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(server: DnsdiscProcess) -> None:
    for body, fld in BAD_REGISTRATIONS:
        result = server.http("PUT", "/v1/agent/service/register", body)
        assert result.status == 400 and result.body["field"] == fld, (body, result)
    assert server.http("GET", "/v1/services").body["services"] == []
    for path, fld in (
        ("/v1/health/service/web?index=1&wait=abc", "wait"),
        ("/v1/health/service/web?index=-1", "index"),
        ("/v1/catalog/services?filter=Service==web", "filter"),
        ("/v1/health/service/web?passing=maybe", "passing"),
    ):
        status, _, error = _raw(server, path)
        assert status == 400 and error["field"] == fld, (path, error)  # type: ignore[index]
    assert server.http("PUT", "/v1/agent/check/pass/service:nobody").status == 404
    server.register("web", "s1", address="10.0.0.1", port=80)  # no TTL
    result = server.http("PUT", "/v1/agent/check/pass/service:s1")
    assert result.status == 400 and result.body["field"] == "check_id"
    result = server.http("PUT", "/v1/agent/check/update/service:s1", {"Output": "no status"})
    assert result.status == 400 and result.body["field"] == "Status"
    result = server.http("PUT", "/v1/agent/service/maintenance/s1?enable=maybe")
    assert result.status == 400 and result.body["field"] == "enable"
    server.register("db", "s1", address="10.0.0.2", port=80)  # the same ID in two services
    result = server.http("PUT", "/v1/agent/service/deregister/s1")
    assert result.status == 409 and result.body["field"] == "service_id"
    assert server.http("GET", "/v1/services").body["services"][1]["instance_count"] == 1


def test_an_http_check_registered_the_consul_way_is_run(server: DnsdiscProcess) -> None:
    port = free_port()
    with http_backend(port):
        c = client(server)
        check = consul.Check.http(f"http://127.0.0.1:{port}/health", "100ms", timeout="50ms")
        assert c.agent.service.register(
            "site", service_id="s1", address="127.0.0.1", port=port, check=check
        )
        native = server.http("GET", "/v1/services/site/instances/s1").body
        assert native["check"]["type"] == "http" and native["check"]["path"] == "/health"
        assert native["check"]["interval"] == 0.1

        def passing() -> bool:
            return len(c.health.service("site", passing=True)[1]) == 1

        wait_until(passing, 5)
        assert c.health.service("site")[1][0]["Checks"][0]["Type"] == "http"
        # Each run's lateness against its due time is measured.
        assert metric(server, "dnsdisc_health_check_delay_seconds_count") >= 1


def test_a_fresh_server_holds_index_1_and_an_open_one_ignores_tokens(tmp_path: Path) -> None:
    with running(tmp_path, "open") as server:  # no token configured: Consul with ACLs off
        _, headers, _ = _raw(server, "/v1/catalog/services")
        assert headers["X-Consul-Index"] == "1"
        started = time.monotonic()
        _raw(server, "/v1/catalog/services?index=1&wait=400ms")
        # Index 1 is what the server showed: the read waits instead of spinning.
        assert time.monotonic() - started >= 0.4
        c = client(server, token="whatever-the-client-was-given")
        assert c.agent.service.register("api", service_id="a1", address="10.0.0.1", port=80)
        assert [e["ServiceID"] for e in c.catalog.service("api")[1]] == ["a1"]


ACL = """\
acl:
  tokens:
    - name: team
      secret_sha256: "{team}"
      rules: [{{services: "team*", access: write}}]
    - name: ops
      secret_sha256: "{ops}"
      rules: [{{services: "*", access: write}}]
"""


def test_what_the_caller_may_not_read_stays_unseen(tmp_path: Path) -> None:
    import hashlib

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    config = tmp_path / "acl.yaml"
    config.write_text(ACL.format(team=sha("team-secret"), ops=sha("ops")))
    args = ["--config", str(config), "--storage", "memory"]
    with running(tmp_path, "acl", extra_args=args, loopback_checks=False, token="ops") as server:
        server.register("web", "w1", address="10.0.0.2", port=80)
        server.register("web", "x", address="10.0.0.3", port=80)
        server.register("teamsvc", "x", address="10.0.0.1", port=1)
        # w1 is web's, which team may not read: "not found", and no service named.
        status, error = _put_as(server, "/v1/agent/service/deregister/w1", "team-secret")
        assert status == 404 and "web" not in json.dumps(error)
        # x is in web and teamsvc; team sees only its own: no 409, and its own goes.
        assert _put_as(server, "/v1/agent/service/deregister/x", "team-secret")[0] == 200
        assert server.http("GET", "/v1/services/web/instances/x").status == 200
        assert server.http("GET", "/v1/services/teamsvc/instances/x").status == 404
        server.register("teamsvc", "x", address="10.0.0.1", port=1)
        keys = set(client(server, token="ops").agent.services())
        assert {"w1", "web/x", "teamsvc/x"} <= keys


def _put_as(server: DnsdiscProcess, path: str, token: str) -> tuple[int, object]:
    req = urllib.request.Request(f"{server.http_url}{path}", data=b"", method="PUT")
    req.add_header("X-Consul-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
