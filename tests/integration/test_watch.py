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


# -- the event stream ----------------------------------------------------------------------------


async def read_events(
    url: str, count: int, last_id: str | None = None, timeout: float = 10.0, during=None
) -> list[dict[str, str]]:
    """``count`` events (comments skipped) from the SSE stream at ``url``, with aiohttp;
    ``during`` (a blocking callable) runs in a thread once the stream is open."""
    import asyncio
    import json

    import aiohttp

    headers = {"Last-Event-ID": last_id} if last_id is not None else {}
    events: list[dict[str, str]] = []
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        current: dict[str, str] = {}
        started = False

        async def lines() -> None:
            nonlocal current, started
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line == ": connected":
                    started = True
                if not line:
                    if current:
                        events.append(current)
                        current = {}
                        if len(events) >= count:
                            return
                    continue
                if line.startswith(":"):
                    continue
                key, _, value = line.partition(": ")
                current[key] = value

        reader = asyncio.ensure_future(lines())
        if during is not None:
            deadline = asyncio.get_running_loop().time() + timeout
            while not started and not reader.done():
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.02)
            await asyncio.to_thread(during)
        await asyncio.wait_for(reader, timeout)
    for event in events:
        event["json"] = json.loads(event["data"])  # type: ignore[assignment]
    return events


def test_the_event_stream_sends_each_change_and_filters_by_service(
    server: DnsdiscProcess,
) -> None:
    import asyncio

    def changes() -> None:
        server.register("db", "x", address="10.0.0.9", port=5432)
        server.register("web", "a", address="10.0.0.1", port=80)
        server.http("PUT", "/v1/services/web/instances/a/maintenance", {"enabled": True})
        assert server.http("DELETE", "/v1/services/web/instances/a").status == 204

    url = f"{server.http_url}/v1/events?service=web"
    got = asyncio.run(read_events(url, 3, during=changes))
    assert [e["event"] for e in got] == ["register", "maintenance", "deregister"]
    assert [e["json"]["instance"] for e in got] == ["a", "a", "a"]  # type: ignore[index]
    assert got[0]["json"]["data"]["address"] == "10.0.0.1"  # type: ignore[index]
    ids = [int(e["id"]) for e in got]
    assert ids == sorted(ids) and len(set(ids)) == 3
    # Resume after the first: the rest, from the log.
    again = asyncio.run(read_events(url, 2, last_id=got[0]["id"]))
    assert [e["id"] for e in again] == [e["id"] for e in got[1:]]
    # Bad input.
    assert server.http("GET", "/v1/events?service=Bad_").status == 400
    assert server.http("GET", "/v1/events?colour=red").body["field"] == "colour"


def test_curl_follows_the_stream(server: DnsdiscProcess) -> None:
    import subprocess

    from tests.support.helpers import require_tool

    curl = require_tool("curl")
    proc = subprocess.Popen(
        [curl, "-sN", "--max-time", "4", f"{server.http_url}/v1/events"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1)
        server.register("web", "a", address="10.0.0.1", port=80)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "event: register" in out and '"instance": "a"' in out, out


def test_a_resume_from_before_a_restart_gets_a_reset(tmp_path: Path) -> None:
    import asyncio

    with running(tmp_path, "n") as server:
        server.register("web", "a", address="10.0.0.1", port=80)
        _, old = get(server, "/v1/services")
    with running(tmp_path, "n") as again:
        got = asyncio.run(read_events(f"{again.http_url}/v1/events", 1, last_id=str(old - 1)))
        assert got[0]["event"] == "reset" and int(got[0]["id"]) >= old


def test_on_etcd_a_change_on_one_node_reaches_a_stream_on_another(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    import asyncio

    a = etcd_node(tmp_path, "a", etcd).start()
    try:
        b = etcd_node(tmp_path, "b", etcd).start()
        try:
            url = f"{b.http_url}/v1/events"
            during = lambda: a.register("web", "x", address="10.0.0.1", port=80)  # noqa: E731
            # A new service's first instance: its settings key, then the instance (one txn).
            got = asyncio.run(read_events(url, 2, during=during))
            assert [e["event"] for e in got] == ["service", "register"], got
            assert got[1]["json"]["instance"] == "x"  # type: ignore[index]
        finally:
            b.stop()
    finally:
        a.stop()
