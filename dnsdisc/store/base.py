"""The storage interface the registry writes through, and the in-memory store.

A store keeps service settings, instance definitions and named queries (not runtime state such as
heartbeats: after a restart every lease gets a fresh grace period). ``commit`` returns only once the
change is durable, which is what lets the HTTP API answer 2xx. Backends beyond SQLite (etcd)
implement the same small interface and are imported lazily by ``open_store``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from dnsdisc.store.settings import EtcdSettings


@dataclass(frozen=True, slots=True)
class Op:
    """One change: kind is put_service, ensure_service (create with these settings unless it
    exists), del_service, put_instance, del_instance, put_query (``service`` is the named
    query's name, ``data`` its definition) or del_query. A shared store also hands the registry
    put_status (a health verdict or maintenance state every node adopts)."""

    kind: str  # also put_index (a local store's change-index high-water mark, data {"index"})
    service: str
    instance: str = ""
    data: dict[str, Any] | None = None
    # A shared store's revision of the change (the change index every node agrees on).
    revision: int = 0


@dataclass(slots=True)
class Snapshot:
    """Everything a store holds, as loaded at start."""

    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Health verdicts shared through the store (etcd only): {"status", "output", "maintenance"}.
    statuses: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Named queries defined over the API: name -> definition (QueryDef.definition()).
    queries: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Where the change index continues from: etcd's revision, SQLite's high-water mark.
    index: int = 0


class Store(Protocol):
    name: str

    async def open(self) -> Snapshot: ...

    async def commit(self, ops: Sequence[Op]) -> None:
        """Make ``ops`` durable, all or none."""
        ...

    async def close(self) -> None: ...


class ChangeSink(Protocol):
    """What a shared store feeds (the registry): every change, in the store's order."""

    def apply_change(self, op: Op) -> None: ...

    def resync(self, snap: Snapshot) -> None: ...


class SharedStore(Store, Protocol):
    """A store several nodes write (etcd). Memory changes only through ``follow``'s sink, in the
    store's revision order, and ``commit`` returns once this node's sink has seen the change:
    one path for local and remote writes, and a 2xx is still visible at once on this node."""

    shared: bool
    stale: bool

    def follow(self, sink: ChangeSink) -> None: ...

    async def renew(self, service: str, instance: str) -> None:
        """Refresh the instance's lease (a heartbeat)."""
        ...

    async def put_status(self, service: str, instance: str, data: dict[str, Any]) -> None:
        """Publish a health verdict/maintenance state for every node (no-op if the instance
        is gone)."""
        ...


class MemoryStore:
    """Keeps nothing: for tests and throwaway use (``storage: memory``)."""

    name = "memory"

    async def open(self) -> Snapshot:
        return Snapshot()

    async def commit(self, ops: Sequence[Op]) -> None:
        return None

    async def close(self) -> None:
        return None


def open_store(kind: str, data_dir: Path, etcd: EtcdSettings | None = None) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        from dnsdisc.store.sqlite import SqliteStore

        return SqliteStore(data_dir / "registry.sqlite3")
    if kind == "etcd":
        # Imported only here: nodes on SQLite never load the etcd client code.
        from dnsdisc.store.etcd.store import EtcdStore
        from dnsdisc.store.settings import EtcdSettings

        return EtcdStore(etcd or EtcdSettings())
    raise ValueError(f"unknown storage {kind!r}")
