"""netaddr: HOST:PORT parsing, IPv6 in brackets, the port range."""

from __future__ import annotations

import pytest

from dnsdisc.errors import ConfigError
from dnsdisc.netaddr import HostPort, parse_hostport


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:53", HostPort("127.0.0.1", 53)),
        ("[::1]:8053", HostPort("::1", 8053)),
        ("localhost:1", HostPort("localhost", 1)),
    ],
)
def test_hostport(text: str, expected: HostPort) -> None:
    assert parse_hostport(text, "f", "k") == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "::1:53", "host:0", "host:70000", ":53", "h:x"])
def test_bad_hostport(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_hostport(text, "f", "k")
