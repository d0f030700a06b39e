"""Self-preservation (#22, ``health.protection``): ten leased instances whose heartbeats all
stop at once stay in the answers with protection on (and /readyz and the metrics say so), and
leave without it; when heartbeats resume, protection ends."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.support.frontends import DOMAIN
from tests.support.helpers import DnsdiscProcess, metric, running, wait_until

TTL = 1.0
COUNT = 10


def _heartbeats(server: DnsdiscProcess, ids: list[str], stop: threading.Event) -> None:
    while not stop.wait(TTL / 4):
        for iid in ids:
            server.http("POST", f"/v1/services/web/instances/{iid}/heartbeat", {})


def _scenario(tmp_path: Path, name: str, protection: bool) -> tuple[int, DnsdiscProcess]:
    config = tmp_path / f"{name}.yaml"
    text = "health:\n  protection: {expire_fraction: 0.5, window: 30}\n" if protection else ""
    config.write_text(text)
    ids = [f"i{n}" for n in range(COUNT)]
    with running(tmp_path, name, extra_args=["--config", str(config)]) as server:
        for n, iid in enumerate(ids):
            server.register("web", iid, address=f"10.0.0.{n + 1}", port=80, ttl=TTL)
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeats, args=(server, ids, stop), daemon=True)
        beat.start()
        time.sleep(TTL * 1.5)
        stop.set()  # every heartbeat stops at once
        beat.join(5)
        time.sleep(TTL * 2.5)  # every lease has run out
        answered = len(server.addresses(f"web.{DOMAIN}", "A"))
        if protection:
            ready = server.http("GET", "/readyz").body
            assert ready["ready"] is True
            assert ready["self_preservation"]["leases_held"] == COUNT
            assert metric(server, "dnsdisc_health_self_preservation ") == 1
            assert metric(server, "dnsdisc_health_leases_held ") == COUNT
            # Heartbeats resume: protection ends.
            for iid in ids:
                server.http("POST", f"/v1/services/web/instances/{iid}/heartbeat", {})

            def ended() -> bool:
                return metric(server, "dnsdisc_health_self_preservation ") == 0

            wait_until(ended, 5)
            assert "self_preservation" not in server.http("GET", "/readyz").body
            assert "self-preservation ended" in server.log()
        return answered, server


def test_protection_keeps_instances_whose_heartbeats_all_stopped(tmp_path: Path) -> None:
    held, server = _scenario(tmp_path, "on", protection=True)
    assert held == COUNT
    assert "self-preservation: " in server.log()


def test_without_protection_they_leave(tmp_path: Path) -> None:
    left, _ = _scenario(tmp_path, "off", protection=False)
    assert left == 0


def test_a_few_missing_leases_expire_and_do_not_start_protection(tmp_path: Path) -> None:
    """3 of 10 stop: they expire (under the half); a 4th stopping later expires too (the three,
    long dead, are not counted twice)."""
    config = tmp_path / "few.yaml"
    config.write_text("health:\n  protection: {expire_fraction: 0.5, window: 30}\n")
    ids = [f"i{n}" for n in range(COUNT)]
    with running(tmp_path, "few", extra_args=["--config", str(config)]) as server:
        for n, iid in enumerate(ids):
            server.register("web", iid, address=f"10.0.0.{n + 1}", port=80, ttl=TTL)
        for alive in (ids[3:], ids[4:]):
            stop = threading.Event()
            beat = threading.Thread(target=_heartbeats, args=(server, alive, stop), daemon=True)
            beat.start()
            time.sleep(TTL * 3.5)
            answered = len(server.addresses(f"web.{DOMAIN}", "A"))
            stop.set()
            beat.join(5)
            assert answered == len(alive)
            assert metric(server, "dnsdisc_health_self_preservation ") == 0
