"""Health with real backends: small HTTP and TCP servers on loopback are registered with active
checks, killed and revived, and the effect is observed through real DNS queries."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.rcode

from tests.support.backends import http_backend
from tests.support.helpers import DnsdiscProcess, free_port, wait_until

INTERVAL = 0.2


@contextmanager
def tcp_backend(port: int) -> Iterator[None]:
    # A listening socket completes TCP handshakes by itself; closing it refuses them.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    try:
        yield
    finally:
        sock.close()


def answered(server: DnsdiscProcess, name: str = "web.svc.internal") -> set[str]:
    msg = server.query(name, "A")
    return {rr.to_text() for rrset in msg.answer for rr in rrset}


def test_http_check_removes_a_dead_backend_and_restores_it(server: DnsdiscProcess) -> None:
    port = free_port()
    fall, rise = 2, 2
    check = {
        "type": "http",
        "path": "/health",
        "interval": INTERVAL,
        "timeout": INTERVAL,
        "fall": fall,
        "rise": rise,
    }
    with http_backend(port):
        server.register("web", "web-1", address="127.0.0.1", port=port, check=check)
        server.register("web", "web-2", address="127.0.0.2", port=port)  # no check: always in
        # A new instance is handed out once its check has passed `rise` times.
        wait_until(lambda: answered(server) == {"127.0.0.1", "127.0.0.2"}, rise * INTERVAL + 1)
        body = server.http("GET", "/v1/services/web/instances/web-1").body
        assert body["health"]["status"] == "passing"
        assert "200" in body["health"]["output"]
        assert body["latency_ms"] is not None and body["latency_ms"] > 0
    died = time.monotonic()
    wait_until(lambda: answered(server) == {"127.0.0.2"}, INTERVAL * fall + 1)
    removal = time.monotonic() - died
    print(
        f"\nHTTP backend killed -> out of DNS answers in {removal:.2f} s (interval {INTERVAL}, fall {fall})"
    )
    body = server.http("GET", "/v1/services/web").body
    web1 = next(i for i in body["instances"] if i["id"] == "web-1")
    assert web1["health"]["status"] == "critical"
    assert "127.0.0.1" in web1["health"]["output"]
    with http_backend(port):
        back = wait_until(lambda: "127.0.0.1" in answered(server), rise * INTERVAL + 1)
        # Not before `rise` successes: the first success alone does not bring it back.
        assert back >= (rise - 1) * INTERVAL * 0.8


def test_tcp_check(server: DnsdiscProcess) -> None:
    port = free_port()
    check = {"type": "tcp", "interval": INTERVAL, "timeout": INTERVAL, "fall": 1, "rise": 1}
    with tcp_backend(port):
        server.register("db", "db-1", address="127.0.0.1", port=port, check=check)
        wait_until(lambda: answered(server, "db.svc.internal") == {"127.0.0.1"}, 2)
    wait_until(lambda: server.query("db.svc.internal", "A").answer == [], INTERVAL + 1)
    # A known service whose instances are all down is NODATA, not NXDOMAIN.
    assert server.query("db.svc.internal", "A").rcode() == dns.rcode.NOERROR
    with tcp_backend(port):
        wait_until(lambda: answered(server, "db.svc.internal") == {"127.0.0.1"}, INTERVAL + 1)


def test_missed_ttl_heartbeat(server: DnsdiscProcess) -> None:
    ttl = 1.0
    server.register("api", "api-1", address="10.0.0.1", port=80, ttl=ttl)
    server.register("api", "api-2", address="10.0.0.2", port=80)
    assert answered(server, "api.svc.internal") == {"10.0.0.1", "10.0.0.2"}
    for _ in range(4):  # heartbeats inside the lease keep it in
        time.sleep(ttl / 2)
        assert server.http("POST", "/v1/services/api/instances/api-1/heartbeat").status == 200
        assert "10.0.0.1" in answered(server, "api.svc.internal")
    last = time.monotonic()
    wait_until(lambda: answered(server, "api.svc.internal") == {"10.0.0.2"}, ttl + 1)
    gone = time.monotonic() - last
    print(f"\nlease of {ttl} s: out of DNS answers {gone:.2f} s after the last heartbeat")
    assert gone >= ttl * 0.9  # not before the lease ran out
    server.http("POST", "/v1/services/api/instances/api-1/heartbeat")
    assert "10.0.0.1" in answered(server, "api.svc.internal")  # revived by its heartbeat


def test_heartbeat_status_and_maintenance(server: DnsdiscProcess) -> None:
    server.register("api", "api-1", address="10.0.0.1", port=80, ttl=30)
    server.register("api", "api-2", address="10.0.0.2", port=80)
    beat = "/v1/services/api/instances/api-1/heartbeat"
    server.http("POST", beat, {"status": "critical"})
    assert answered(server, "api.svc.internal") == {"10.0.0.2"}
    server.http("POST", beat, {"status": "warning"})
    assert answered(server, "api.svc.internal") == {"10.0.0.1", "10.0.0.2"}
    srv = server.query("api.svc.internal", "SRV")
    weights = {rr.target.to_text(): rr.weight for rrset in srv.answer for rr in rrset}
    assert weights == {"api-1.api.svc.internal.": 25, "api-2.api.svc.internal.": 100}
    maint = "/v1/services/api/instances/api-2/maintenance"
    result = server.http("PUT", maint, {"enabled": True, "reason": "kernel upgrade"})
    assert result.status == 200 and result.body["health"]["status"] == "maintenance"
    assert answered(server, "api.svc.internal") == {"10.0.0.1"}
    assert server.http("PUT", maint, {"enabled": "yes"}).body["field"] == "enabled"
    server.http("PUT", maint, {"enabled": False})
    assert answered(server, "api.svc.internal") == {"10.0.0.1", "10.0.0.2"}
    assert server.http("POST", beat, {"status": "dead"}).body["field"] == "status"


def test_deregister_after(server: DnsdiscProcess) -> None:
    server.register("api", "api-1", address="10.0.0.1", port=80, ttl=0.5, deregister_after=0.5)
    wait_until(lambda: server.http("GET", "/v1/services/api/instances/api-1").status == 404, 3)
    assert server.http("GET", "/v1/services/api").body["instance_count"] == 0


def test_deregister_after_removes_an_instance_whose_check_never_passed(
    server: DnsdiscProcess,
) -> None:
    check = {"type": "tcp", "interval": INTERVAL, "timeout": INTERVAL, "fall": 1, "rise": 1}
    port = free_port()  # nothing ever listens there
    registered = time.monotonic()
    server.register("db", "db-1", address="127.0.0.1", port=port, check=check, deregister_after=1)
    assert server.http("GET", "/v1/services/db/instances/db-1").status == 200
    wait_until(lambda: server.http("GET", "/v1/services/db/instances/db-1").status == 404, 5)
    assert time.monotonic() - registered >= 0.9


def test_restart_gives_leases_a_full_ttl_of_grace(tmp_path: Path) -> None:
    node = DnsdiscProcess(tmp_path / "node").start()
    try:
        node.register("api", "api-1", address="10.0.0.1", port=80, ttl=2)
        time.sleep(1.5)  # most of the lease used up before the crash
        node.kill()
        node.start()
        restarted = time.monotonic()
        assert answered(node, "api.svc.internal") == {"10.0.0.1"}
        time.sleep(1.0)  # the old lease would have run out by now; the new one has not
        assert answered(node, "api.svc.internal") == {"10.0.0.1"}
        wait_until(lambda: not answered(node, "api.svc.internal"), 3)
        assert time.monotonic() - restarted >= 1.8
    finally:
        node.stop()


def shares(server: DnsdiscProcess, n: int, name: str = "web.svc.internal") -> Counter[str]:
    out: Counter[str] = Counter()
    for _ in range(n):
        msg = server.query(name, "A")
        out[msg.answer[0][0].to_text()] += 1
    return out


def test_slow_start_ramps_a_recovered_instance(server: DnsdiscProcess) -> None:
    for n in (1, 2):
        server.register("web", f"web-{n}", address=f"10.0.0.{n}", port=80, ttl=60)
    server.http(
        "PUT",
        "/v1/services/web",
        {"policy": "weighted", "max_answers": 1, "ttl": 0, "slow_start": 6},
    )
    beat = "/v1/services/web/instances/web-2/heartbeat"
    server.http("POST", beat, {"status": "critical"})
    server.http("POST", beat, {"status": "passing"})
    early = shares(server, 400)
    # Just recovered: a small share of the weight (naive: half of the answers).
    assert early["10.0.0.2"] / 400 < 0.2, early
    time.sleep(6.2)
    late = shares(server, 400)
    assert 0.4 < late["10.0.0.2"] / 400 < 0.6, late


def test_flapping_instance_is_held_out_until_stable(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("health: {flap_window: 10, flap_threshold: 4, flap_stable: 1.5}\n")
    node = DnsdiscProcess(tmp_path / "node", extra_args=["--config", str(conf)]).start()
    try:
        node.register("web", "web-1", address="10.0.0.1", port=80, ttl=60)
        node.register("web", "web-2", address="10.0.0.2", port=80, ttl=60)
        beat = "/v1/services/web/instances/web-1/heartbeat"
        for status in ("critical", "passing", "critical", "passing"):
            node.http("POST", beat, {"status": status})
        # Passing now, but it changed 4 times in 10 s: held out (naive: back at once).
        assert answered(node) == {"10.0.0.2"}
        released = wait_until(lambda: answered(node) == {"10.0.0.1", "10.0.0.2"}, 3)
        assert released >= 1.0
    finally:
        node.stop()


def test_fail_open_below_the_panic_threshold(server: DnsdiscProcess) -> None:
    for n in range(1, 5):
        server.register("web", f"web-{n}", address=f"10.0.0.{n}", port=80, ttl=60)
    server.http("PUT", "/v1/services/web", {"policy": "round_robin", "panic_threshold": 0.5})
    for n in (2, 3, 4):
        server.http("POST", f"/v1/services/web/instances/web-{n}/heartbeat", {"status": "critical"})
    # 1 of 4 healthy, below 50%: all four are handed out, the healthy one first (naive: one).
    for _ in range(5):
        msg = server.query("web.svc.internal", "A")
        addresses = [rr.to_text() for rr in msg.answer[0]]
        assert addresses[0] == "10.0.0.1" and sorted(addresses) == [
            f"10.0.0.{n}" for n in range(1, 5)
        ]
    srv = server.query("web.svc.internal", "SRV")
    prio = {rr.target.to_text().split(".")[0]: rr.priority for rrset in srv.answer for rr in rrset}
    assert prio["web-1"] < min(prio["web-2"], prio["web-3"], prio["web-4"])
    server.http("POST", "/v1/services/web/instances/web-2/heartbeat", {"status": "passing"})
    # 2 of 4 healthy is not below 50%: only the healthy.
    assert answered(server) == {"10.0.0.1", "10.0.0.2"}


def test_state_changes_are_counted_in_metrics(server: DnsdiscProcess) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    server.register("api", "api-1", address="10.0.0.1", port=80, ttl=30)
    server.register("api", "api-2", address="10.0.0.2", port=80)
    server.http("POST", "/v1/services/api/instances/api-1/heartbeat", {"status": "critical"})
    result = server.http("GET", "/metrics")
    assert result.status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(result.raw.decode())
        for s in family.samples
    }
    assert samples[("dnsdisc_health_transitions_total", (("state", "critical"),))] == 1
    assert samples[("dnsdisc_instances", (("service", "api"), ("state", "critical")))] == 1
    assert samples[("dnsdisc_instances", (("service", "api"), ("state", "passing")))] == 1
    assert samples[("dnsdisc_dns_internal_errors_total", ())] == 0


def test_static_instances_from_zone_files_are_checked(tmp_path: Path) -> None:
    live, dead = free_port(), free_port()
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "db.yaml").write_text(
        "services:\n"
        "  db:\n"
        "    instances:\n"
        f"      db-1: {{address: 127.0.0.1, port: {live}, check: {{type: tcp, interval: 0.2}}}}\n"
        f"      db-2: {{address: 127.0.0.2, port: {dead}, check: {{type: tcp, interval: 0.2}}}}\n"
    )
    with tcp_backend(live):
        node = DnsdiscProcess(tmp_path / "node", extra_args=["--zones", str(zones)]).start()
        try:
            wait_until(lambda: answered(node, "db.svc.internal") == {"127.0.0.1"}, 2)
            body = node.http("GET", "/v1/services/db").body
            assert [i["health"]["status"] for i in body["instances"]] == ["passing", "critical"]
        finally:
            node.stop()
