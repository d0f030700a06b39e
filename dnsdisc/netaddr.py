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
