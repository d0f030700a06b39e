"""etcd under attack, on a real 3-member cluster on loopback: a key this version cannot read does
not stop a node from starting; a write refused while etcd is out of reach is never applied later."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from tests.support.etcdcluster import EtcdCluster, etcd_post
from tests.support.helpers import DnsdiscProcess

PREFIX = "/dnsdisc-hard"


def node(tmp_path: Path, name: str, cluster: EtcdCluster) -> DnsdiscProcess:
    return DnsdiscProcess(
        tmp_path / name,
        extra_args=[
            "--storage", "etcd",
            "--etcd-endpoints", cluster.endpoints,
            "--etcd-prefix", PREFIX,
        ],
    )  # fmt: skip


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def put(cluster: EtcdCluster, key: str, value: Any) -> None:
    raw = value if isinstance(value, str) else json.dumps(value)
    etcd_post(cluster.members[0].client_url, "/v3/kv/put", {"key": b64(key), "value": b64(raw)})


def stored_keys(cluster: EtcdCluster) -> set[str]:
    end = PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)
    for m in cluster.members:
        try:
            found = etcd_post(
                m.client_url,
                "/v3/kv/range",
                {"key": b64(PREFIX), "range_end": b64(end), "keys_only": True},
                5.0,
            )
        except OSError:
            continue
        return {base64.b64decode(kv["key"]).decode() for kv in found.get("kvs") or []}
    raise AssertionError("no etcd member answered")


def metric(n: DnsdiscProcess, name: str) -> float:
    for line in n.http("GET", "/metrics").raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


def test_a_node_starts_past_invalid_keys_and_keeps_unknown_fields(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    put(etcd, f"{PREFIX}/services/web", {"ttl": 7, "policy": "weighted", "from_v9": {"x": 1}})
    # Written by a newer version: unknown fields, the rest is a good instance.
    put(
        etcd,
        f"{PREFIX}/instances/web/newer",
        {"address": "10.9.0.1", "port": 80, "zone": "eu-1", "check": None},
    )
    put(etcd, f"{PREFIX}/instances/web/badport", {"address": "10.9.0.2", "port": 70000})
    put(etcd, f"{PREFIX}/instances/web/notjson", "{not json")
    put(etcd, f"{PREFIX}/services/bad", {"policy": "no-such-policy"})
    put(etcd, f"{PREFIX}/instances/web/ok", {"address": "10.9.0.3", "port": 80})
    a = node(tmp_path, "a", etcd).start()
    try:
        assert sorted(a.addresses("web.svc.internal")) == ["10.9.0.1", "10.9.0.3"]
        assert a.http("GET", "/v1/services/web").body["ttl"] == 7
        assert metric(a, "dnsdisc_store_skipped_keys_total") == 3
        assert "ignoring" in a.log()
        # The watch takes the same line after the start.
        put(etcd, f"{PREFIX}/instances/web/later", {"address": "10.9.0.4", "port": 80, "az": 2})
        put(etcd, f"{PREFIX}/instances/web/worse", {"address": "not-an-ip", "port": 80})
        deadline = time.monotonic() + 10
        while "10.9.0.4" not in a.addresses("web.svc.internal") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(a.addresses("web.svc.internal")) == ["10.9.0.1", "10.9.0.3", "10.9.0.4"]
        while metric(a, "dnsdisc_store_skipped_keys_total") < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(a, "dnsdisc_store_skipped_keys_total") == 4
    finally:
        a.stop()


def test_writes_refused_while_every_member_is_frozen_are_never_applied(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    a = node(tmp_path, "a", etcd).start()
    b = node(tmp_path, "b", etcd).start()
    name = "web.svc.internal"
    try:
        for i in range(3):
            a.register("web", f"keep-{i}", address=f"10.8.1.{i + 1}", port=80)
        before = stored_keys(etcd)
        deadline = time.monotonic() + 10
        while len(b.addresses(name)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        for m in etcd.members:
            etcd.freeze(m)
        # Sent before the node knows: no answer comes, and the 503 says the outcome is unknown.
        early = a.http(
            "PUT", "/v1/services/web/instances/early", {"address": "10.8.9.9", "port": 1}
        )
        assert early.status == 503 and early.body["outcome"] == "unknown", early
        deadline = time.monotonic() + 20
        while a.http("GET", "/readyz").status != 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert a.http("GET", "/readyz").body["stale"] is True
        unknown: set[str] = set()
        t0 = time.monotonic()
        for i in range(12):
            body = {"address": f"10.8.2.{i + 1}", "port": 80}
            r = a.http("PUT", f"/v1/services/web/instances/new-{i}", body)
            assert r.status == 503, r
            if r.body.get("outcome") == "unknown":
                unknown.add(f"new-{i}")
        for i in range(3):
            r = a.http("DELETE", f"/v1/services/web/instances/keep-{i}")
            assert r.status == 503, r
            if r.body.get("outcome") == "unknown":
                unknown.add(f"keep-{i}")
        refusing = time.monotonic() - t0
        for m in etcd.members:
            etcd.freeze(m, False)
        etcd.wait_healthy()
        for n in (a, b):
            deadline = time.monotonic() + 20
            while n.http("GET", "/readyz").status != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
        time.sleep(3)  # anything held in a member's socket has run by now
        # The unknown one may have run when the members resumed; the refused ones never.
        assert stored_keys(etcd) - {f"{PREFIX}/instances/web/early"} == before
        # Known stale: refused before anything is sent, so at once and never "unknown".
        assert not unknown and refusing < 10
        want = ["10.8.1.1", "10.8.1.2", "10.8.1.3"]
        if f"{PREFIX}/instances/web/early" in stored_keys(etcd):
            want.append("10.8.9.9")  # then every node shows it: the views converged on etcd
        assert sorted(a.addresses(name)) == want
        assert sorted(b.addresses(name)) == want
        # And the node takes writes again.
        a.register("web", "after", address="10.8.3.1", port=80)
    finally:
        for m in etcd.members:
            etcd.freeze(m, False)
        a.stop()
        b.stop()
