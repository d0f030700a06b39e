"""Reload without a restart: SIGHUP and POST /v1/reload re-read the config and zone files; a bad
file is rejected with a clear message and the old configuration keeps serving."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import dns.rcode

from tests.support.helpers import DnsdiscProcess


def zone(path: Path, address: str) -> None:
    path.write_text(
        f"records:\n  - {{name: app, type: A, value: {address}}}\n"
        "services:\n  db:\n    instances:\n      db-1: {address: 192.0.2.10, port: 5432}\n"
    )


def a_records(node: DnsdiscProcess, name: str) -> list[str]:
    return sorted(rr.to_text() for rrset in node.query(name, "A").answer for rr in rrset)


def wait_for(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met")


def test_sighup_and_api_reload_zones_and_reject_bad_files(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    zone(zones / "z.yaml", "192.0.2.1")
    conf = tmp_path / "dnsdisc.yaml"
    conf.write_text("negative_ttl: 5\n")
    node = DnsdiscProcess(
        tmp_path / "node", extra_args=["--config", str(conf), "--zones", str(zones)]
    ).start()
    try:
        node.register("web", "web-1", address="10.0.0.1", port=80)
        assert a_records(node, "app.svc.internal") == ["192.0.2.1"]

        # A good change, by SIGHUP.
        zone(zones / "z.yaml", "192.0.2.2")
        (zones / "more.yaml").write_text("records:\n  - {name: extra, type: A, value: 192.0.2.3}\n")
        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: a_records(node, "app.svc.internal") == ["192.0.2.2"])
        assert a_records(node, "extra.svc.internal") == ["192.0.2.3"]
        assert a_records(node, "web.svc.internal") == ["10.0.0.1"]  # registrations untouched
        assert a_records(node, "db.svc.internal") == ["192.0.2.10"]

        # A bad zone file, by SIGHUP: logged, and the old data keeps answering.
        (zones / "more.yaml").write_text("records:\n  - {name: extra, type: A, value: 300.1.1.1}\n")
        node.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload rejected" in node.log())
        assert "more.yaml: records[0]" in node.log()
        assert a_records(node, "extra.svc.internal") == ["192.0.2.3"]

        # The same through the API: 400 naming the key, nothing changed.
        result = node.http("POST", "/v1/reload")
        assert result.status == 400 and "more.yaml" in result.body["error"]
        assert result.body["field"] == "records[0]"
        assert a_records(node, "extra.svc.internal") == ["192.0.2.3"]

        # A bad config file is rejected too.
        (zones / "more.yaml").unlink()
        conf.write_text("negative_ttl: -1\n")
        result = node.http("POST", "/v1/reload")
        assert result.status == 400 and result.body["field"] == "negative_ttl"
        assert a_records(node, "extra.svc.internal") == ["192.0.2.3"]

        # Fixed: the API reload applies it; the removed file's name is gone, the static service
        # removed from the zone file is gone too.
        conf.write_text("negative_ttl: 7\n")
        (zones / "z.yaml").write_text("records:\n  - {name: app, type: A, value: 192.0.2.9}\n")
        assert node.http("POST", "/v1/reload").body == {"reloaded": True}
        assert a_records(node, "app.svc.internal") == ["192.0.2.9"]
        assert node.query("extra.svc.internal", "A").rcode() == dns.rcode.NXDOMAIN
        assert node.query("db.svc.internal", "A").rcode() == dns.rcode.NXDOMAIN
        nx = node.query("nothing.svc.internal", "A")
        assert nx.authority[0].ttl == 7
        assert node.proc.poll() is None
    finally:
        node.stop()


def test_reload_needs_the_token_when_one_is_set(tmp_path: Path) -> None:
    node = DnsdiscProcess(tmp_path / "node", env={"DNSDISC_TOKEN": "t0k"}).start()
    try:
        assert node.http("POST", "/v1/reload").status == 401
        node.token = "t0k"
        assert node.http("POST", "/v1/reload").status == 200
    finally:
        node.stop()
