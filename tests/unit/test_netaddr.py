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


def test_check_networks_default_refuses_the_servers_host_and_link_local() -> None:
    from dnsdisc.netaddr import DEFAULT_CHECK_NETWORKS, NetRules

    rules = NetRules.parse(DEFAULT_CHECK_NETWORKS, "c.yaml", "health.check_networks")
    refused = ["169.254.169.254", "0.0.0.0", "::ffff:127.0.0.1", "127.0.0.1", "127.9.9.9",
               "::", "::1", "fe80::1", "224.0.0.1", "ff02::1", "255.255.255.255",
               "::ffff:169.254.169.254"]  # fmt: skip
    allowed = ["10.0.0.1", "192.168.1.1", "8.8.8.8", "2001:db8::1", "fd00::1", "::ffff:10.0.0.1"]
    assert [a for a in refused if rules.allows(a)] == []
    assert [a for a in allowed if not rules.allows(a)] == []


def test_check_networks_first_match_wins_and_unlisted_is_refused() -> None:
    import pytest

    from dnsdisc.errors import ConfigError
    from dnsdisc.netaddr import NetRules

    rules = NetRules.parse(["!10.9.0.0/16", "10.0.0.0/8"], "c.yaml", "health.check_networks")
    assert rules.allows("10.1.2.3") and not rules.allows("10.9.1.1")
    assert not rules.allows("192.168.0.1") and not rules.allows("::1")
    assert str(rules) == "!10.9.0.0/16 10.0.0.0/8"
    with pytest.raises(ConfigError) as info:
        NetRules.parse(["10.0.0.0/33"], "c.yaml", "health.check_networks")
    assert info.value.key == "health.check_networks"
