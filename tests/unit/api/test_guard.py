"""The HTTP connection caps' bookkeeping, and the limits chosen under the descriptor limit."""

from __future__ import annotations

import resource

import pytest

from dnsdisc.api.guard import HttpGuard, HttpLimits
from dnsdisc.config.load import Config
from dnsdisc.server import limits


def test_the_caps_count_per_client_and_in_all() -> None:
    guard = HttpGuard(HttpLimits(max_connections=3, max_connections_per_client=2))
    assert guard.admit("10.0.0.1") and guard.admit("10.0.0.1")
    assert not guard.admit("10.0.0.1")  # its own cap
    assert guard.admit("10.0.0.2")
    assert not guard.admit("10.0.0.3")  # the global cap
    assert guard.refused == {"per_client": 1, "global": 1}
    guard.release("10.0.0.1")
    assert guard.admit("10.0.0.3") and guard.open == 3
    for client in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        guard.release(client)
    assert guard.open == 0 and not guard.per_client


def test_the_connection_cap_fits_under_the_descriptor_limit() -> None:
    config = Config(http_max_connections=5000, http_max_connections_per_client=4000)
    fitted = limits.http_limits(config, nofile=1024)
    assert fitted.max_connections == 1024 - limits.RESERVED
    assert fitted.max_connections_per_client == fitted.max_connections
    roomy = limits.http_limits(Config(), nofile=65536)
    assert (roomy.max_connections, roomy.max_connections_per_client) == (1000, 100)
    assert (roomy.header_timeout, roomy.body_timeout, roomy.keepalive_timeout) == (10, 30, 75)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 65536))
    monkeypatch.setattr(resource, "setrlimit", lambda _, value: set_to.append(value))
    assert limits.raise_nofile() == 65536
    assert set_to == [(65536, 65536)]
