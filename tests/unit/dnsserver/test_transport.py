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


def test_a_connection_does_not_read_while_its_transfer_runs() -> None:
    # The queries after an AXFR wait for it to end; before, what the client sent meanwhile was
    # read into the connection's buffer without bound (a client reading its transfer while
    # sending junk could fill the worker's memory). Reading stops for the transfer and starts
    # again after it, when the queries that waited are answered.
    import asyncio
    import struct

    import dns.message

    class Transport(FakeTransport):
        def __init__(self) -> None:
            super().__init__()
            self.reading = True
            self.written: list[bytes] = []

        def pause_reading(self) -> None:
            self.reading = False

        def resume_reading(self) -> None:
            self.reading = True

        def is_closing(self) -> bool:
            return self.closed or self.aborted

        def write(self, data: bytes) -> None:
            self.written.append(data)

        def get_extra_info(self, name: str) -> object:
            return ("127.0.0.1", 5353) if name == "peername" else None

    class Responder:
        index = None

        def respond(self, message: bytes, tcp: bool, source: bytes) -> bytes:
            return b"reply"

    class Transfers:
        def __init__(self) -> None:
            self.end: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def serve(self, index: object, message: bytes, client: str, write: Any,
                        drained: Any) -> None:  # fmt: skip
            write(b"xfr")
            await self.end

    def framed(name: str, rdtype: str) -> bytes:
        wire = dns.message.make_query(name, rdtype).to_wire()
        return struct.pack("!H", len(wire)) + wire

    async def scenario() -> None:
        state = TCPState()
        transfers = Transfers()
        state.transfers = transfers  # type: ignore[assignment]
        c = TCPProtocol(Responder(), state)  # type: ignore[arg-type]
        transport = Transport()
        c.connection_made(transport)  # type: ignore[arg-type]
        c.data_received(framed("svc.internal.", "AXFR") + framed("a.svc.internal.", "A"))
        await asyncio.sleep(0)
        assert not transport.reading and transport.written == [b"\x00\x03xfr"]
        c.pause_writing()
        c.resume_writing()  # the socket drained: still not reading, the transfer runs
        assert not transport.reading
        transfers.end.set_result(None)
        for _ in range(3):  # the task ends, then its done callback runs
            await asyncio.sleep(0)
        assert transport.reading and transport.written[-1] == b"\x00\x05reply"
        c.connection_lost(None)

    asyncio.run(scenario())
