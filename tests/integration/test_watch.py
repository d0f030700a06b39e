"""The change index and blocking queries (#20, first step) against running servers: every GET
of /v1 carries ``X-Dnsdisc-Index``; a blocking GET wakes within 50 ms of a change to what it
shows and not for others; its wait ends with the same index; an index ahead returns at once;
bad parameters get a 400 naming them; the index never goes back across a restart (SQLite) and
is the same on every node (etcd: its revision)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.support.etcdcluster import EtcdCluster, etcd_node
from tests.support.helpers import DnsdiscProcess, HttpResult, running

HEADER = "X-Dnsdisc-Index"


def get(server: DnsdiscProcess, path: str) -> tuple[HttpResult, int]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{server.http_url}{path}", timeout=30) as resp:
        body = json.loads(resp.read())
        return HttpResult(resp.status, body), int(resp.headers[HEADER])


def test_every_get_carries_the_index_and_it_grows(server: DnsdiscProcess) -> None:
    server.register("web", "a", address="10.0.0.1", port=80)
    _, first = get(server, "/v1/services")
    assert first > 0
    server.register("web", "b", address="10.0.0.2", port=80)
    _, second = get(server, "/v1/services")
    _, of_web = get(server, "/v1/services/web")
    _, of_a = get(server, "/v1/services/web/instances/a")
    assert second > first and of_web == second and of_a < second  # a did not change since
    _, of_explain = get(server, "/v1/services/web/explain")
    assert of_explain == second


def test_a_blocking_get_wakes_for_its_change_only(server: DnsdiscProcess) -> None:
    server.register("web", "a", address="10.0.0.1", port=80)
    server.register("db", "x", address="10.0.0.9", port=5432)
    _, web_index = get(server, "/v1/services/web")
    _, db_index = get(server, "/v1/services/db")
    woke: dict[str, tuple[float, int]] = {}

    def watch(name: str, index: int, wait: str) -> None:
        _, got = get(server, f"/v1/services/{name}?index={index}&wait={wait}")
        woke[name] = (time.monotonic(), got)

    watchers = [
        threading.Thread(target=watch, args=("web", web_index, "10s")),
        threading.Thread(target=watch, args=("db", db_index, "1s")),
    ]
    for t in watchers:
        t.start()
    time.sleep(0.3)  # both parked
    changed_at = time.monotonic()
    server.register("web", "b", address="10.0.0.2", port=80)
    for t in watchers:
        t.join(15)
    woke_at, new_index = woke["web"]
    assert new_index > web_index
    assert woke_at - changed_at < 0.05 + 0.05, woke_at - changed_at  # the register's own time
    # db's watcher slept through web's change and its wait ended with db's index.
    db_at, db_after = woke["db"]
    assert db_after == db_index and db_at - changed_at > 0.4
    # An index ahead of the server's (a restore) returns at once.
    started = time.monotonic()
    _, ahead = get(server, f"/v1/services/web?index={new_index + 1000}&wait=10s")
    assert ahead == new_index and time.monotonic() - started < 1


def test_bad_blocking_parameters_are_refused(server: DnsdiscProcess) -> None:
    server.register("web", "a", address="10.0.0.1", port=80)
    for query, field in (("index=-1", "index"), ("index=abc", "index"),
                         ("index=1&wait=abc", "wait"), ("wait=10d", "wait")):  # fmt: skip
        result = server.http("GET", f"/v1/services/web?{query}")
        assert result.status == 400 and result.body["field"] == field, (query, result)


def test_the_index_never_goes_back_across_a_restart(tmp_path: Path) -> None:
    with running(tmp_path, "n") as server:
        server.register("web", "a", address="10.0.0.1", port=80)
        server.http("PUT", "/v1/services/web/instances/a/maintenance", {"enabled": True})
        _, before = get(server, "/v1/services")
    with running(tmp_path, "n") as again:
        _, after = get(again, "/v1/services")
        assert after >= before
        again.register("web", "b", address="10.0.0.2", port=80)
        _, later = get(again, "/v1/services")
        assert later > before


def test_on_etcd_every_node_shows_the_same_index(tmp_path: Path, etcd: EtcdCluster) -> None:
    a = etcd_node(tmp_path, "a", etcd).start()
    try:
        b = etcd_node(tmp_path, "b", etcd).start()
        try:
            a.register("web", "x", address="10.0.0.1", port=80)
            deadline = time.monotonic() + 10
            while True:
                _, on_a = get(a, "/v1/services/web")
                try:
                    _, on_b = get(b, "/v1/services/web")
                except OSError:
                    on_b = -1
                if on_a == on_b or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert on_a == on_b > 0
            # A blocking GET on b wakes for a change made on a.
            result: list[int] = []
            t = threading.Thread(
                target=lambda: result.append(get(b, f"/v1/services/web?index={on_b}&wait=10s")[1])
            )
            t.start()
            time.sleep(0.3)
            a.register("web", "y", address="10.0.0.2", port=80)
            t.join(15)
            assert result and result[0] > on_b
        finally:
            b.stop()
    finally:
        a.stop()
