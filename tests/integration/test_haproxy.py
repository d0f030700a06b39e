"""HAProxy's ``server-template`` over dnsdisc's SRV name (#19): with ``srv_weights: scaled`` its
servers get weights in the registered ratios (HAProxy divides an SRV weight by 256, so the
registered 100/50/25 would all become 1, which is shown too); a deregistered instance leaves and
a new one comes up within a few seconds."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.frontends import Haproxy, haproxy
from tests.support.helpers import DnsdiscProcess, running

WEIGHTS = {"w1": 100, "w2": 50, "w3": 25}


def by_name(proxy: Haproxy) -> dict[str, dict[str, str]]:
    """The servers HAProxy has resolved, by the instance name in their target."""
    return {
        s["srv_fqdn"].split(".")[0]: s
        for s in proxy.servers("web")
        if s.get("srv_fqdn", "-") != "-" and s["srv_addr"] != "-"
    }


def wait_for(proxy: Haproxy, want: dict[str, int], timeout: float = 15) -> dict[str, int]:
    """Until HAProxy's live servers and their weights are ``want`` (instance -> weight)."""
    deadline = time.monotonic() + timeout
    while True:
        got = {name: int(s["srv_uweight"]) for name, s in by_name(proxy).items()}
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_scaled_srv_weights_reach_haproxy_in_the_registered_ratios(tmp_path: Path) -> None:
    with running(tmp_path, extra_args=["--workers", "1"]) as server:
        fill(server, "scaled")
        with haproxy(tmp_path, server, "web") as proxy:
            # 100/50/25 scaled to 65535/32768/16384; HAProxy: /256 -> 256/128/64.
            assert wait_for(proxy, {"w1": 256, "w2": 128, "w3": 64}) == {
                "w1": 256, "w2": 128, "w3": 64,
            }  # fmt: skip
            # Deregistered: gone from HAProxy within hold (1 s) + TTL (1 s) + a resolution.
            assert server.http("DELETE", "/v1/services/web/instances/w3").status == 204
            started = time.monotonic()
            assert wait_for(proxy, {"w1": 256, "w2": 128}) == {"w1": 256, "w2": 128}
            gone_after = time.monotonic() - started
            assert gone_after < 6, gone_after
            # A new instance comes up, weighted beside the others.
            server.register("web", "w4", address="127.0.1.4", port=8004, weight=100)
            assert wait_for(proxy, {"w1": 256, "w2": 128, "w4": 256}) == {
                "w1": 256, "w2": 128, "w4": 256,
            }  # fmt: skip


def test_registered_weights_all_become_one_in_haproxy(tmp_path: Path) -> None:
    with running(tmp_path, extra_args=["--workers", "1"]) as server:
        fill(server, "registered")
        with haproxy(tmp_path, server, "web") as proxy:
            assert wait_for(proxy, {"w1": 1, "w2": 1, "w3": 1}) == {"w1": 1, "w2": 1, "w3": 1}


def fill(server: DnsdiscProcess, srv_weights: str) -> None:
    result = server.http("PUT", "/v1/services/web", {"srv_weights": srv_weights, "ttl": 1})
    assert result.status in (200, 201), result
    for n, (iid, weight) in enumerate(WEIGHTS.items(), 1):
        server.register("web", iid, address=f"127.0.1.{n}", port=8000 + n, weight=weight)
