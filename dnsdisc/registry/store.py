"""The storage interface the registry writes through, and the in-memory store.

A store keeps service settings and instance definitions (not runtime state such as heartbeats:
after a restart every lease gets a fresh grace period). ``commit`` returns only once the change is
durable, which is what lets the HTTP API answer 2xx. Backends beyond SQLite (etcd) implement the
same small interface and are imported lazily by ``open_store``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Op:
    """One change: kind is put_service, ensure_service (create with these settings unless it
    exists), del_service, put_instance or del_instance."""

    kind: str
    service: str
    instance: str = ""
    data: dict[str, Any] | None = None


@dataclass(slots=True)
class Snapshot:
    """Everything a store holds, as loaded at start."""

    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


class Store(Protocol):
    name: str

    async def open(self) -> Snapshot: ...

    async def commit(self, ops: Sequence[Op]) -> None:
        """Make ``ops`` durable, all or none."""
        ...

    async def close(self) -> None: ...


class MemoryStore:
    """Keeps nothing: for tests and throwaway use (``storage: memory``)."""

    name = "memory"

    async def open(self) -> Snapshot:
        return Snapshot()

    async def commit(self, ops: Sequence[Op]) -> None:
        return None

    async def close(self) -> None:
        return None


def open_store(kind: str, data_dir: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        from dnsdisc.registry.sqlite import SqliteStore

        return SqliteStore(data_dir / "registry.sqlite3")
    raise ValueError(f"unknown storage {kind!r}")
