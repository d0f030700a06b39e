"""A service whose every instance is unhealthy and handed out fail-open answers with them all,
whatever its policy (a small weighted RRset of only fail-open records used to answer empty)."""

from __future__ import annotations

import pytest

from tests.support.helpers import DnsdiscProcess


@pytest.mark.parametrize("policy", ["weighted", "random"])
def test_every_instance_fail_open_is_answered(server: DnsdiscProcess, policy: str) -> None:
    for n in range(1, 4):
        server.register("web", f"web-{n}", address=f"10.0.0.{n}", port=80, ttl=60)
    server.http("PUT", "/v1/services/web", {"policy": policy, "panic_threshold": 0.5})
    for n in range(1, 4):
        server.http("POST", f"/v1/services/web/instances/web-{n}/heartbeat", {"status": "critical"})
    for _ in range(10):
        msg = server.query("web.svc.internal", "A")
        addresses = sorted(rr.to_text() for rrset in msg.answer for rr in rrset)
        assert addresses == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
