"""``POST /v1/batch`` (#20): all or nothing in one commit, per-op results, a failing op named
by its position and field with nothing applied, 128 operations durable after kill -9."""

from __future__ import annotations

from pathlib import Path

from tests.support.helpers import DnsdiscProcess, running


def reg(service: str, iid: str, n: int) -> dict[str, object]:
    return {
        "op": "register", "service": service, "id": iid,
        "body": {"address": f"10.0.{n // 250}.{n % 250 + 1}", "port": 80},
    }  # fmt: skip


def test_a_batch_applies_everything_and_reports_each_op(server: DnsdiscProcess) -> None:
    server.register("web", "old", address="10.9.0.1", port=80)
    ops = [
        reg("web", "a", 1),
        reg("web", "old", 2),
        {"op": "service", "service": "web", "body": {"ttl": 30}},
        {"op": "service", "service": "db", "body": {"policy": "round_robin"}},
        {"op": "maintenance", "service": "web", "id": "a", "body": {"enabled": True}},
        {"op": "deregister", "service": "web", "id": "old"},
    ]
    result = server.http("POST", "/v1/batch", {"ops": ops})
    assert result.status == 200, result
    assert [r["status"] for r in result.body["results"]] == [201, 200, 200, 201, 200, 204]
    assert result.body["index"] > 0
    web = server.http("GET", "/v1/services/web").body
    assert web["ttl"] == 30 and [i["id"] for i in web["instances"]] == ["a"]
    assert web["instances"][0]["health"]["status"] == "maintenance"
    assert server.http("GET", "/v1/services/db").body["policy"] == "round_robin"


def test_a_bad_op_in_the_middle_rejects_the_whole_batch(server: DnsdiscProcess) -> None:
    cases = [
        ({"op": "register", "service": "web", "id": "b", "body": {"address": "10.0.0.2"}}, "port", 400),
        ({"op": "register", "service": "web", "id": "Bad_Id", "body": {}}, "id", 400),
        ({"op": "deregister", "service": "web", "id": "nobody"}, "id", 404),
        ({"op": "maintenance", "service": "web", "id": "x", "body": {"enabled": "yes"}}, "enabled", 400),
        ({"op": "fly", "service": "web"}, "op", 400),
        ({"op": "register", "service": "ns", "id": "x", "body": {"address": "10.0.0.3", "port": 1}}, "service", 409),
    ]  # fmt: skip
    for bad, field, status in cases:
        ops = [reg("web", "x", 1), bad, reg("web", "y", 3)]
        result = server.http("POST", "/v1/batch", {"ops": ops})
        assert result.status == status, (bad, result)
        assert result.body["op"] == 1 and result.body["field"] == field, (bad, result)
        assert server.http("GET", "/v1/services/web").status == 404  # nothing applied
    too_many = {"ops": [reg("web", f"i{n}", n) for n in range(129)]}
    result = server.http("POST", "/v1/batch", too_many)
    assert result.status == 400 and result.body["field"] == "ops"
    assert server.http("POST", "/v1/batch", {"ops": []}).status == 400
    assert server.http("POST", "/v1/batch", {"operations": []}).body["field"] == "ops"


def test_128_operations_are_durable_after_kill_9(tmp_path: Path) -> None:
    server = DnsdiscProcess(tmp_path / "n").start()
    try:
        ops = [reg("big", f"i{n}", n) for n in range(128)]
        result = server.http("POST", "/v1/batch", {"ops": ops})
        assert result.status == 200 and len(result.body["results"]) == 128
        server.kill()
    finally:
        server.stop()
    with running(tmp_path, "n") as again:
        assert again.http("GET", "/v1/services/big").body["instance_count"] == 128
        assert len(again.addresses("big.svc.internal", tcp=True)) == 128


def test_a_batch_on_etcd_is_one_transaction_every_node_sees(tmp_path: Path, etcd) -> None:  # type: ignore[no-untyped-def]
    import time

    from tests.support.etcdcluster import etcd_node

    a = etcd_node(tmp_path, "a", etcd).start()
    try:
        b = etcd_node(tmp_path, "b", etcd).start()
        try:
            ops = [reg("web", f"i{n}", n) for n in range(20)]
            ops.append(
                {"op": "maintenance", "service": "web", "id": "i0", "body": {"enabled": True}}
            )
            result = a.http("POST", "/v1/batch", {"ops": ops})
            assert result.status == 200, result
            deadline = time.monotonic() + 10
            while True:
                web = b.http("GET", "/v1/services/web")
                done = (
                    web.status == 200
                    and web.body["instance_count"] == 20
                    and any(i["health"]["status"] == "maintenance" for i in web.body["instances"])
                )
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert done, web
            # A bad op leaves etcd untouched too.
            bad = [reg("web", "new", 99), {"op": "deregister", "service": "web", "id": "zz"}]
            assert a.http("POST", "/v1/batch", {"ops": bad}).status == 404
            assert b.http("GET", "/v1/services/web/instances/new").status == 404
            # 128 registrations into a new service are 129 etcd operations, over etcd's default
            # --max-txn-ops: the client is told why, and nothing is applied.
            big = [reg("big", f"i{n}", n) for n in range(128)]
            over = a.http("POST", "/v1/batch", {"ops": big})
            assert over.status == 400 and over.body["field"] == "ops", over
            assert "--max-txn-ops" in over.body["error"]
            assert a.http("GET", "/v1/services/big").status == 404
            assert a.http("POST", "/v1/batch", {"ops": big[:127]}).status == 200
        finally:
            b.stop()
    finally:
        a.stop()


def test_register_file_sends_batches_and_names_a_bad_entry(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    from tests.support.helpers import ROOT

    with running(tmp_path, "n") as server:
        entries = [
            {"service": "web", "id": f"w{n}", "address": f"10.0.{n // 250}.{n % 250 + 1}",
             "port": 80, "tags": ["blue"]}
            for n in range(300)
        ]  # fmt: skip
        good = tmp_path / "instances.yaml"
        good.write_text(yaml.safe_dump(entries))

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "dnsdisc", "register", *args,
                 "--http", f"127.0.0.1:{server.http_port}"],
                capture_output=True, text=True, timeout=60, cwd=ROOT,
            )  # fmt: skip

        done = cli("--file", str(good))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"registered 300 instances from {good}"
        assert server.http("GET", "/v1/services/web").body["instance_count"] == 300
        bad = tmp_path / "bad.yaml"
        entries[5]["port"] = "eighty"
        entries[0]["service"] = "db"
        bad.write_text(yaml.safe_dump(entries[:10]))
        failed = cli("--file", str(bad))
        assert failed.returncode != 0 and "op 5" in failed.stderr and "port" in failed.stderr
        assert "0 registered before it" in failed.stderr, failed.stderr
        assert server.http("GET", "/v1/services/db").status == 404  # its batch: nothing
        usage = cli("--file", str(good), "web")
        assert usage.returncode == 2 and "no service beside it" in usage.stderr
        assert cli().returncode == 2
