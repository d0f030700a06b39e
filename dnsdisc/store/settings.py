"""What the etcd store is told by the config (``etcd:``); built by the config loader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dnsdisc.netaddr import DEFAULT_ETCD


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    """Where the shared registry lives when ``storage: etcd`` (see docs/etcd.md)."""

    endpoints: tuple[str, ...] = (DEFAULT_ETCD,)
    prefix: str = "/dnsdisc"
    # Bounds every etcd request a write waits on: past it the write is a 503, not a hang.
    timeout: float = 2.0
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = None
