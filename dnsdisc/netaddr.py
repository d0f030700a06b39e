"""Addresses: HOST:PORT values, the loopback test, and where a server listens and its clients
look by default. Shared by the server's config, its DNS face and the client, which must not
import the config (it would pull in PyYAML and the server's settings)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from dnsdisc.errors import ConfigError

DEFAULT_DNS = "127.0.0.1:8053"
DEFAULT_HTTP = "127.0.0.1:8054"
DEFAULT_DOMAIN = "svc.internal."
DEFAULT_ETCD = "http://127.0.0.1:2379"


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_hostport(text: object, source: str, key: str) -> HostPort:
    expected = "HOST:PORT, e.g. 127.0.0.1:8053 or [::1]:8053, with a port from 1 to 65535"
    if not isinstance(text, str):
        raise ConfigError(source, key, f"expected {expected}")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(source, key, f"expected {expected}, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(source, key, f"IPv6 hosts need brackets: [{host}]:{port}")
    if not 1 <= int(port) <= 65535:
        raise ConfigError(source, key, f"expected {expected}, got port {port}")
    return HostPort(host, int(port))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Where active checks registered over the API may not go: the server's own host (loopback,
# unspecified, which Linux connects to the local host), cloud metadata and other link-local
# services, and the group addresses. First match wins; "!" refuses.
DEFAULT_CHECK_NETWORKS = (
    "!0.0.0.0/8",
    "!127.0.0.0/8",
    "!169.254.0.0/16",
    "!224.0.0.0/4",
    "!255.255.255.255/32",
    "!::/128",
    "!::1/128",
    "!fe80::/10",
    "!ff00::/8",
    "0.0.0.0/0",
    "::/0",
)


@dataclass(frozen=True, slots=True)
class NetRules:
    """An ordered allow/deny list of networks (``10.0.0.0/8``, ``!169.254.0.0/16``): the first
    network holding an address decides; an address no rule holds is refused."""

    rules: tuple[tuple[bool, Network], ...]

    @classmethod
    def parse(cls, entries: tuple[str, ...] | list[str], source: str, key: str) -> NetRules:
        rules = []
        for entry in entries:
            if not isinstance(entry, str):
                raise ConfigError(
                    source, key, f"expected a network such as 10.0.0.0/8, got {entry!r}"
                )
            deny = entry.startswith("!")
            try:
                net = ipaddress.ip_network(entry.removeprefix("!").strip())
            except ValueError:
                raise ConfigError(
                    source,
                    key,
                    f"{entry!r} is not a network such as 10.0.0.0/8 or !fe80::/10 (host bits set?)",
                ) from None
            rules.append((not deny, net))
        return cls(tuple(rules))

    def allows(self, address: str) -> bool:
        """Whether the rules let ``address`` in: a v4-mapped address counts as the IPv4 one, a
        zone index (``fe80::1%eth0``) is ignored, and what is no address is refused."""
        try:
            addr = unmapped(address.partition("%")[0])
        except ValueError:
            return False
        for allow, net in self.rules:
            if addr.version == net.version and addr in net:
                return allow
        return False

    def __str__(self) -> str:
        return " ".join(("" if allow else "!") + str(net) for allow, net in self.rules)


def unmapped(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address a socket reaches: ``::ffff:127.0.0.1`` is 127.0.0.1."""
    addr = ipaddress.ip_address(address)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr
