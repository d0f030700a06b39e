"""The default durable store: SQLite in WAL mode, written by one thread with group commit.

Writes never run on the event loop (an fsync would stall DNS answers). A single writer thread
takes every change queued since its last commit and commits them in one transaction, so many
concurrent registrations cost one fsync, and each waiting request is released only after that
commit returns. ``synchronous=FULL`` makes a commit survive power loss, not just ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from dnsdisc.errors import StoreError
from dnsdisc.store.base import Op, Snapshot

_SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    service TEXT NOT NULL,
    id TEXT NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (service, id)
);
CREATE TABLE IF NOT EXISTS queries (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""
# Upper bound of one group commit: keeps one transaction, and the wait behind it, short.
_MAX_BATCH = 512

_Item = tuple[Sequence[Op], asyncio.Future[None]]


class SqliteStore:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> Snapshot:
        self._loop = asyncio.get_running_loop()
        return await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> Snapshot:
        try:
            # The registry may hold what teams put in meta: the directory is the owner's only,
            # and the database too (SQLite gives its -wal and -shm files the database's mode).
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path.parent, 0o700)
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            os.chmod(self.path, 0o600)
            # The writer thread owns the connection after open; check_same_thread guards nothing
            # we rely on, and we hand it over exactly once.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            snap = Snapshot()
            for name, settings in conn.execute("SELECT name, settings FROM services"):
                snap.services[name] = json.loads(settings)
            for service, iid, definition in conn.execute(
                "SELECT service, id, definition FROM instances"
            ):
                snap.instances[(service, iid)] = json.loads(definition)
            for name, data in conn.execute("SELECT name, data FROM queries"):
                snap.queries[name] = json.loads(data)
            row = conn.execute("SELECT value FROM meta WHERE key = 'index'").fetchone()
            snap.index = int(row[0]) if row else 0
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from exc
        self._conn = conn
        self._thread = threading.Thread(target=self._writer, name="dnsdisc-sqlite", daemon=True)
        self._thread.start()
        return snap

    async def commit(self, ops: Sequence[Op]) -> None:
        if self._thread is None or self._loop is None or not self._thread.is_alive():
            raise StoreError("the store is not open")
        fut: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((ops, fut))
        await fut

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def _writer(self) -> None:
        assert self._conn is not None and self._loop is not None
        conn, loop = self._conn, self._loop
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            error: BaseException | None = None
            try:
                conn.execute("BEGIN IMMEDIATE")
                _apply_all(conn, [op for ops, _ in batch for op in ops])
                conn.execute("COMMIT")
            except Exception as exc:  # this thread must outlive any one batch
                error = StoreError(f"store commit failed: {exc}")
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            try:
                loop.call_soon_threadsafe(_settle, [fut for _, fut in batch], error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                break
        conn.close()


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for fut in futures:
        if fut.done():  # cancelled: the server is shutting down
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


_PUT_INSTANCE = "INSERT OR REPLACE INTO instances (service, id, definition) VALUES (?, ?, ?)"


def _apply_all(conn: sqlite3.Connection, ops: Sequence[Op]) -> None:
    """Apply ``ops`` in order; a run of instance registrations (a batch's) in one
    ``executemany``: one statement per row costs more than the row's insert itself, and this
    thread holds the GIL the event loop needs meanwhile."""
    start = 0
    while start < len(ops):
        end = start
        while end < len(ops) and ops[end].kind == "put_instance":
            end += 1
        if end - start > 1:
            conn.executemany(
                _PUT_INSTANCE,
                [
                    (o.service, o.instance, json.dumps(o.data, sort_keys=True))
                    for o in ops[start:end]
                ],
            )
            start = end
            continue
        _apply(conn, ops[start])
        start += 1


def _apply(conn: sqlite3.Connection, op: Op) -> None:
    if op.kind == "put_instance":
        conn.execute(_PUT_INSTANCE, (op.service, op.instance, json.dumps(op.data, sort_keys=True)))
    elif op.kind == "del_instance":
        conn.execute(
            "DELETE FROM instances WHERE service = ? AND id = ?", (op.service, op.instance)
        )
    elif op.kind == "ensure_service":
        conn.execute(
            "INSERT OR IGNORE INTO services (name, settings) VALUES (?, ?)",
            (op.service, json.dumps(op.data, sort_keys=True)),
        )
    elif op.kind == "put_service":
        conn.execute(
            "INSERT OR REPLACE INTO services (name, settings) VALUES (?, ?)",
            (op.service, json.dumps(op.data, sort_keys=True)),
        )
    elif op.kind == "del_service":
        conn.execute("DELETE FROM instances WHERE service = ?", (op.service,))
        conn.execute("DELETE FROM services WHERE name = ?", (op.service,))
    elif op.kind == "put_query":
        conn.execute(
            "INSERT OR REPLACE INTO queries (name, data) VALUES (?, ?)",
            (op.service, json.dumps(op.data, sort_keys=True)),
        )
    elif op.kind == "del_query":
        conn.execute("DELETE FROM queries WHERE name = ?", (op.service,))
    elif op.kind == "put_index":  # the change index's high-water mark (registry/changes.py)
        assert op.data is not None
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('index', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
            (int(op.data["index"]),),
        )
    else:
        raise sqlite3.ProgrammingError(f"unknown op {op.kind}")
