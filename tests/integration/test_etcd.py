"""Several dnsdisc nodes on one real 3-member etcd cluster (Debian's etcd-server), loopback only."""

from __future__ import annotations

import http.server
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dnsdisc.config.load import from_mapping
from tests.support.etcdcluster import EtcdCluster, etcd_post
from tests.support.etcdcluster import etcd_node as node
from tests.support.helpers import (
    DnsdiscProcess,
    console_steps,
    end_process,
    free_port,
    readme_block,
    require_tool,
    wait_for,
)

NAME = "web.svc.internal"


@pytest.fixture
def pair(tmp_path: Path, etcd: EtcdCluster) -> Iterator[tuple[DnsdiscProcess, DnsdiscProcess]]:
    a = node(tmp_path, "a", etcd).start()
    try:
        b = node(tmp_path, "b", etcd).start()
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def addresses(n: DnsdiscProcess, name: str = NAME) -> list[str]:
    # Over TCP: a UDP answer shows at most dns.udp_answer_limit (16) records.
    return sorted(n.addresses(name, timeout=1.0, tcp=True))


def metric(n: DnsdiscProcess, name: str) -> float:
    for line in n.http("GET", "/metrics").raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


def test_a_registration_on_a_is_answered_by_b_and_the_time_is_measured(
    pair: tuple[DnsdiscProcess, DnsdiscProcess],
) -> None:
    a, b = pair
    times = []
    for i in range(20):
        a.register("web", f"web-{i}", address=f"10.1.0.{i + 1}", port=80)
        t0 = time.perf_counter()
        # A's 2xx came after A's own memory had it: no waiting on A.
        assert f"10.1.0.{i + 1}" in addresses(a)
        wait_for(lambda i=i: f"10.1.0.{i + 1}" in addresses(b), step=0.001)
        times.append((time.perf_counter() - t0) * 1000)
    print(
        f"\npropagation A->B over {len(times)} registrations: median "
        f"{statistics.median(times):.1f} ms, max {max(times):.1f} ms"
    )
    assert addresses(a) == addresses(b) and len(addresses(b)) == 20
    # Service settings are keys too: set on B, seen on A.
    assert b.http("PUT", "/v1/services/web", {"ttl": 42}).status == 200
    wait_for(lambda: a.http("GET", "/v1/services/web").body["ttl"] == 42)
    # A's DNS workers follow A's memory a moment later (only the node that took a write holds
    # its 2xx until its workers have it).
    wait_for(lambda: a.query(NAME).answer[0].ttl == 42)
    # A deregistration on B disappears from A.
    assert b.http("DELETE", "/v1/services/web/instances/web-0").status == 204
    wait_for(lambda: "10.1.0.1" not in addresses(a))
    assert b.http("DELETE", "/v1/services/web").status == 204
    wait_for(lambda: a.http("GET", "/v1/services/web").status == 404)
    wait_for(lambda: a.query(NAME).rcode() == 3)  # NXDOMAIN


def test_heartbeats_on_either_node_renew_the_etcd_lease_and_expiry_removes_it_everywhere(
    pair: tuple[DnsdiscProcess, DnsdiscProcess],
) -> None:
    a, b = pair
    a.register("web", "leased", address="10.2.0.1", port=80, ttl=2)
    a.register("web", "kept", address="10.2.0.2", port=80)
    wait_for(lambda: addresses(b) == ["10.2.0.1", "10.2.0.2"])
    last = time.monotonic()
    for i in range(8):  # 4 s of heartbeats, alternating nodes: twice the 2 s lease
        n = a if i % 2 else b
        assert n.http("POST", "/v1/services/web/instances/leased/heartbeat", {}).status == 200
        last = time.monotonic()
        time.sleep(0.5)
    assert addresses(a) == addresses(b) == ["10.2.0.1", "10.2.0.2"]
    wait_for(lambda: addresses(a) == ["10.2.0.2"] and addresses(b) == ["10.2.0.2"], timeout=8)
    gone_after = time.monotonic() - last
    assert 1.5 < gone_after < 8, gone_after  # not before the lease ran out
    print(f"\nlease expiry: gone from both nodes {gone_after:.2f} s after the last heartbeat")
    assert 1.0 < gone_after < 8, gone_after  # not before the lease ran out
    for n in (a, b):
        assert n.http("GET", "/v1/services/web/instances/leased").status == 404
    reply = b.http("POST", "/v1/services/web/instances/leased/heartbeat", {})
    assert reply.status == 404 and reply.body["field"] == "id"


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_one_node_runs_the_checks_and_every_node_gets_the_result(
    tmp_path: Path, pair: tuple[DnsdiscProcess, DnsdiscProcess]
) -> None:
    a, b = pair
    wait_for(lambda: metric(a, "dnsdisc_health_checker") + metric(b, "dnsdisc_health_checker"))
    assert metric(a, "dnsdisc_health_checker") + metric(b, "dnsdisc_health_checker") == 1
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    port = srv.server_address[1]
    check = {"type": "http", "path": "/", "interval": 0.3, "timeout": 0.3, "rise": 1, "fall": 1}
    a.register("web", "checked", address="127.0.0.1", port=port, check=check)
    # Nobody listens yet: critical (awaiting its first check) everywhere.
    for n in (a, b):
        state = n.http("GET", "/v1/services/web/instances/checked").body["health"]
        assert state["status"] == "critical"
    assert addresses(a) == addresses(b) == []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        wait_for(lambda: addresses(a) == addresses(b) == ["127.0.0.1"])
        for n in (a, b):
            body = n.http("GET", "/v1/services/web/instances/checked").body["health"]
            assert body["status"] == "passing" and "HTTP GET" in body["output"]
    finally:
        srv.shutdown()
        srv.server_close()
    wait_for(lambda: addresses(a) == addresses(b) == [])
    # Maintenance set on B is a shared write: A takes the instance out too.
    b.register("web", "plain", address="10.3.0.1", port=80)
    wait_for(lambda: addresses(a) == ["10.3.0.1"])
    path = "/v1/services/web/instances/plain/maintenance"
    assert b.http("PUT", path, {"enabled": True, "reason": "patching"}).status == 200
    assert addresses(b) == []
    wait_for(lambda: addresses(a) == [])


def test_checks_move_to_the_other_node_when_the_checker_stops(
    tmp_path: Path, pair: tuple[DnsdiscProcess, DnsdiscProcess]
) -> None:
    a, b = pair
    wait_for(lambda: metric(a, "dnsdisc_health_checker") + metric(b, "dnsdisc_health_checker"))
    checker, other = (a, b) if metric(a, "dnsdisc_health_checker") else (b, a)
    checker.kill()  # no lease revocation: the election lease has to run out
    t0 = time.monotonic()
    wait_for(lambda: metric(other, "dnsdisc_health_checker") == 1, timeout=10)
    print(f"\nchecker failover after SIGKILL: {time.monotonic() - t0:.2f} s")


def test_killing_the_etcd_leader_keeps_registrations_and_answers_going(
    etcd: EtcdCluster, pair: tuple[DnsdiscProcess, DnsdiscProcess]
) -> None:
    a, b = pair
    a.register("web", "before", address="10.4.0.1", port=80)
    wait_for(lambda: addresses(b) == ["10.4.0.1"])
    etcd.kill(etcd.leader())
    t0 = time.monotonic()
    assert addresses(a) == addresses(b) == ["10.4.0.1"]  # DNS does not wait on etcd
    # A new etcd leader takes a moment: a write in between may be refused (503), never lost.
    for i, n in enumerate((a, b, a, b)):
        body = {"address": f"10.4.1.{i}", "port": 80}
        reply = wait_for(
            lambda n=n, i=i, body=body: (
                r
                if (r := n.http("PUT", f"/v1/services/web/instances/after-{i}", body)).status
                in (200, 201)
                else None
            )
        )
        assert reply.status == 201
        if i == 0:
            print(f"\netcd leader killed: first write accepted after {time.monotonic() - t0:.2f} s")
    want = ["10.4.0.1", "10.4.1.0", "10.4.1.1", "10.4.1.2", "10.4.1.3"]
    wait_for(lambda: addresses(a) == addresses(b) == want)
    for n in (a, b):
        wait_for(lambda n=n: n.http("GET", "/readyz").status == 200)


def test_without_etcd_nodes_answer_from_their_view_refuse_writes_and_converge_after(
    etcd: EtcdCluster, pair: tuple[DnsdiscProcess, DnsdiscProcess]
) -> None:
    a, b = pair
    a.register("web", "one", address="10.5.0.1", port=80)
    a.register("api", "leased", address="10.5.1.1", port=80, ttl=30)
    wait_for(lambda: addresses(b) == ["10.5.0.1"])
    for m in etcd.members:
        etcd.kill(m)
    for n in (a, b):
        ready = wait_for(lambda n=n: (r := n.http("GET", "/readyz")).status == 503 and r)
        assert ready.body["stale"] is True and "unreachable" in ready.body["reason"]
        assert metric(n, "dnsdisc_store_stale") == 1
        assert addresses(n) == ["10.5.0.1"]
        t0 = time.monotonic()
        refused = n.http(
            "PUT", "/v1/services/web/instances/two", {"address": "10.5.0.2", "port": 80}
        )
        assert refused.status == 503 and "etcd is unavailable" in refused.body["error"]
        assert time.monotonic() - t0 < 5
        assert n.http("DELETE", "/v1/services/web/instances/one").status == 503
        assert n.http("GET", "/v1/services/web/instances/two").status == 404
        beat = n.http("POST", "/v1/services/api/instances/leased/heartbeat", {})
        assert beat.status == 503 and "etcd" in beat.body["error"]
        path = "/v1/services/web/instances/one/maintenance"
        assert n.http("PUT", path, {"enabled": True}).status == 503
        assert n.http("PUT", "/v1/services/web", {"ttl": 9}).status == 503
        assert n.http("GET", "/v1/services/web").body["ttl"] == 5  # nothing changed
        assert n.addresses("api.svc.internal") == ["10.5.1.1"]
    assert addresses(a) == addresses(b) == ["10.5.0.1"]
    for m in etcd.members:
        etcd.restart(m)
    etcd.wait_healthy()
    for n in (a, b):
        wait_for(lambda n=n: n.http("GET", "/readyz").status == 200, timeout=15)
        assert metric(n, "dnsdisc_store_stale") == 0
    b.register("web", "two", address="10.5.0.2", port=80)
    a.register("web", "three", address="10.5.0.3", port=80)
    want = ["10.5.0.1", "10.5.0.2", "10.5.0.3"]
    wait_for(lambda: addresses(a) == addresses(b) == want)
    # The lease survived the outage (etcd renews leases when it elects a leader).
    assert b.http("POST", "/v1/services/api/instances/leased/heartbeat", {}).status == 200
    assert a.addresses("api.svc.internal") == ["10.5.1.1"]


def test_when_node_a_dies_node_b_answers_everything_including_as_registrations(
    pair: tuple[DnsdiscProcess, DnsdiscProcess],
) -> None:
    a, b = pair
    for i in range(5):
        a.register("web", f"a-{i}", address=f"10.6.0.{i + 1}", port=80)
    b.register("api", "b-0", address="10.6.1.1", port=8080)
    want = [f"10.6.0.{i + 1}" for i in range(5)]
    wait_for(lambda: addresses(b) == want)
    a.kill()
    assert addresses(b) == want
    assert b.addresses("api.svc.internal") == ["10.6.1.1"]
    srv = b.query("_http._tcp.a-0.web.svc.internal", "SRV")
    assert srv.rcode() in (0, 3)  # answered, not timed out
    # A's registrations are still B's to change.
    assert b.http("DELETE", "/v1/services/web/instances/a-0").status == 204
    assert "10.6.0.1" not in addresses(b)


def test_a_node_started_later_loads_the_registry_and_a_compacted_watch_reloads(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    a = node(tmp_path, "a", etcd).start()
    leader = etcd.leader()
    only = next(m for m in etcd.members if m is not leader)
    # B talks to one member only (not the leader, so the others keep a leader), and that
    # member going away takes B's watch down alone.
    b = DnsdiscProcess(
        tmp_path / "b",
        extra_args=[
            "--storage", "etcd",
            "--etcd-endpoints", only.client_url,
            "--etcd-prefix", "/dnsdisc-test",
        ],
    )  # fmt: skip
    try:
        a.register("web", "one", address="10.7.0.1", port=80)
        a.register("web", "gone", address="10.7.0.9", port=80)
        b.start()
        assert addresses(b) == ["10.7.0.1", "10.7.0.9"]
        etcd.kill(only)
        wait_for(lambda: b.http("GET", "/readyz").status == 503)
        a.register("web", "two", address="10.7.0.2", port=80)
        assert a.http("DELETE", "/v1/services/web/instances/gone").status == 204
        # Compact away the history B's watch would resume from: B must reload the range.
        url = leader.client_url
        rev = etcd_post(url, "/v3/kv/range", {"key": "eA=="})["header"]["revision"]
        etcd_post(url, "/v3/kv/compaction", {"revision": rev, "physical": True}, 10)
        assert addresses(b) == ["10.7.0.1", "10.7.0.9"]  # the last view, meanwhile
        etcd.restart(only)
        wait_for(lambda: addresses(b) == ["10.7.0.1", "10.7.0.2"], timeout=20)
        assert "reloading" in b.log()
        wait_for(lambda: b.http("GET", "/readyz").status == 200)
    finally:
        b.stop()
        a.stop()


def test_a_watch_on_a_frozen_member_is_noticed_and_moved(
    etcd: EtcdCluster, pair: tuple[DnsdiscProcess, DnsdiscProcess]
) -> None:
    a, b = pair
    # Both nodes watch through the first endpoint; freeze that member (SIGSTOP): its
    # connections stay open and silent, so only the nodes' own lag check can notice.
    frozen = etcd.members[0]
    etcd.freeze(frozen)
    try:
        t0 = time.monotonic()
        body = {"address": "10.8.0.1", "port": 80}
        wait_for(
            lambda: a.http("PUT", "/v1/services/web/instances/one", body).status in (200, 201),
            timeout=20,
        )
        wait_for(lambda: addresses(b) == ["10.8.0.1"], timeout=20)
        print(
            f"\nfrozen etcd member: B answered A's registration after {time.monotonic() - t0:.1f} s"
        )
        assert "the watch delivers nothing" in b.log()
    finally:
        etcd.freeze(frozen, False)


def test_etcd_with_auth(tmp_path: Path, etcd: EtcdCluster) -> None:
    etcdctl = require_tool("etcdctl")
    url = etcd.members[0].client_url

    def ctl(*args: str) -> None:
        subprocess.run(
            [etcdctl, "--endpoints", url, *args], check=True, capture_output=True, timeout=20
        )

    ctl("user", "add", "root:rootpw")
    ctl("auth", "enable")
    try:
        config = tmp_path / "auth.yaml"
        config.write_text(
            "storage: etcd\n"
            f"etcd: {{endpoints: [{etcd.members[0].client_url}, {etcd.members[1].client_url}],"
            " username: root, password: rootpw}\n"
        )
        n = DnsdiscProcess(tmp_path / "n", extra_args=["--config", str(config)]).start()
        try:
            n.register("web", "one", address="10.9.0.1", port=80)
            assert addresses(n) == ["10.9.0.1"]
        finally:
            n.stop()
        config.write_text(config.read_text().replace("rootpw", "wrong"))
        bad = DnsdiscProcess(tmp_path / "bad", extra_args=["--config", str(config)])
        with pytest.raises(RuntimeError, match="etcd refused the username/password"):
            bad.start()
    finally:
        ctl("--user", "root:rootpw", "auth", "disable")


def test_bad_etcd_settings_are_named_and_an_unreachable_etcd_stops_the_start(
    tmp_path: Path,
) -> None:
    bad = DnsdiscProcess(
        tmp_path / "bad", extra_args=["--storage", "etcd", "--etcd-endpoints", "127.0.0.1:2379"]
    )
    with pytest.raises(RuntimeError, match=r"--etcd-endpoints: '127.0.0.1:2379' is not a URL"):
        bad.start()
    down = DnsdiscProcess(
        tmp_path / "down",
        extra_args=[
            "--storage", "etcd", "--etcd-endpoints", f"http://127.0.0.1:{free_port()}"
        ],
    )  # fmt: skip
    with pytest.raises(RuntimeError, match=r"cannot open the etcd store at http://127.0.0.1:"):
        down.start(timeout=20)


def test_readme_cluster_commands_run_as_written(tmp_path: Path) -> None:
    """The README's 3-node section, run as written: only ports and data dirs are changed."""
    etcd_bin = require_tool("etcd")
    require_tool("dig")
    require_tool("curl")
    heading = "Running several nodes on etcd"
    cfg = from_mapping(yaml.safe_load(readme_block(heading, "yaml")), "README.md")
    assert cfg.storage == "etcd" and len(cfg.etcd.endpoints) == 3
    steps = console_steps(readme_block(heading))
    assert sum(c.startswith("etcd ") for c, _ in steps) == 3
    assert sum(c.startswith("dnsdisc serve") for c, _ in steps) == 3
    ports: dict[str, str] = {}

    def local(command: str) -> str:
        command = re.sub(
            r"(?<=:)\d{4}\b|(?<=-p )\d{4}\b",
            lambda m: ports.setdefault(m.group(0), str(free_port())),
            command,
        )
        return command.replace("/tmp/etcd-", f"{tmp_path}/etcd-")

    started: list[subprocess.Popen[bytes]] = []
    log = open(tmp_path / "readme.log", "ab")  # noqa: SIM115 - closed below
    try:
        for command, expected in steps:
            cmd = local(command)
            if cmd.endswith("&"):
                argv = shlex.split(cmd[:-1])
                if argv[0] == "etcd":
                    argv[0] = etcd_bin
                else:
                    assert argv[0] == "dnsdisc"
                    argv[:1] = [sys.executable, "-m", "dnsdisc"]
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
                started.append(proc)
                if argv[0] != etcd_bin:
                    http_port = argv[argv.index("--http") + 1].rsplit(":", 1)[1]
                    wait_for(
                        lambda p=http_port: _get(f"http://127.0.0.1:{p}/readyz") == 200,
                        timeout=30,
                        step=0.1,
                    )
                continue
            result = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=20)
            assert result.returncode == 0, (command, result.stderr)
            assert result.stdout.splitlines() == expected, (command, result.stdout)
    finally:
        for proc in reversed(started):
            end_process(proc)
        log.close()
        for i in range(3):
            shutil.rmtree(tmp_path / f"etcd-m{i}", ignore_errors=True)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0
