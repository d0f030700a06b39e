"""TCP slot bookkeeping: the per-client cap, reclaiming the least recently active connection at
the global cap, and aborting (not draining) a connection whose client stopped reading."""

from __future__ import annotations

from typing import Any

from dnsdisc.dnsserver.transport import TCPProtocol, TCPState


class FakeTransport:
    def __init__(self, buffered: int = 0) -> None:
        self.buffered = buffered
        self.aborted = self.closed = False

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return self.buffered


def conn(state: TCPState, client: str, active: float) -> TCPProtocol:
    c = TCPProtocol(None, state)  # type: ignore[arg-type]
    c.client, c.active = client, active
    c.transport = FakeTransport()  # type: ignore[assignment]
    return c


def test_per_client_cap_counts_unmapped_addresses_and_frees_on_release() -> None:
    state = TCPState(max_connections=100, max_per_client=2)
    a, b, c = (conn(state, "10.0.0.1", 0.0) for _ in range(3))
    assert state.admit(a, "10.0.0.1", 0.0) and state.admit(b, "10.0.0.1", 0.0)
    assert not state.admit(c, "10.0.0.1", 0.0) and state.refused == 1
    assert state.admit(conn(state, "10.0.0.2", 0.0), "10.0.0.2", 0.0)
    state.release(a)
    state.release(a)  # twice (abort, then connection_lost): counted once
    assert state.per_client["10.0.0.1"] == 1 and state.admit(c, "10.0.0.1", 0.0)


def test_the_least_recently_active_connection_is_reclaimed_at_the_cap() -> None:
    state = TCPState(max_connections=2, idle_timeout=10, max_per_client=10)
    old, busy = conn(state, "10.0.0.1", 0.0), conn(state, "10.0.0.2", 0.5)
    state.admit(old, old.client, 0.0)
    state.admit(busy, busy.client, 0.5)
    state.touch(old)  # old became the most recently active
    old.active = 0.6
    new = conn(state, "10.0.0.3", 1.0)
    assert not state.admit(new, new.client, 1.0)  # busy was quiet 0.5 s only: not reclaimed
    assert state.admit(new, new.client, 1.6)  # quiet 1.1 s: reclaimed
    transport: Any = busy.transport
    assert transport.aborted and busy not in state.connections and state.reclaimed == 1
    assert list(state.connections) == [old, new]


def test_idle_expiry_aborts_when_replies_are_stuck_and_closes_otherwise() -> None:
    state = TCPState()
    stuck, idle = conn(state, "a", 0.0), conn(state, "b", 0.0)
    stuck.transport = FakeTransport(buffered=65536)  # type: ignore[assignment]
    stuck._expire()
    idle._expire()
    s: Any = stuck.transport
    i: Any = idle.transport
    assert s.aborted and not s.closed and i.closed and not i.aborted
