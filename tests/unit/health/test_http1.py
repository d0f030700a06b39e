"""The HTTP/1.1 client of HTTP checks against raw servers that answer with exact bytes: framing
(length, chunked, until close, interim 1xx, HEAD), broken answers, and connection reuse."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from dnsdisc.health import http1

Answer = Callable[[bytes, int], list[bytes]]  # (request, its number on the connection) -> writes


async def _with_server(answer: Answer, body: Callable[[int, list[int]], Awaitable[None]]) -> None:
    """A server answering each request on a connection with ``answer``'s writes (none, or an
    empty last one: then it closes the connection); ``body(port, connections)`` runs against
    it."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        n = 0
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                n += 1
                writes = answer(request, n)
                if not writes or not writes[-1]:
                    for chunk in writes:
                        writer.write(chunk)
                    break  # nothing, or an empty last write: close the connection
                for chunk in writes:
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0.01)  # separate segments
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await asyncio.wait_for(body(port, connections), 10)
    finally:
        server.close()


async def _get(
    client: http1.Client, port: int, *, head: bool = False, limit: int = 65536
) -> http1.Response:
    method = b"HEAD" if head else b"GET"
    return await client.request(
        ("127.0.0.1", port, None, None),
        method + b" / HTTP/1.1\r\nHost: x\r\n\r\n",
        head_only=head,
        reuse=True,
        retry=True,
        limit=limit,
    )


def _run(answer: Answer, body: Callable[[http1.Client, int, list[int]], Awaitable[None]]) -> None:
    async def go() -> None:
        client = http1.Client()
        try:
            await _with_server(answer, lambda port, conns: body(client, port, conns))
        finally:
            client.close()

    asyncio.run(go())


def test_sized_bodies_split_over_segments_and_connections_reused() -> None:
    def answer(request: bytes, n: int) -> list[bytes]:
        text = f"reply {n}".encode()
        return [b"HTTP/1.1 200 OK\r\nContent-Len", f"gth: {len(text)}\r\n\r\n".encode(), text]

    async def body(client: http1.Client, port: int, conns: list[int]) -> None:
        for n in (1, 2, 3):
            resp = await _get(client, port)
            assert (resp.status, resp.body) == (200, f"reply {n}".encode())
        assert len(conns) == 1  # one connection, kept alive

    _run(answer, body)


def test_chunked_body_with_extensions_and_trailers() -> None:
    def answer(request: bytes, n: int) -> list[bytes]:
        return [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5;ext=1\r\nhello\r\n",
            b"6\r\n wor",
            b"ld\r\n0\r\nX-Trailer: 1\r\n\r\n",
        ]

    async def body(client: http1.Client, port: int, conns: list[int]) -> None:
        for _ in range(2):
            resp = await _get(client, port)
            assert resp.body == b"hello world"
        assert len(conns) == 1

    _run(answer, body)


def test_body_until_close_interim_1xx_and_location() -> None:
    def answer(request: bytes, n: int) -> list[bytes]:
        if n > 1:
            return []
        return [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.0 302 Found\r\nLocation: /next\r\n\r\npart one ",
            b"part two",
            b"",  # then the server closes: the end of the body
        ]

    async def body(client: http1.Client, port: int, conns: list[int]) -> None:
        resp = await _get(client, port)
        assert (resp.status, resp.location, resp.body) == (302, "/next", b"part one part two")
        resp = await _get(client, port)  # the first connection was not kept: a new one
        assert len(conns) == 2

    def answer_twice(request: bytes, n: int) -> list[bytes]:
        return answer(request, 1)

    _run(answer_twice, body)


def test_head_and_204_have_no_body_and_the_limit_keeps_the_first_bytes() -> None:
    def answer(request: bytes, n: int) -> list[bytes]:
        if request.startswith(b"HEAD"):
            return [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"]
        if n == 2:
            return [b"HTTP/1.1 204 No Content\r\n\r\n"]
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 60, b"y" * 40]

    async def body(client: http1.Client, port: int, conns: list[int]) -> None:
        resp = await _get(client, port, head=True)
        assert (resp.status, resp.body) == (200, b"")
        resp = await _get(client, port)
        assert (resp.status, resp.body) == (204, b"")
        resp = await _get(client, port, limit=10)
        assert resp.body == b"x" * 10

    _run(answer, body)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x response"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "invalid header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
        # What int(x, 16) takes but a chunk size is not: "-2" stalled the run until its timeout.
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nok\r\n",
            "invalid chunk size",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nok\r\n",
            "invalid chunk size",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\nok\r\n",
            "invalid chunk size",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", "response head too large"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000, "response head too large"),
    ],
)
def test_broken_answers_are_errors_in_our_words(reply: bytes, error: str) -> None:
    async def body(client: http1.Client, port: int, conns: list[int]) -> None:
        with pytest.raises(http1.HttpError, match=error):
            await _get(client, port)

    _run(lambda request, n: [reply], body)


def test_a_truncated_answer_is_closed() -> None:
    def answer(request: bytes, n: int) -> list[bytes]:
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", b""]

    async def body(client: http1.Client, port: int, conns: list[int]) -> None:
        with pytest.raises(http1.Closed):
            await _get(client, port)

    def answer_then_close(request: bytes, n: int) -> list[bytes]:
        return answer(request, n) if n == 1 else []

    _run(answer_then_close, body)


def test_a_reused_connection_the_server_closed_is_retried_once_on_a_new_one() -> None:
    def answer(request: bytes, n: int) -> list[bytes]:
        if n > 1:
            return []  # closes when a second request comes on the same connection
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]

    async def body(client: http1.Client, port: int, conns: list[int]) -> None:
        for _ in range(3):
            resp = await _get(client, port)
            assert resp.body == b"ok"
        assert len(conns) == 3  # each reused connection failed, and a new one answered

    _run(answer, body)


def test_bytes_beyond_the_response_are_never_reused() -> None:
    def answer(request: bytes, n: int) -> list[bytes]:
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"]

    async def body(client: http1.Client, port: int, conns: list[int]) -> None:
        for _ in range(2):
            assert (await _get(client, port)).body == b"ok"
        assert len(conns) == 2

    _run(answer, body)


@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 200 OK\r\n\r\n", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n"],
)
def test_a_body_until_close_read_only_up_to_the_limit_is_never_reused(head: bytes) -> None:
    def answer(request: bytes, n: int) -> list[bytes]:
        # The rest of the body, which a reused connection would take for the next response.
        return [head + b"x" * 100, b"HTTP/1.1 500 Not This\r\nContent-Length: 0\r\n\r\n"]

    async def body(client: http1.Client, port: int, conns: list[int]) -> None:
        for _ in range(2):
            resp = await _get(client, port, limit=10)
            assert (resp.status, resp.body) == (200, b"x" * 10)
        assert len(conns) == 2

    _run(answer, body)


def test_a_response_framed_by_both_length_and_chunks_is_not_reused() -> None:
    def answer(request: bytes, n: int) -> list[bytes]:
        return [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n"
        ]

    async def body(client: http1.Client, port: int, conns: list[int]) -> None:
        for _ in range(2):
            assert (await _get(client, port)).body == b"ok"  # the chunks, as RFC 9112 says
        assert len(conns) == 2  # RFC 9112, 6.1: the connection is closed after it

    _run(answer, body)


def test_heads_with_bare_lf_line_ends_are_read() -> None:
    def answer(request: bytes, n: int) -> list[bytes]:
        if n == 1:
            return [b"HTTP/1.1 200 OK\nContent-Length: 2\nLocation: /a\n\nok"]
        return [b"HTTP/1.1 302 Found\r\nContent-Length: 2\nLocation: /b\r\n\nok"]

    async def body(client: http1.Client, port: int, conns: list[int]) -> None:
        resp = await _get(client, port)
        assert (resp.status, resp.location, resp.body) == (200, "/a", b"ok")
        resp = await _get(client, port)
        assert (resp.status, resp.location, resp.body) == (302, "/b", b"ok")
        assert len(conns) == 1

    _run(answer, body)


class _Transport:
    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


@pytest.mark.parametrize(
    ("reply", "head", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", False, b"hello"),
        (
            b"HTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            False,
            b"ok",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n",
            False,
            b"hello world",
        ),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", False, b"ok"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", True, b""),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", False, b""),
    ],
)
def test_a_response_split_at_any_two_bytes_reads_the_same(
    reply: bytes, head: bool, expected: bytes
) -> None:
    async def go() -> None:
        for i in range(len(reply) + 1):
            for j in range(i, len(reply) + 1):
                conn = http1._Conn()
                conn.connection_made(_Transport())  # type: ignore[arg-type]
                waiter = conn.request(b"", head, 100)
                for part in (reply[:i], reply[i:j], reply[j:]):
                    if part:
                        conn.data_received(part)
                assert waiter.done(), (i, j)
                assert waiter.result().body == expected, (i, j)
                assert conn.reusable, (i, j)

    asyncio.run(go())


def test_idle_connections_close_after_keepalive_with_no_more_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http1, "KEEPALIVE", 0.05)
    monkeypatch.setattr(http1, "_SWEEP", 0.05)

    def answer(request: bytes, n: int) -> list[bytes]:
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]

    async def body(client: http1.Client, port: int, conns: list[int]) -> None:
        await _get(client, port)
        (idle,) = client._idle.values()
        (conn,) = idle
        await asyncio.sleep(0.3)  # no request comes to give a connection back: a timer looks
        assert conn.closed and not client._idle

    _run(answer, body)


def test_a_connection_given_back_after_close_is_closed_not_kept() -> None:
    def answer(request: bytes, n: int) -> list[bytes]:
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]

    async def body(client: http1.Client, port: int, conns: list[int]) -> None:
        running = asyncio.ensure_future(_get(client, port))
        await asyncio.sleep(0)
        client.close()  # the prober closes while a run is going on
        assert (await running).body == b"ok"
        assert not client._idle

    _run(answer, body)
