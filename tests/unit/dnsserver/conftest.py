"""The dnsserver unit tests' shared world: three instances of web, one of them over UDP on IPv6."""

from __future__ import annotations

import pytest

from tests.support.world import World


@pytest.fixture
def world() -> World:
    w = World()
    w.add(
        "web",
        "web-1",
        address="10.0.0.1",
        port=8080,
        tags=["blue"],
        meta={"version": "1.2", "team": "a b"},
    )
    w.add("web", "web-2", address="10.0.0.2", port=8080, weight=50, tags=["green"])
    w.add("web", "web-6", address="2001:db8::6", port=8081, protocol="udp", tags=["blue"])
    return w
